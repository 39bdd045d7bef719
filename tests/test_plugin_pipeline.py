"""A suite that names the example plugin (examples/assay-example-plugin, installed by
``make install``) and a ``custom_file`` entry scored by ``math_equivalence``, evaluated
through ``materialize()`` with the real bundled model; then a plugin upgrade marks the tables
it feeds stale, and rescoring them calls no model.

Scenario partitions are the default suite's keys (fixed when the code location loads), so
the test suite file reuses two of them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetsDefinition, AssetSelection, instance_for_test, materialize
from dagster._core.definitions.data_version import StaleCauseCategory
from dagster._utils.test.data_versions import get_stale_status_resolver

import resources.resources as resource_module
from assay.core.plugins import SCORERS_GROUP, find
from assay.registry import Registry
from assay.storage.code_versions import SOURCES, code_version, dependencies, derive_code_version
from assay.storage.code_versions import source_digest as sources_of
from assay.storage.contract import (
    INSTANCE_SCORES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    PROMPT_TRIALS,
    SCENARIO_INSTANCES,
)
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import ModelsResource, SuiteResource, assay_resources

PLUGIN = "assay-example-plugin"
CONVERSIONS, MATH = "arithmetic", "pattern"
EVALUATION = AssetSelection.assets(MODEL_OUTPUTS, INSTANCE_SCORES, METRIC_TABLES)
PROBLEMS = [
    {
        "id": "half",
        "problem": "What is 1 divided by 2? Answer with a fraction.",
        "answer": "\\frac{1}{2}",
    },
    {"id": "sum", "problem": "What is 7 + 5?", "answer": "12"},
    {"id": "pct", "problem": "What is 1/4 as a percentage?", "answer": "25\\%"},
]


def _suite(folder: Path) -> str:
    (folder / "problems.jsonl").write_text("\n".join(json.dumps(p) for p in PROBLEMS) + "\n")
    generation = {"method": "generation", "max_tokens": 8, "stop": ["\n"]}
    data = {
        "scenarios": {
            CONVERSIONS: {
                "scenario": "unit_conversions",
                "args": {"n": 6},
                "adapter": generation,
                "scorer": "numeric_tolerance",
                "scorer_args": {"rel_tol": 0.05},
                "perturbations": ["lowercase"],
            },
            MATH: {
                "scenario": "custom_file",
                "args": {"path": str(folder / "problems.jsonl")},
                "columns": {"id": "id", "input": "problem", "answer_text": "answer"},
                "adapter": generation,
                "scorer": "math_equivalence",
            },
        }
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_cache_dir):
    if find(SCORERS_GROUP, "numeric_tolerance") is None:
        pytest.fail(
            f"the example plugin is not installed: pip install --no-deps -e examples/{PLUGIN}"
        )
    tmp = tmp_path_factory.mktemp("plugins")
    registry_url = f"sqlite:///{tmp / 'registry.db'}"
    registry = Registry.open(registry_url)
    registry.create_model("model")
    key = registry.create_version(
        "model", "bundled:smollm2-135m-instruct", serving={"chat_template": True}
    ).key
    storage_url = str(tmp / "storage")
    resources = assay_resources(
        storage_url=storage_url,
        registry_url=registry_url,
        suite=SuiteResource(path=_suite(tmp), max_instances=3),
        models=ModelsResource(
            cache_dir=str(model_cache_dir), request_cache_url=f"sqlite:///{tmp / 'requests.db'}"
        ),
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_version", [key])

        def go(selection, partition):
            return materialize(
                all_assets,
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=resources,
            )

        assert go(AssetSelection.assets("registered_models"), key).success
        for scenario in (CONVERSIONS, MATH):
            assert go(AssetSelection.assets(SCENARIO_INSTANCES), scenario).success
            assert go(EVALUATION, f"{key}|{scenario}").success
        yield {
            "key": key,
            "store": ParquetStore(storage_url),
            "instance": instance,
            "resources": resources,
        }


def _read(run, asset: str, scenario: str) -> list[dict]:
    where = {"model_version": run["key"], "scenario": scenario}
    return run["store"].read(asset, where).to_pylist()


def test_a_plugin_scenario_and_scorer_through_dagster(run) -> None:
    instances = run["store"].read(SCENARIO_INSTANCES, {"scenario": CONVERSIONS}).to_pylist()
    assert instances[1]["input"] == "How many meters are in 8.5 kilometers?"
    stats = _read(run, INSTANCE_SCORES, CONVERSIONS)
    plain = [s for s in stats if s["metric"] == "within_tolerance" and not s["perturbation"]]
    assert len({s["instance_id"] for s in plain}) == 3
    assert all(s["value"] in (0.0, 1.0) and s["family"] == "accuracy" for s in plain)
    assert {s["group"] for s in plain} == {"", "kind=size", "kind=time"}
    # On the lowercased inputs the plugin's accuracy is robustness, with worst cases.
    robust = {s["perturbation"] for s in stats if s["metric"] == "relative_error"}
    assert robust == {"", "lowercase", "robustness"}
    assert not [s for s in stats if s["metric"] == "exact_match"]
    card = {
        (r["metric"], r["group"]): r
        for r in _read(run, METRIC_TABLES, CONVERSIONS)
        if not r["perturbation"]
    }
    assert 0.0 <= card[("within_tolerance", "")]["mean"] <= 1.0
    failures = card[("scorer_failures", f"scorer=numeric_tolerance ({PLUGIN} 0.1.0)")]
    assert (failures["mean"], failures["count"]) == (0.0, 6)  # 3 instances × 2 input versions


def test_a_custom_file_scored_by_math_equivalence(run) -> None:
    stats = _read(run, INSTANCE_SCORES, MATH)
    values = {s["instance_id"]: s["value"] for s in stats if s["metric"] == "math_equiv"}
    assert set(values) == {"half", "sum", "pct"}
    assert all(v in (0.0, 1.0) for v in values.values())
    card = {r["metric"]: r for r in _read(run, METRIC_TABLES, MATH) if not r["group"]}
    assert card["math_equiv"]["count"] == 3


def test_a_plugin_upgrade_marks_what_it_feeds_stale_and_rescoring_calls_no_model(
    run, monkeypatch
) -> None:
    packages_and_plugins = {asset: dependencies(asset) for asset in SOURCES}
    assert PLUGIN in {p.name for p in packages_and_plugins[INSTANCE_SCORES][1]}

    def upgraded(asset: str) -> str:
        packages, plugins = packages_and_plugins[asset]
        plugins = [replace(p, version="0.2.0") if p.name == PLUGIN else p for p in plugins]
        return derive_code_version(sources_of(SOURCES[asset]), packages, plugins)

    after = {asset: upgraded(asset) for asset in SOURCES}
    changed = {asset for asset in SOURCES if after[asset] != code_version(asset)}
    # The plugin gives a scenario and a scorer: exactly the tables they feed (a prompt trial
    # scores like the evaluation).
    assert changed == {SCENARIO_INSTANCES, INSTANCE_SCORES, METRIC_TABLES, PROMPT_TRIALS}
    after_upgrade = [
        a.map_asset_specs(
            lambda spec: (
                spec.replace_attributes(code_version=after[spec.key.path[-1]])
                if spec.key.path[-1] in after
                else spec
            )
        )
        if isinstance(a, AssetsDefinition)
        else a
        for a in all_assets
    ]
    partition = f"{run['key']}|{CONVERSIONS}"
    stale = get_stale_status_resolver(run["instance"], after_upgrade)

    def code_causes(asset: str) -> list:
        causes = stale.get_stale_causes(AssetKey(asset), partition)
        return [c for c in causes if c.category == StaleCauseCategory.CODE]

    assert code_causes(INSTANCE_SCORES) and code_causes(METRIC_TABLES)
    assert not code_causes(MODEL_OUTPUTS)

    def no_model(*args, **kwargs):
        raise AssertionError("rescoring must not build a model client")

    monkeypatch.setattr(resource_module, "build_client", no_model)
    before = {
        r["metric"]: r["mean"]
        for r in _read(run, METRIC_TABLES, CONVERSIONS)
        if not r["group"] and not r["perturbation"]
    }
    rescored = materialize(
        after_upgrade,
        selection=AssetSelection.assets(INSTANCE_SCORES, METRIC_TABLES),
        partition_key=partition,
        instance=run["instance"],
        resources=run["resources"],
    )
    assert rescored.success
    fresh = get_stale_status_resolver(run["instance"], after_upgrade)
    for asset in (INSTANCE_SCORES, METRIC_TABLES):
        causes = fresh.get_stale_causes(AssetKey(asset), partition)
        assert not [c for c in causes if c.category == StaleCauseCategory.CODE], asset
    again = {
        r["metric"]: r["mean"]
        for r in _read(run, METRIC_TABLES, CONVERSIONS)
        if not r["group"] and not r["perturbation"]
    }
    assert again["within_tolerance"] == before["within_tolerance"]
