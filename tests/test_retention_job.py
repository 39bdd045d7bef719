"""The ``retention`` job through the real ``dagster`` CLI: a retired version's results are
compacted and its key removed; promoted again, the promotion sensor gives the key back."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, SensorResult, build_sensor_context
from test_rankings_query import _results

from assay.registry import Registry
from assay.storage.parquet import ParquetStore
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import model_promotion_sensor

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
SCENARIOS = ("quiz", "sums")


def test_the_retention_job_compacts_retired_versions_and_removes_their_keys(
    tmp_path, model_cache_dir
):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    storage_url = str(tmp_path / "storage")
    # v1 archived 40 days ago (retired), v2 archived 10 days ago (kept: default 30 days),
    # v3 in Staging.
    today = datetime.now(UTC)
    now = [today - timedelta(days=50)]
    registry = Registry.open(registry_url, clock=lambda: now[0])
    registry.create_model(MODEL)
    keys = [registry.create_version(MODEL, f"bundled:{MODEL}").key for _ in range(3)]
    now[0] = today - timedelta(days=40)
    registry.transition_stage(MODEL, 1, "Archived")
    now[0] = today - timedelta(days=10)
    registry.transition_stage(MODEL, 2, "Archived")
    registry.transition_stage(MODEL, 3, "Staging")
    store = ParquetStore(storage_url, clock=lambda: now[0])
    written = {}
    for seed, key in enumerate(keys):
        for scenario in SCENARIOS:
            where = {"model_version": key, "scenario": scenario}
            scores, card = _results(key, scenario, seed)
            store.write("instance_scores", where, scores)
            store.write("metric_tables", where, card)
            written[(key, scenario)] = card
    instance = DagsterInstance.from_config(str(dagster_home))
    instance.add_dynamic_partitions("model_version", keys)

    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "ASSAY_STORAGE_URL": storage_url,
        "ASSAY_REGISTRY_URL": registry_url,
    }
    env.pop("ASSAY_RETENTION_ARCHIVED_DAYS", None)
    command = [sys.executable, "-m", "dagster", "job", "execute", "-f", "definitions.py"]
    done = subprocess.run(
        [*command, "-j", "retention"], cwd=REPO, env=env, capture_output=True, text=True
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]

    # v1's key is gone, the others stay; the run logged what it did.
    assert sorted(instance.get_dynamic_partitions("model_version")) == keys[1:]
    assert f"{keys[0]}: model_version partition key removed" in log
    assert "removed 1 keys, compacted 8 files; 2 model_version keys remain" in log
    # v1's files are one compacted file per table, its results read as written.
    fresh = ParquetStore(storage_url)
    for table in ("instance_scores", "metric_tables"):
        assert os.path.exists(fresh.compacted_path(table, {"model_version": keys[0]}))
        assert not os.path.exists(os.path.join(storage_url, table, f"model_version={keys[0]}"))
        assert os.path.exists(os.path.join(storage_url, table, f"model_version={keys[1]}"))
    for (key, scenario), card in written.items():
        where = {"model_version": key, "scenario": scenario}
        assert repr(fresh.read("metric_tables", where).to_pylist()) == repr(card.to_pylist())

    # Brought back: un-archived and promoted, the promotion sensor adds its key again.
    cursor = str(registry.events()[-1].id)
    now[0] = today
    registry.transition_stage(MODEL, 1, "Staging")
    resources = assay_resources(
        storage_url=storage_url,
        registry_url=registry_url,
        suite=SuiteResource(max_instances=1),
        models=ModelsResource(
            cache_dir=str(model_cache_dir),
            request_cache_url=f"sqlite:///{tmp_path / 'requests.db'}",
        ),
    )
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = model_promotion_sensor(context)
    assert isinstance(result, SensorResult)
    added = [
        (request.partitions_def_name, list(request.partition_keys))
        for request in result.dynamic_partitions_requests
    ]
    assert ("model_version", [keys[0]]) in added
    assert [r.tags["assay/model_version"] for r in result.run_requests] == [keys[0]]
