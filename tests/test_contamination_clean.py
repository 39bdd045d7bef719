"""Clean-subset scores: the ``contamination`` table read by the scoring step, the clean rows of
``metric_tables`` beside the full ones, and the contamination rate.

The acceptance test runs the real scoring step (``materialize`` of the scoring assets, the
bundled SmolLM2 answering a small multiple-choice scenario) with a hand-built contamination
table; expected values are computed here from the stored per-instance scores.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import AssetSelection, instance_for_test, materialize

from assay.contamination.clean import CLEAN, CLEAN_MINUS_FULL, NOT_CHECKED, contamination_rows
from assay.contamination.subsets import (
    TABLE_SCHEMA,
    Contamination,
    check_table,
    contaminated_instances,
)
from assay.core.records import InstanceStat, is_headline, subset_rows
from assay.evaluate.suite import parse_suite
from assay.registry import Registry
from assay.storage.contract import CONTAMINATION
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import ModelsResource, SuiteResource, assay_resources

MODEL = "smollm2-135m-instruct"
SCORING = AssetSelection.assets("instance_scores", "metric_tables")
SUITE = """
scenarios:
  facts-mc:
    scenario: facts_mc
    adapter: {method: multiple_choice_separate, variant: zero-shot}
    max_instances: 12
    primary_metric: acc
