"""Perturbations through the asset graph with the real bundled model, via ``materialize()``.

The default suite's ``pronouns`` scenario (group tag ``gender``) lists two perturbations,
``typos:prob=0.05`` and ``dialect``; three eval instances keep the run short.
"""

from __future__ import annotations

import math

import pyarrow.compute as pc
import pytest
from dagster import AssetSelection, instance_for_test, materialize

from assay.core.records import Instance
from assay.evaluate.run import perturb_eval_instances, select_instances
from assay.evaluate.suite import load_suite
from assay.registry import Registry
from assay.scoring.scorecard import FAMILIES
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import (
    ModelsResource,
    SuiteResource,
    assay_resources,
)

MODEL = "smollm2-135m-instruct"
SCENARIO = "pronouns"
N = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_cache_dir):
    tmp = tmp_path_factory.mktemp("perturbed")
    registry_url = f"sqlite:///{tmp / 'registry.db'}"
    registry = Registry.open(registry_url)
    registry.create_model(MODEL)
    key = registry.create_version(
        MODEL,
        "bundled:smollm2-135m-instruct",
        prices={"prompt_per_1k": 0.5, "completion_per_1k": 1.5},
    ).key
    storage_url = str(tmp / "storage")
    resources = assay_resources(
        storage_url=storage_url,
        registry_url=registry_url,
        suite=SuiteResource(max_instances=N),
        models=ModelsResource(
            cache_dir=str(model_cache_dir), request_cache_url=f"sqlite:///{tmp / 'requests.db'}"
        ),
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_version", [key])

        def go(selection, partition_key, raise_on_error=True):
            return materialize(
                all_assets,
                selection=AssetSelection.assets(*selection),
                partition_key=partition_key,
                instance=instance,
                resources=resources,
                raise_on_error=raise_on_error,
            )

        assert go(["registered_models"], key).success
        result = go(["scenario_instances", "perturbed_instances"], SCENARIO)
        assert result.success
        evaluation = go(["model_outputs", "instance_scores", "metric_tables"], f"{key}|{SCENARIO}")
        assert evaluation.success
        outputs_meta = evaluation.asset_materializations_for_node("model_outputs")[0].metadata
        assert outputs_meta["perturbed_inputs_from"].value == "perturbed_instances"
        yield {
            "key": key,
            "store": ParquetStore(storage_url),
            "scenario_result": result,
            "go": go,
        }


def _partition(run) -> dict[str, str]:
    return {"model_version": run["key"], "scenario": SCENARIO}


def test_perturbed_instances_are_materialized_with_unchanged_ones_counted(run):
    table = run["store"].read("perturbed_instances", {"scenario": SCENARIO})
    # Recompute what the asset should hold straight from the library.
    config = load_suite()[SCENARIO]
    evaluated, _ = select_instances(config, config.build().load().instances, N)
    expected = perturb_eval_instances(config, evaluated)
    assert table.num_rows == len(expected.rows) > 0
    assert set(table["perturbation"].to_pylist()) == set(config.perturbations)
    assert set(table["family"].to_pylist()) == {"robustness", "fairness"}
    assert set(table["id"].to_pylist()) <= {i.id for i in evaluated}
    originals = {i.id: i.input for i in evaluated}
    assert all(originals[r["id"]] != r["input"] for r in table.to_pylist())
    materializations = run["scenario_result"].asset_materializations_for_node("perturbed_instances")
    metadata = materializations[0].metadata
    assert metadata["num_unchanged_dropped"].value == sum(expected.unchanged.values())
    assert metadata["num_perturbed"].value == table.num_rows


def test_model_outputs_hold_clean_and_perturbed_rows(run):
    outputs = run["store"].read("model_outputs", _partition(run))
    perturbed = run["store"].read("perturbed_instances", {"scenario": SCENARIO})
    config = load_suite()[SCENARIO]
    clean = outputs.filter(pc.equal(outputs["perturbation"], ""))
    # Clean: every prompt variant for each instance; perturbed: the base layout only.
    assert clean.num_rows == N * len(config.adapters)
    rows = outputs.filter(pc.not_equal(outputs["perturbation"], "")).to_pylist()
    assert len(rows) == perturbed.num_rows
    assert {r["template_id"] for r in rows} == {config.adapter.template_id}
    by_key = {(r["id"], r["perturbation"]): r["input"] for r in perturbed.to_pylist()}
    for row in rows:
        assert by_key[(row["instance_id"], row["perturbation"])] in row["prompt"]
        assert row["error"] is None and len(row["choices"]) == 2


def test_metric_tables_cover_all_seven_families(run):
    card = run["store"].read("metric_tables", _partition(run))
    rows = card.to_pylist()
    # Beside the seven families, the contamination rate (absent here: never checked).
    assert {r["family"] for r in rows} == {*FAMILIES, "contamination"}
    rate = next(r for r in rows if r["metric"] == "contamination_rate")
    assert rate["reason"].startswith("not checked for contamination")
    for row in rows:
        if row["reason"]:
            assert math.isnan(row["mean"]), row
    index = {(r["metric"], r["family"], r["group"], r["perturbation"]): r for r in rows}
    clean = index[("acc", "accuracy", "", "")]
    assert clean["count"] == N and 0.0 <= clean["mean"] <= 1.0
    # Worst case over original and perturbations can only be lower than the clean score.
    for family in ("robustness", "fairness"):
        worst = index[("acc", family, "", family)]
        assert worst["count"] == N and worst["mean"] <= clean["mean"]
    for spec in load_suite()[SCENARIO].perturbations:
        assert (
            "acc_delta",
            "robustness" if spec.startswith("typos") else "fairness",
            "",
            spec,
        ) in index
    assert index[("acc_group_gap", "fairness", "gender", "")]["reason"] == ""
    assert not index[("ece_10_bin", "calibration", "", "")]["reason"]
    # The default suite has a toxicity classifier; choices give it no text to rate.
    assert index[("toxic_fraction", "toxicity", "", "")]["reason"] == (
        "no generated text to score for toxicity"
    )
    assert "no generated text" in index[("bias_gender_representation", "bias", "", "")]["reason"]
    # Prices from the registry version price the tokens actually used.
    outputs = run["store"].read("model_outputs", _partition(run))
    prompt = sum(outputs["prompt_tokens"].to_pylist())
    completion = sum(outputs["completion_tokens"].to_pylist())
    assert index[("estimated_cost", "efficiency", "", "")]["mean"] == pytest.approx(
        prompt / 1000 * 0.5 + completion / 1000 * 1.5
    )
    assert index[("latency_p95_s", "efficiency", "", "")]["mean"] > 0


def test_instance_scores_carry_group_and_worst_case_rows(run):
    scores = run["store"].read("instance_scores", _partition(run)).to_pylist()
    instances = Instance.from_table(run["store"].read("scenario_instances", {"scenario": SCENARIO}))
    gender = {i.id: i.groups["gender"] for i in instances}
    grouped = [s for s in scores if s["group"] and s["metric"] == "acc"]
    assert grouped and all(s["group"] == f"gender={gender[s['instance_id']]}" for s in grouped)
    worst = [s for s in scores if s["perturbation"] == "robustness" and s["metric"] == "acc"]
    assert {s["instance_id"] for s in worst} == {s["instance_id"] for s in grouped}


def test_without_a_perturbed_partition_the_same_inputs_are_derived_inline(run):
    store = run["store"]
    partition = {"scenario": SCENARIO}
    before = store.read("model_outputs", _partition(run))
    saved = store.read("perturbed_instances", partition)
    store.delete("perturbed_instances", partition)
    try:
        result = run["go"](["model_outputs"], f"{run['key']}|{SCENARIO}")
        metadata = result.asset_materializations_for_node("model_outputs")[0].metadata
        assert metadata["perturbed_inputs_from"].value == "inline"
        after = store.read("model_outputs", _partition(run))
        columns = ["instance_id", "perturbation", "template_id", "prompt"]
        assert after.select(columns).to_pylist() == before.select(columns).to_pylist()
        assert all(after["cached"].to_pylist())  # the same requests: all from the cache
    finally:
        store.write("perturbed_instances", partition, saved)
