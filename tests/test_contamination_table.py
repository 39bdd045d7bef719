"""The ``contamination`` table's schema and rules, the suite's ``contamination:`` block, and
the partition builder's choice between overlap, model-based and not checked."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from assay.contamination.check import check_partition, instance_text
from assay.contamination.config import ContaminationConfig
from assay.contamination.table import (
    SCHEMA,
    ContaminationTableError,
    contamination_table,
    validate_contamination,
)
from assay.core.records import Instance, Reference
from assay.evaluate.suite import parse_suite


def _row(**over) -> dict:
    row = {
        "instance_id": "i1",
        "detector": "gpt3_13gram",
        "corpus": "web",
        "corpus_digest": "ab" * 32,
        "score": 0.5,
        "flagged": True,
        "label": "",
        "evidence": "matched 'a b c'",
    }
    return {**row, **over}


def test_rows_become_a_sorted_table_of_the_schema() -> None:
    rows = [
        _row(instance_id="i2"),
        _row(detector="llama2_span", label="neither"),
        _row(detector="min_k_prob", corpus="", corpus_digest="", score=-3.5, flagged=False),
        _row(detector="guided_completion", corpus="", corpus_digest="", score=math.nan),
    ]
    table = contamination_table(rows)
    assert table.schema == SCHEMA
    pairs = zip(table["instance_id"].to_pylist(), table["detector"].to_pylist(), strict=True)
    assert list(pairs) == [
        ("i1", "guided_completion"),
        ("i1", "llama2_span"),
        ("i1", "min_k_prob"),
        ("i2", "gpt3_13gram"),
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_row(detector="bloom"), r"row 0 \(instance 'i1'\): column 'detector' is 'bloom'"),
        (_row(score=1.5), r"column 'score' is 1.5"),
        (_row(score=math.nan), r"column 'score' is nan"),
        (_row(corpus=""), r"'corpus' and 'corpus_digest' must be set for 'gpt3_13gram'"),
        (_row(detector="min_k_prob"), r"must be set for an overlap detector and empty"),
        (_row(detector="llama2_span", label=""), r"column 'label' is ''"),
        (_row(label="dirty"), r"column 'label' must be empty for 'gpt3_13gram'"),
        (_row(evidence=None), r"column 'evidence' is null"),
    ],
)
def test_a_bad_row_is_named(row: dict, message: str) -> None:
    with pytest.raises(ContaminationTableError, match=message):
        validate_contamination(pa.Table.from_pylist([row], schema=SCHEMA))


def test_duplicates_and_a_wrong_schema_are_refused() -> None:
    with pytest.raises(ContaminationTableError, match=r"row 1 .* a second row for 'gpt3_13gram'"):
        validate_contamination(pa.Table.from_pylist([_row(), _row(score=0.1)], schema=SCHEMA))
    wrong = pa.table({"instance_id": ["i1"], "detector": ["gpt3_13gram"]})
    with pytest.raises(ContaminationTableError, match="missing corpus, corpus_digest, score"):
        validate_contamination(wrong, "m@v1|quiz")


def test_the_suite_block_defaults_and_refusals() -> None:
    base = {"scenarios": {"a": {"scenario": "arithmetic_qa"}}}
    default = parse_suite(base).contamination
    assert default == ContaminationConfig()
    assert default.enabled and not default.model_based and not default.guided
    assert default.flag_detectors == ("gpt3_13gram", "palm_8gram", "llama2_span")
    chosen = parse_suite(
        {**base, "contamination": {"model_based": True, "flag_detectors": ["min_k_prob"]}}
    ).contamination
    assert chosen.runs_membership and chosen.flag_detectors == ("min_k_prob",)
    for block, message in [
        ({"flag_detectors": ["gpt3_13gram", "x"]}, "contamination.flag_detectors: item 1 is 'x'"),
        ({"guided": True}, "contamination: guided: true needs model_based: true"),
        ({"enable": True}, "contamination: unknown field(s): enable"),
        ({"min_k": 0}, "contamination.min_k"),
        ([], "contamination: expected a mapping"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_suite({**base, "contamination": block}, source="s.yaml")
    # The block enters the entries' digests (what a verdict checks is current) only when
    # present: a suite without one keeps the digests it had.
    plain = parse_suite(base).entry_digests
    assert parse_suite({**base, "contamination": {}}).entry_digests != plain


class _Index:
    """Stands in for no index: the choice of path is under test, not the lookups."""


def test_the_partition_is_overlap_model_based_or_not_checked() -> None:
    instances = [Instance("q1", "What is it?", (Reference("blue", True), Reference("red", False)))]
    assert instance_text(instances[0]) == "What is it?\nblue\nred"
    called: list[str] = []

    def membership(config):
        called.append("membership")
        return [], {}

    def open_index(corpus):
        raise AssertionError("no corpus declared: no index is opened")

    on = ContaminationConfig(model_based=True)
    # No corpus recorded as declared ([]): model-based when the suite asks, else not checked.
    assert check_partition(instances, [], on, open_index, membership).mode == "model_based"
    assert check_partition(instances, [], ContaminationConfig(), open_index, membership).mode == (
        "not_checked"
    )
    # Corpora unknown (None: not recorded): nothing is claimed.
    assert check_partition(instances, None, on, open_index, membership).mode == "not_checked"
    off = ContaminationConfig(enabled=False, model_based=False)
    assert check_partition(instances, [], off, open_index, membership).table.num_rows == 0
    assert called == ["membership"]