"""


def finding(
    instance: str,
    detector: str,
    flagged: bool,
    *,
    corpus: str = "pile-slice",
    score: float = 0.0,
    label: str = "",
    evidence: str = "",
) -> dict:
    model_based = detector in ("min_k_prob", "guided_completion")
    return {
        "instance_id": instance,
        "detector": detector,
        "corpus": "" if model_based else corpus,
        "corpus_digest": "" if model_based else "ab" * 32,
        "score": score,
        "flagged": flagged,
        "label": label,
        "evidence": evidence,
    }


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TABLE_SCHEMA)


# --------------------------------------------------------------------------- the table


def test_contaminated_instances_follow_the_chosen_detectors():
    rows = [
        finding("a", "gpt3_13gram", True, evidence="13-gram 'the quick brown fox ...'"),
        finding("a", "palm_8gram", False),
        finding("b", "gpt3_13gram", False),
        finding("b", "llama2_span", True, label="dirty"),
        finding("c", "gpt3_13gram", False),
        finding("d", "min_k_prob", True, score=-1.2),
    ]
    # Default: the three overlap detectors; d's model-based flag does not count.
    assert contaminated_instances(table(rows)) == {"a", "b"}
    assert contaminated_instances(table(rows), ["min_k_prob"]) == {"d"}
    assert contaminated_instances(table(rows), ["palm_8gram"]) == set()
    found = Contamination.of(table(rows))
    assert found is not None and found.checked == {"a", "b", "c"}
    # d was checked by no overlap detector: neither clean nor contaminated.
    assert found.clean(["a", "b", "c", "d"]) == {"c"}


def test_not_checked_is_none_never_the_empty_set():
    assert contaminated_instances(None) is None
    assert contaminated_instances(table([])) is None
    # Only model-based rows while the overlap detectors decide: nothing was checked by them.
    assert contaminated_instances(table([finding("a", "min_k_prob", False)])) is None
    assert contaminated_instances(table([finding("a", "gpt3_13gram", False)])) == set()


def test_a_malformed_table_is_a_clear_error():
    with pytest.raises(ValueError, match=r"contamination m@v1 × quiz: missing column\(s\) flagged"):
        Contamination.of(
            pa.table({"instance_id": ["a"], "detector": ["gpt3_13gram"]}),
            where="contamination m@v1 × quiz",
        )
    wrong = pa.table(
        {"instance_id": ["a"], "detector": ["gpt3_13gram"], "flagged": ["yes"]},
    )
    with pytest.raises(ValueError, match="column 'flagged' has type string, expected bool"):
        check_table(wrong)
    nulls = pa.table(
        {
            "instance_id": ["a", None],
            "detector": ["gpt3_13gram", "gpt3_13gram"],
            "flagged": [True, False],
        }
    )
    with pytest.raises(ValueError, match="row 1: instance_id is null"):
        check_table(nulls)
    with pytest.raises(ValueError, match="detectors is empty"):
        Contamination.of(table([finding("a", "gpt3_13gram", True)]), [])


def test_the_suite_names_its_flag_detectors():
    base = {"scenarios": {"quiz": {"scenario": "facts_mc", "primary_metric": "acc"}}}
    suite = parse_suite(base, "s.yaml")
    assert suite.contamination.flag_detectors == ("gpt3_13gram", "palm_8gram", "llama2_span")
    assert suite.rankings.subset == "full"
    chosen = parse_suite(
        {
            **base,
            "contamination": {"flag_detectors": ["gpt3_13gram", "min_k_prob"]},
            "rankings": {"subset": "clean"},
        },
        "s.yaml",
    )
    assert chosen.contamination.flag_detectors == ("gpt3_13gram", "min_k_prob")
    assert chosen.rankings.subset == "clean"
    # The flag detectors decide every entry's clean rows: they enter the entry digests.
    assert chosen.entry_digests["quiz"] != suite.entry_digests["quiz"]
    with pytest.raises(ValueError, match=r"s.yaml: contamination.flag_detectors: .*'ngram9'"):
        parse_suite({**base, "contamination": {"flag_detectors": ["ngram9"]}}, "s.yaml")
    with pytest.raises(ValueError, match=r"s.yaml: rankings.subset: expected 'full' or 'clean'"):
        parse_suite({**base, "rankings": {"subset": "dirty"}}, "s.yaml")


# --------------------------------------------------------------------------- the rows


def _stats(values: dict[str, list[float]]) -> list[InstanceStat]:
    """acc rows per instance (several trials), plus a group breakdown row each."""
    out = []
    for instance, trials in values.items():
        for trial, value in enumerate(trials):
            out.append(InstanceStat(instance, "acc", value, trial=trial))
            out.append(InstanceStat(instance, "acc", value, trial=trial, group="dialect=x"))
    return out


def test_clean_rows_and_the_difference_by_hand():
    values = {"a": [1.0, 0.0], "b": [1.0, 1.0], "c": [0.0, 0.0], "d": [1.0, 0.0], "e": [0.0]}
    found = Contamination.of(
        table(
            [finding(i, "gpt3_13gram", i in ("b", "d")) for i in values]
            + [finding("zz", "gpt3_13gram", True)]  # flagged, never evaluated
        )
    )
    flags, rows = contamination_rows(_stats(values), values, found, seed_key="k")
    assert {(s.instance_id, s.value) for s in flags} == {
        ("a", 0.0),
        ("b", 1.0),
        ("c", 0.0),
        ("d", 1.0),
        ("e", 0.0),
    }
    by = {(r.metric, r.group, r.subset): r for r in rows}
    rate = by[("contamination_rate", "", "")]
    assert rate.mean == pytest.approx(2 / 5) and rate.count == 5 and rate.lower_is_better
    # Clean instances a, c, e; per-instance means first (a: 0.5), then their mean.
    clean = by[("acc", "", CLEAN)]
    assert clean.mean == pytest.approx((0.5 + 0.0 + 0.0) / 3) and clean.count == 3
    assert by[("acc", "dialect=x", CLEAN)].mean == pytest.approx(0.5 / 3)
    full_mean = (0.5 + 1.0 + 0.0 + 0.5 + 0.0) / 5
    diff = by[("acc", "", CLEAN_MINUS_FULL)]
    assert diff.mean == pytest.approx(0.5 / 3 - full_mean) and diff.count == 3
    assert diff.ci_low <= diff.mean <= diff.ci_high
    # Only the full rows are headline rows.
    assert not any(is_headline(r) for r in rows if r.subset)


def test_not_checked_gives_an_absent_rate_and_no_clean_rows():
    flags, rows = contamination_rows(_stats({"a": [1.0], "b": [0.0]}), ["a", "b"], None)
    assert flags == []
    assert len(rows) == 1 and rows[0].metric == "contamination_rate"
    assert rows[0].reason == NOT_CHECKED and math.isnan(rows[0].mean)


def test_every_instance_flagged_leaves_clean_rows_absent_with_the_reason():
    values = {"a": [1.0], "b": [0.0]}
    found = Contamination.of(table([finding(i, "palm_8gram", True) for i in values]))
    _, rows = contamination_rows(_stats(values), values, found)
    clean = [r for r in rows if r.subset]
    assert {(r.metric, r.subset) for r in clean} == {("acc", CLEAN), ("acc", CLEAN_MINUS_FULL)}
    assert all("all 2 checked instances are flagged" in r.reason for r in clean)


# --------------------------------------------------------------------------- acceptance


@pytest.fixture(scope="module")
def scored(tmp_path_factory, model_cache_dir):
    """facts-mc scored by the real scoring step, first unchecked, then with a contamination
    table flagging some of its instances."""
    tmp = tmp_path_factory.mktemp("clean")
    suite_path = tmp / "suite.yaml"
    suite_path.write_text(SUITE)
    registry_url = f"sqlite:///{tmp / 'registry.db'}"
    registry = Registry.open(registry_url)
    registry.create_model(MODEL)
    key = registry.create_version(
        MODEL, "bundled:smollm2-135m-instruct", serving={"chat_template": True}
    ).key
    storage_url = str(tmp / "storage")
    resources = assay_resources(
        storage_url=storage_url,
        registry_url=registry_url,
        suite=SuiteResource(path=str(suite_path)),
        models=ModelsResource(
            cache_dir=str(model_cache_dir), request_cache_url=f"sqlite:///{tmp / 'requests.db'}"
        ),
    )
    store = ParquetStore(storage_url)
    where = {"model_version": key, "scenario": "facts-mc"}
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_version", [key])

        def run(selection, partition):
            result = materialize(
                all_assets,
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=resources,
            )
            assert result.success

        run(AssetSelection.assets("registered_models"), key)
        run(AssetSelection.assets("scenario_instances"), "facts-mc")
        run(AssetSelection.assets("model_outputs") | SCORING, f"{key}|facts-mc")
        unchecked = store.read("metric_tables", where)
        scores = store.read("instance_scores", where)
        acc = _per_instance(scores, "acc")
        # Flag two instances the model got right and one it got wrong (when there are such),
        # by different overlap detectors; a model-based flag and an instance outside the
        # evaluation must not count.
        right = sorted(i for i, v in acc.items() if v == 1.0)
        wrong = sorted(i for i, v in acc.items() if v == 0.0)
        flagged = set(right[:2] + wrong[:1])
        assert len(flagged) == 3, acc
        detectors = ["gpt3_13gram", "palm_8gram", "llama2_span"]
        rows = []
        for n, instance_id in enumerate(sorted(acc)):
            for detector in detectors:
                hit = instance_id in flagged and detector == detectors[n % 3]
                rows.append(
                    finding(
                        instance_id,
                        detector,
                        hit,
                        score=0.9 if hit else 0.0,
                        label=("dirty" if hit else "clean") if detector == "llama2_span" else "",
                        evidence=f"matched 13-gram in {instance_id}" if hit else "",
                    )
                )
        clean_by_model = sorted(set(acc) - flagged)[0]
        rows.append(finding(clean_by_model, "min_k_prob", True, score=-0.5))
        rows.append(finding("not-evaluated", "gpt3_13gram", True))
        store.write(CONTAMINATION, where, table(rows))
        run(SCORING, f"{key}|facts-mc")
    registry.close()
    return {
        "store": store,
        "where": where,
        "unchecked": unchecked,
        "card": store.read("metric_tables", where),
        "scores": store.read("instance_scores", where),
        "flagged": flagged,
    }


def _per_instance(scores: pa.Table, metric: str) -> dict[str, float]:
    rows = scores.filter(
        pc.and_(
            pc.and_(pc.equal(scores["metric"], metric), pc.equal(scores["group"], "")),
            pc.equal(scores["perturbation"], ""),
        )
    ).to_pylist()
    values: dict[str, list[float]] = {}
    for r in rows:
        values.setdefault(r["instance_id"], []).append(r["value"])
    return {i: float(np.mean(v)) for i, v in values.items()}


def _row(card: pa.Table, metric: str, subset: str) -> dict:
    found = [
        r
        for r in card.to_pylist()
        if r["metric"] == metric
        and not r["group"]
        and not r["perturbation"]
        and (r.get("subset") or "") == subset
        and r["family"] != "calibration"
    ]
    assert len(found) == 1, (metric, subset, found)
    return found[0]


def test_unchecked_partition_says_so_and_has_no_clean_slice(scored):
    card = scored["unchecked"]
    rate = _row(card, "contamination_rate", "")
    assert rate["reason"] == NOT_CHECKED and math.isnan(rate["mean"])
    assert subset_rows(card, CLEAN).num_rows == 0


def test_clean_subset_score_equals_a_hand_computation(scored):
    card, scores, flagged = scored["card"], scored["scores"], scored["flagged"]
    acc = _per_instance(scores, "acc")
    clean_ids = sorted(set(acc) - flagged)
    expected_clean = sum(acc[i] for i in clean_ids) / len(clean_ids)
    expected_full = sum(acc.values()) / len(acc)
    clean = _row(card, "acc", CLEAN)
    assert clean["mean"] == pytest.approx(expected_clean, abs=1e-12)
    assert clean["count"] == len(clean_ids) == len(acc) - 3
    assert clean["ci_low"] <= clean["mean"] <= clean["ci_high"]
    # The full row is untouched by the check.
    assert _row(card, "acc", "")["mean"] == pytest.approx(expected_full, abs=1e-12)
    rate = _row(card, "contamination_rate", "")
    assert rate["mean"] == pytest.approx(3 / len(acc)) and rate["count"] == len(acc)
    # Per instance: 1 for the flagged ones, 0 for the others.
    assert _per_instance(scores, "contamination_rate") == {i: float(i in flagged) for i in acc}
    # clean − full, and its interval against an independent instance bootstrap.
    diff = _row(card, "acc", CLEAN_MINUS_FULL)
    assert diff["mean"] == pytest.approx(expected_clean - expected_full, abs=1e-12)
    ids = sorted(acc)
    values = np.array([acc[i] for i in ids])
    is_clean = np.array([i not in flagged for i in ids])
    rng = np.random.default_rng(12345)
    draws = rng.integers(0, len(ids), size=(4000, len(ids)))
    diffs = []
    for draw in draws:
        picked = is_clean[draw]
        if picked.any():
            diffs.append(values[draw][picked].mean() - values[draw].mean())
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert diff["ci_low"] == pytest.approx(low, abs=0.06)
    assert diff["ci_high"] == pytest.approx(high, abs=0.06)
    # Rankings, the registry's eval tags and the explorer read one headline row per metric.
    headline = [r["metric"] for r in card.to_pylist() if is_headline(r)]
    assert len(headline) == len(set(headline))
