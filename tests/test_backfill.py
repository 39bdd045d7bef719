"""Backfills through the real ``dagster`` CLI: a scenario added to the suite is evaluated for
every historic model version, and nothing already evaluated is recomputed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance

from assay.registry import Registry
from assay.storage.parquet import ParquetStore

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
EVALUATION = "model_outputs,instance_scores,metric_tables"

SUITE_A = """
scenarios:
  arithmetic:
    scenario: arithmetic_qa
    args: {n_test: 10, n_train: 0}
    adapter: {method: generation, max_tokens: 4}
    max_instances: 2
"""
SUITE_B = (
    SUITE_A
    + """
  facts-mc:
    scenario: facts_mc
    adapter: {method: multiple_choice_separate}
    max_instances: 2
"""
)


@pytest.fixture
def deployment(tmp_path, model_cache_dir):
    """A persistent Dagster home, registry and storage, as a real deployment has."""
    home = tmp_path / "home"
    # Reuse the converted model (a symlink), but start with an empty request cache.
    (home / "cache").mkdir(parents=True)
    for name in ("models", "digests"):
        (model_cache_dir / name).mkdir(exist_ok=True)
        (home / "cache" / name).symlink_to(model_cache_dir / name)
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "ASSAY_HOME": str(home),
        "ASSAY_STORAGE_URL": str(tmp_path / "storage"),
        "ASSAY_REGISTRY_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "ASSAY_SUITE": str(tmp_path / "suite.yaml"),
    }
    registry = Registry.open(env["ASSAY_REGISTRY_URL"])
    registry.create_model(MODEL)
    keys = [
        registry.create_version(
            MODEL, "bundled:smollm2-135m-instruct", serving={"chat_template": chat}
        ).key
        for chat in (False, True)
    ]
    instance = DagsterInstance.from_config(str(dagster_home))
    instance.add_dynamic_partitions("model_version", keys)
    return {"env": env, "keys": keys, "store": ParquetStore(env["ASSAY_STORAGE_URL"])}


def dagster(env: dict[str, str], select: str, partition: str, *, is_range: bool = False):
    flag = "--partition-range" if is_range else "--partition"
    # One process per run (the default executor starts one per step, each loading the model).
    config = '{"execution": {"config": {"in_process": {}}}}'
    command = [
        *(sys.executable, "-m", "dagster", "asset", "materialize"),
        *("-f", "definitions.py", "--select", select, flag, partition, "--config-json", config),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_new_scenario_is_backfilled_for_every_historic_version(deployment):
    env, (v1, v2), store = deployment["env"], deployment["keys"], deployment["store"]
    suite = Path(env["ASSAY_SUITE"])

    # History: both versions evaluated on the original suite, in one range run.
    suite.write_text(SUITE_A)
    dagster(env, "registered_models", f"{v1}...{v2}", is_range=True)
    dagster(env, "scenario_instances,perturbed_instances", "arithmetic")
    dagster(env, EVALUATION, f"{v1}|arithmetic...{v2}|arithmetic", is_range=True)
    old = {
        v: Path(store.path("model_outputs", {"model_version": v, "scenario": "arithmetic"}))
        for v in (v1, v2)
    }
    stamps = {v: path.stat().st_mtime_ns for v, path in old.items()}

    # A scenario joins the suite: backfill it for every historic version.
    suite.write_text(SUITE_B)
    dagster(env, "scenario_instances,perturbed_instances", "facts-mc")
    for version in (v1, v2):
        dagster(env, EVALUATION, f"{version}|facts-mc")

    evaluated = {(p["model_version"], p["scenario"]) for p in store.partitions("metric_tables")}
    assert evaluated == {(v, s) for v in (v1, v2) for s in ("arithmetic", "facts-mc")}
    for version in (v1, v2):
        outputs = store.read("model_outputs", {"model_version": version, "scenario": "facts-mc"})
        assert outputs.num_rows == 2
        assert not any(outputs["cached"].to_pylist())  # really evaluated, not copied
    # The history was left alone: no arithmetic partition was rewritten.
    assert {v: path.stat().st_mtime_ns for v, path in old.items()} == stamps
