"""``evaluation_recorder_sensor`` under the real ``dagster-daemon``: a ``metric_tables``
partition it cannot read is marked refused on that partition, and the evaluations after it
are still recorded in the registry (the sensor never wedges on one bad partition)."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, AssetMaterialization
from dagster._core.scheduler.instigation import TickStatus
from live_deployment import arithmetic_app, deployment, wait_for

from assay.core.records import MetricSummary
from assay.registry import EventKind, Registry
from assay.scoring.summary import scorecard_table
from assay.serving import asgi_in_background
from assay.storage.parquet import ParquetStore

SENSOR = "evaluation_recorder_sensor"


def test_an_unreadable_partition_is_refused_and_the_next_one_recorded(tmp_path, model_cache_dir):
    with (
        asgi_in_background(arithmetic_app()) as server,
        deployment(tmp_path, model_cache_dir, max_concurrent_runs=0) as deployed,
    ):
        deployed.assay("create", "r")
        for _ in range(2):
            deployed.assay("register", "r", f"openai:{server.base_url}#right")
        instance = deployed.instance
        instance.add_dynamic_partitions("model_version", ["r@v1", "r@v2"])
        store = ParquetStore(deployed.env["ASSAY_STORAGE_URL"])

        # r@v2's table is not Parquet (a torn upload, a disk fault); r@v1's is sound.
        broken = {"model_version": "r@v2", "scenario": "arithmetic"}
        store.write("metric_tables", broken, scorecard_table([]))
        Path(store.path("metric_tables", broken)).write_bytes(b"not a parquet file")
        sound = {"model_version": "r@v1", "scenario": "arithmetic"}
        row = MetricSummary("exact_match", "accuracy", "", "", 0.75, 8, 0.5, 1.0)
        store.write("metric_tables", sound, scorecard_table([row]))
        for key in ("r@v2|arithmetic", "r@v1|arithmetic"):  # the broken one first
            instance.report_runless_asset_event(
                AssetMaterialization(AssetKey("metric_tables"), partition=key)
            )

        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)

        def recorded():
            registry = Registry.open(deployed.env["ASSAY_REGISTRY_URL"])
            try:
                found = [e for e in registry.events() if e.kind is EventKind.EVALUATION_RECORDED]
                return found or None
            finally:
                registry.close()

        (event,) = wait_for(recorded, 180, "r@v1's evaluation to be recorded", deployed.log)
        assert (event.key, event.payload["scenario"]) == ("r@v1", "arithmetic")
        assert event.payload["metrics"] == {"exact_match": 0.75}

        # The refusal is an observation in the tick's result, stored by the daemon after the
        # tick has written to the registry: waited for too.
        def refused():
            observed = instance.fetch_observations(AssetKey("metric_tables"), limit=100).records
            return [
                (r.partition_key, r.asset_observation.metadata["registry_record"].value)
                for r in observed
                if "registry_record" in r.asset_observation.metadata
            ] or None

        refusals = wait_for(refused, 60, "r@v2's refusal to be observed", deployed.log)
        assert len(refusals) == 1
        assert refusals[0][0] == "r@v2|arithmetic"
        assert refusals[0][1].startswith("refused: ")
        assert not [t for t in deployed.ticks(SENSOR) if t.status is TickStatus.FAILURE]
