"""The results explorer is rebuilt under the real ``dagster-daemon`` after a promotion, without
anyone asking: the alias move launches the evaluation (``model_promotion_sensor``), its metric
tables the leaderboard (``rankings_refresh_sensor``), the leaderboard the explorer
(``dashboard_refresh_sensor``), whose pages then show the promoted version."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetSelection, DagsterRunStatus, materialize
from live_deployment import TERMINAL, arithmetic_app, deployment, wait_for

from assay.report import explorer_url
from assay.serving import asgi_in_background
from assay.storage.parquet import ParquetStore
from resources import ModelsResource, SuiteResource, assay_resources

SENSORS = ("model_promotion_sensor", "rankings_refresh_sensor", "dashboard_refresh_sensor")


def test_a_promotion_rebuilds_the_explorer_under_the_daemon(
    tmp_path, model_cache_dir, monkeypatch
) -> None:
    with (
        asgi_in_background(arithmetic_app()) as server,
        deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed,
    ):
        deployed.assay("create", "d")
        deployed.assay("register", "d", f"openai:{server.base_url}#right")
        # The scenario's instances, as a deployment has them before any promotion.
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        from assets import all_assets

        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            models=ModelsResource(cache_dir=deployed.env["ASSAY_HOME"] + "/cache"),
        )
        assert materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key="arithmetic",
            instance=deployed.instance,
            resources=resources,
        ).success

        deployed.start()
        for sensor in SENSORS:
            deployed.dagster("sensor", "start", sensor)
        deployed.assay("alias", "set", "d", "champion", "1")

        def rebuilt():
            runs = deployed.runs(**{"dagster/sensor_name": "dashboard_refresh_sensor"})
            return runs if runs and runs[0].status in TERMINAL else None

        (run,) = wait_for(rebuilt, 420, "the explorer's rebuild", deployed.log)
        assert run.status is DagsterRunStatus.SUCCESS
        # Each link of the chain was a sensor's run, not a hand-launched one.
        for sensor in SENSORS[:2]:
            launched = deployed.runs(**{"dagster/sensor_name": sensor})
            assert launched and {r.status for r in launched} == {DagsterRunStatus.SUCCESS}

        store = ParquetStore(deployed.env["ASSAY_STORAGE_URL"])
        index = Path(explorer_url(store))
        assert index.is_file()
        pages = [p.read_text(errors="ignore") for p in index.parent.rglob("*") if p.is_file()]
        assert any("d@v1" in page for page in pages)

        # Nothing changed since: later ticks launch no second rebuild.
        ticks_before = len(deployed.ticks("dashboard_refresh_sensor"))
        wait_for(
            lambda: len(deployed.ticks("dashboard_refresh_sensor")) > ticks_before or None,
            90,
            "another tick of dashboard_refresh_sensor",
            deployed.log,
        )
        assert len(deployed.runs(**{"dagster/sensor_name": "dashboard_refresh_sensor"})) == 1
