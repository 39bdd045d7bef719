"""The per-partition regression check: the decision rule on constructed scores, the Dagster
check and its tags (which inform; promotion decisions, tests/test_promotion_gate.py, decide)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetCheckSeverity, AssetSelection, instance_for_test, materialize
from scipy.stats import binom

from assay.compare.gate import GateConfig, evaluate_gate, failed_gates, gate_partition
from assay.core.records import Completion, Instance, InstanceStat, ModelOutput
from assay.evaluate.run import select_instances
from assay.evaluate.suite import load_suite
from assay.registry import EventKind, Registry
from assay.storage.parquet import ParquetStore
from assets import all_assets
from assets.checks import all_checks, regression_gate
from resources import (
    ModelsResource,
    SuiteResource,
    assay_resources,
)
from sensors.promotion import RANGE_END, RANGE_START

ACC = GateConfig(default_metrics=("acc",))


def scores(values, metric="acc", trials=1, family="accuracy") -> pa.Table:
    """instance_scores with one value per instance (repeated over ``trials``)."""
    return InstanceStat.to_table(
        InstanceStat(f"i{i}", metric, float(v), family=family, trial=t)
        for i, v in enumerate(values)
        for t in range(trials)
    )


def concat(*tables: pa.Table) -> pa.Table:
    return pa.concat_tables(tables)


# ------------------------------------------------------------------ the decision rule


def test_clearly_worse_binary_candidate_is_blocked_with_mcnemar():
    champion = [1] * 50 + [0] * 10
    candidate = [1] * 20 + [0] * 40  # 30 discordant pairs, all favouring the champion
    result = evaluate_gate(scores(candidate), scores(champion), ACC, scenario="s")
    assert not result.passed
    assert result.reason.startswith("failed:") and "acc" in result.reason
    (gate,) = result.comparisons
    assert gate.test == "mcnemar_exact"
    # Exact McNemar by hand: 0 of 30 discordant pairs for the candidate, two-sided.
    assert gate.p_value == pytest.approx(2 * 0.5**30)
    assert gate.diff == pytest.approx(20 / 60 - 50 / 60)
    assert gate.ci_high < 0 and gate.regressed
    assert result.tag_value == "failed"


def test_equal_candidate_passes():
    values = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1] * 3
    result = evaluate_gate(scores(values), scores(values), ACC, scenario="s")
    assert result.passed and result.reason.startswith("passed:")
    (gate,) = result.comparisons
    assert gate.diff == 0 and gate.p_value == 1.0 and not gate.regressed
    assert result.tag_value == "passed"


def test_better_candidate_passes():
    champion = [1] * 20 + [0] * 40
    candidate = [1] * 50 + [0] * 10
    result = evaluate_gate(scores(candidate), scores(champion), ACC, scenario="s")
    assert result.passed
    (gate,) = result.comparisons
    assert gate.diff > 0 and gate.ci_low > 0 and not gate.regressed


def test_small_insignificant_drop_passes():
    # 2 discordant pairs against the candidate: McNemar p = 2 * P(X <= 0 | n=2) = 0.5.
    champion = [1] * 30 + [0] * 30
    candidate = [1] * 28 + [0] * 32
    result = evaluate_gate(scores(candidate), scores(champion), ACC, scenario="s")
    assert result.passed
    assert result.comparisons[0].p_value == pytest.approx(2 * binom.cdf(0, 2, 0.5))


def test_margin_tolerates_a_drop_smaller_than_it():
    rng = np.random.default_rng(7)
    champion = rng.uniform(0.3, 0.9, size=40)
    candidate = champion - 0.05 + rng.uniform(-0.01, 0.01, size=40)  # drop in [0.04, 0.06]
    cand, champ = scores(candidate, "f1"), scores(champion, "f1")

    def gate(margin: float):
        config = GateConfig(default_metrics=("f1",), margin=margin)
        return evaluate_gate(cand, champ, config, scenario="s")

    strict, loose, tight = gate(0.0), gate(0.1), gate(0.02)
    assert not strict.passed  # worse, and confidently so
    assert loose.passed  # worse by ~0.05, tolerated by a 0.1 margin
    assert not tight.passed  # worse by more than 0.02 on every instance
    for result in (strict, loose, tight):
        (c,) = result.comparisons
        assert c.test == "paired_permutation"
        assert c.diff == pytest.approx(float(np.mean(candidate - champion)))
        assert c.ci_low <= c.diff <= c.ci_high
        assert c.ci_high < -0.04 + 1e-9 and c.ci_low > -0.06 - 1e-9


def test_lower_is_better_metrics_are_flipped():
    fast = np.linspace(0.1, 0.5, 30)
    slow = fast + 0.2
    config = GateConfig(default_metrics=("latency_s",))
    slower = evaluate_gate(
        scores(slow, "latency_s"), scores(fast, "latency_s"), config, scenario="s"
    )
    faster = evaluate_gate(
        scores(fast, "latency_s"), scores(slow, "latency_s"), config, scenario="s"
    )
    assert not slower.passed and faster.passed
    assert slower.comparisons[0].lower_is_better
    # Reported in the metric's own direction: candidate - champion.
    assert slower.comparisons[0].diff == pytest.approx(0.2)
    assert slower.comparisons[0].ci_low == pytest.approx(0.2)
    assert faster.comparisons[0].diff == pytest.approx(-0.2)


def test_holm_correction_over_the_gated_metrics():
    champion = concat(scores([1] * 40 + [0] * 20, "acc"), scores([1] * 40 + [0] * 20, "em"))
    # acc: 8 discordant pairs against; em: 3 discordant pairs against.
    candidate = concat(scores([1] * 32 + [0] * 28, "acc"), scores([1] * 37 + [0] * 23, "em"))
    config = GateConfig(default_metrics=("acc", "em"))
    result = evaluate_gate(candidate, champion, config, scenario="s")
    acc, em = result.comparisons
    p_acc, p_em = 2 * 0.5**8, 2 * 0.5**3
    assert (acc.p_value, em.p_value) == (pytest.approx(p_acc), pytest.approx(p_em))
    # Holm by hand: the smaller p times 2, the larger times 1 (never below the first).
    assert acc.p_adjusted == pytest.approx(2 * p_acc)
    assert em.p_adjusted == pytest.approx(max(2 * p_acc, p_em))
    assert acc.regressed and not em.regressed and not result.passed


def test_trials_are_clustered_by_instance():
    champion = scores([1] * 30 + [0] * 10, trials=3)
    candidate = scores([1] * 10 + [0] * 30, trials=3)
    result = evaluate_gate(candidate, champion, ACC, scenario="s")
    (c,) = result.comparisons
    assert (c.n, c.n_clusters) == (120, 40)
    assert c.test == "paired_permutation" and not result.passed


def test_suite_primary_metrics_and_bad_input():
    suite = load_suite()
    config = GateConfig.from_suite(suite)
    assert config.metrics_for("arithmetic") == (suite["arithmetic"].metric,)
    with pytest.raises(ValueError, match="no gated metrics for scenario 'nope'"):
        GateConfig().metrics_for("nope")
    with pytest.raises(ValueError, match="candidate 'c' instance_scores have no rows for metric"):
        evaluate_gate(scores([1], "em"), scores([1]), ACC, scenario="s", candidate="c")
    other = InstanceStat.to_table([InstanceStat("zz", "acc", 1.0)])
    with pytest.raises(ValueError, match="share no rows of metric 'acc'"):
        evaluate_gate(scores([1]), other, ACC, scenario="s")
    with pytest.raises(ValueError, match="alpha"):
        GateConfig(alpha=1.5)
    assert failed_gates({"gate.a": "failed", "gate.b": "passed", "x": "failed"}) == ["a"]


# ------------------------------------------------------------------ tags do not decide


@pytest.fixture
def registry(registry_url, tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_SUITE", str(tmp_path / "suite.yaml"))
    (tmp_path / "suite.yaml").write_text(
        "scenarios:\n  arithmetic: {scenario: arithmetic_qa, args: {n_test: 8}}\n"
    )
    reg = Registry.open(registry_url, gated_aliases=["champion"])
    reg.create_model("m")
    for _ in range(2):
        reg.create_version("m", "bundled:smollm2-135m-instruct")
    reg.set_alias("m", "champion", 1, force=True, reason="the first holder, for the test")
    yield reg
    reg.close()


@pytest.mark.parametrize("tag", ["passed", "failed"])
def test_a_per_partition_tag_is_not_a_verdict(registry, tag):
    # The per-partition check's tag once decided alone: a version with a passed tag (or none,
    # or one written while it held champion itself) took the alias. Only a verdict on the
    # current suite moves it now; without one the move waits.
    registry.set_tag("m", "gate.arithmetic", tag, version=2)
    result = registry.request_alias("m", "champion", 2, actor="alice")
    assert result.outcome.value == "pending"
    assert registry.resolve("m@champion").version == 1
    pending = registry.events(model="m")[-1]
    assert pending.kind is EventKind.GATE_PENDING and pending.actor == "alice"
    # Other aliases are not gated.
    assert registry.set_alias("m", "challenger", 2).aliases == ("challenger",)


# ------------------------------------------------------------------ the blocking Dagster check

SCENARIO = "arithmetic"


def _outputs(instances: list[Instance], train: list[Instance], right: set[str]) -> pa.Table:
    """Model outputs answering the gold text on ``right`` instances and a wrong one elsewhere."""
    config = load_suite()[SCENARIO]
    rows = []
    for request in config.build_requests(instances, train):
        gold = next(i for i in instances if i.id == request.instance_id).gold_texts[0]
        text = gold if request.instance_id in right else "wrong"
        rows.append(ModelOutput(request, Completion(text=text, completion_tokens=1)))
    return ModelOutput.to_table(rows)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate")
    url = f"sqlite:///{tmp / 'registry.db'}"
    reg = Registry.open(url)
    reg.create_model("m")
    keys = [reg.create_version("m", "bundled:smollm2-135m-instruct").key for _ in range(3)]
    storage_url = str(tmp / "storage")
    resources = assay_resources(
        storage_url=storage_url,
        registry_url=url,
        suite=SuiteResource(max_instances=12),
        models=ModelsResource(cache_dir=str(tmp / "cache")),
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_version", keys)
        result = materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key=SCENARIO,
            instance=instance,
            resources=resources,
        )
        assert result.success
        store = ParquetStore(storage_url)
        everything = Instance.from_table(store.read("scenario_instances", {"scenario": SCENARIO}))
        instances, train = select_instances(load_suite()[SCENARIO], everything, 12)
        ids = [i.id for i in instances]
        answers = {keys[0]: set(ids), keys[1]: set(ids[:2]), keys[2]: set(ids)}
        for key, right in answers.items():
            partition = {"model_version": key, "scenario": SCENARIO}
            store.write("model_outputs", partition, _outputs(instances, train, right))
        yield {"keys": keys, "instance": instance, "resources": resources, "registry": reg}
    reg.close()


def _score(env, key: str):
    return materialize(
        [*all_assets, *all_checks],
        selection=AssetSelection.assets("instance_scores", "metric_tables")
        | AssetSelection.checks(regression_gate),
        partition_key=f"{key}|{SCENARIO}",
        instance=env["instance"],
        resources=env["resources"],
        raise_on_error=False,
    )


def test_dagster_check_warns_and_the_tag_records_it(pipeline):
    reg = Registry.open(pipeline["registry"].url, gated_aliases=[])
    champion, worse, equal = pipeline["keys"]

    first = _score(pipeline, champion)  # no champion yet: passes
    assert first.success
    (evaluation,) = first.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.partition == f"{champion}|{SCENARIO}"
    reg.set_alias("m", "champion", 1)
    assert reg.resolve("m@champion").key == champion

    blocked = _score(pipeline, worse)  # right on 2 of 12 where the champion is right on all
    # The gate gates promotions, not evaluations: the run succeeds, the verdict is a warning
    # on the partition, and the registry is what refuses the alias.
    assert blocked.success
    (evaluation,) = blocked.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity is AssetCheckSeverity.WARN
    assert evaluation.partition == f"{worse}|{SCENARIO}"
    assert "failed" in evaluation.metadata["reason"].value
    assert reg.get_version(worse).tags[f"gate.{SCENARIO}"] == "failed"

    same = _score(pipeline, equal)
    assert same.success
    (evaluation,) = same.get_asset_check_evaluations()
    assert evaluation.passed
    assert reg.get_version(equal).tags[f"gate.{SCENARIO}"] == "passed"
    reg.close()


def test_range_run_reports_one_verdict_per_partition(pipeline):
    reg = Registry.open(pipeline["registry"].url, gated_aliases=[])
    reg.set_alias("m", "champion", 1)
    _, worse, equal = pipeline["keys"]
    result = materialize(
        [*all_assets, *all_checks],
        selection=AssetSelection.assets("instance_scores", "metric_tables")
        | AssetSelection.checks(regression_gate),
        instance=pipeline["instance"],
        resources=pipeline["resources"],
        tags={RANGE_START: f"{worse}|{SCENARIO}", RANGE_END: f"{equal}|{SCENARIO}"},
        raise_on_error=False,
    )
    assert result.success
    verdicts = {e.partition: e.passed for e in result.get_asset_check_evaluations()}
    assert verdicts == {f"{worse}|{SCENARIO}": False, f"{equal}|{SCENARIO}": True}
    reg.close()


def test_gate_partition_reads_the_store(pipeline):
    # Same stored partitions, gated from plain Python: the failed candidate fails again.
    store = ParquetStore(pipeline["resources"]["storage"].base_url)
    reg = pipeline["registry"]
    reg.set_alias("m", "champion", 1)
    config = GateConfig.from_suite(load_suite())
    result = gate_partition(store, reg, config, candidate=pipeline["keys"][1], scenario=SCENARIO)
    (c,) = result.comparisons
    assert c.n == 12 and c.candidate_mean == pytest.approx(2 / 12) and c.champion_mean == 1.0
    assert c.p_value == pytest.approx(2 * 0.5**10) and not result.passed
