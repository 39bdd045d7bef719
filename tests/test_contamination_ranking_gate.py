"""Ranking on clean scores (``rankings: {subset: clean}``) and the contamination gate
criterion, from stored tables; expected boards and verdicts are worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from assay.compare.decision import judge_promotion
from assay.compare.standings import StoredResults, leaderboard_as_of
from assay.contamination.clean import contamination_rows
from assay.contamination.subsets import TABLE_SCHEMA, Contamination
from assay.core.records import InstanceStat
from assay.evaluate.suite import parse_suite
from assay.registry import Registry
from assay.scoring.summary import scorecard, scorecard_table
from assay.storage.parquet import ParquetStore

DAY = "2026-11-10"
REGISTERED = datetime(2026, 11, 9, 9, 0, tzinfo=UTC)
IDS = [f"i{i}" for i in range(8)]
# Per-instance acc of each version, and the instances its contamination check flags
# (None: never checked).
RESULTS = {
    "m@v1": ([1, 1, 1, 1, 1, 0, 0, 0], {"i0", "i1", "i2"}),  # full 5/8, clean (i3..i7) 2/5
    "m@v2": ([0, 0, 1, 1, 1, 1, 0, 0], set()),  # full 4/8, clean 4/8
    "m@v3": ([1, 1, 1, 0, 0, 0, 0, 0], None),  # full 3/8, not checked
}
QUIZ = {"quiz": {"scenario": "facts_mc", "primary_metric": "acc"}}


def _check(flagged: set[str]) -> Contamination | None:
    rows = [
        {
            "instance_id": i,
            "detector": "gpt3_13gram",
            "corpus": "web",
            "corpus_digest": "cd" * 32,
            "score": float(i in flagged),
            "flagged": i in flagged,
            "label": "",
            "evidence": "13-gram match" if i in flagged else "",
        }
        for i in IDS
    ]
    return Contamination.of(pa.Table.from_pylist(rows, schema=TABLE_SCHEMA))


@pytest.fixture
def stored(tmp_path):
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", clock=lambda: REGISTERED)
    registry.create_model("m")
    for _ in RESULTS:
        registry.create_version("m", "hf:/m")
    store = ParquetStore(str(tmp_path / "storage"))
    for version, (values, flagged) in RESULTS.items():
        stats = [InstanceStat(i, "acc", float(v)) for i, v in zip(IDS, values, strict=True)]
        checked = None if flagged is None else _check(flagged)
        flags, rows = contamination_rows(stats, IDS, checked, seed_key=version)
        where = {"model_version": version, "scenario": "quiz"}
        store.write("instance_scores", where, InstanceStat.to_table(stats + flags))
        store.write("metric_tables", where, scorecard_table(scorecard(stats, version) + rows))
    yield store, registry
    registry.close()


def _board(stored, **options):
    store, registry = stored
    suite = parse_suite({"scenarios": QUIZ, **options}, "s.yaml")
    board, _ = leaderboard_as_of(DAY, StoredResults.read(store), registry, suite)
    return board


def test_the_default_board_ranks_on_every_instance(stored):
    board = _board(stored)
    assert [r.model_version for r in board.rows] == ["m@v1", "m@v2", "m@v3"]
    assert [r.scenario_scores["quiz"] for r in board.rows] == [5 / 8, 4 / 8, 3 / 8]
    assert not any("contamination" in n for n in board.notes)


def test_the_clean_board_ranks_on_clean_scores_and_marks_the_unchecked(stored):
    board = _board(stored, rankings={"subset": "clean"})
    # By hand: v2 0.5 (nothing flagged) > v1 2/5 (i3..i7) > v3 3/8 (unchecked: all 8).
    assert [r.model_version for r in board.rows] == ["m@v2", "m@v1", "m@v3"]
    scores = {r.model_version: r.scenario_scores["quiz"] for r in board.rows}
    assert scores == pytest.approx({"m@v2": 0.5, "m@v1": 2 / 5, "m@v3": 3 / 8})
    # One column: the win rate is the share of the other two a version beats.
    rates = {r.model_version: r.mean_win_rate for r in board.rows}
    assert rates == {"m@v2": 1.0, "m@v1": 0.5, "m@v3": 0.0}
    assert any("m@v3: not checked for contamination on quiz" in n for n in board.notes)
    assert any("ranked on the clean subset" in n for n in board.notes)
    # Paired tests run on the instances clean for both versions: i3..i7 for v1's pairs.
    pairs = {(c.model_a, c.model_b): c for c in board.comparisons}
    top = pairs[("m@v2", "m@v1")]
    assert top.n == 5 and top.mean_diff == pytest.approx(3 / 5 - 2 / 5)
    low = pairs[("m@v1", "m@v3")]
    assert low.n == 5 and low.mean_diff == pytest.approx(2 / 5 - 0 / 5)
    # The contamination rate is a figure about the data, never a ranked column.
    assert "contamination" not in board.families


def _verdict(store, version, **criterion):
    suite = parse_suite(
        {
            "scenarios": QUIZ,
            "promotion": {
                "primary_metrics": False,
                "criteria": [{"metric": "contamination_rate", **criterion}],
            },
        },
        "s.yaml",
    )
    return judge_promotion(store, suite, version, None)


def test_a_high_contamination_rate_fails_the_gate(stored):
    store, _ = stored
    decision = _verdict(store, "m@v1", at_most=0.1)
    assert not decision.approved
    (result,) = decision.criteria
    assert result.metric == "contamination_rate" and result.outcome == "fail"
    assert result.estimate == pytest.approx(3 / 8) and result.threshold == 0.1
    assert "contamination_rate" in decision.summary


def test_a_clean_version_passes_the_gate(stored):
    store, _ = stored
    decision = _verdict(store, "m@v2", at_most=0.1)
    assert decision.approved, decision.summary
    assert decision.criteria[0].estimate == 0.0
    # A looser bound passes v1's 3/8 too: the criterion reads the threshold it is given.
    assert _verdict(store, "m@v1", at_most=0.4).approved


def test_a_version_never_checked_is_denied_with_the_reason(stored):
    store, _ = stored
    decision = _verdict(store, "m@v3", at_most=0.1)
    assert not decision.approved
    (result,) = decision.criteria
    assert result.outcome == "fail" and "not checked for contamination" in result.note


def test_the_bound_of_the_interval_is_tested_on_per_instance_rows(stored):
    store, _ = stored
    # 3 of 8 flagged: even the estimate is above 0.2, so the upper bound is too.
    decision = _verdict(store, "m@v1", at_most=0.2, on="upper")
    (result,) = decision.criteria
    assert result.outcome == "fail" and result.n == 8
    assert result.ci_high > 3 / 8 > result.ci_low
