"""The nightly re-evaluation schedule, and the demo followed by every sensor, under the real
``dagster-daemon``."""

from __future__ import annotations

import sys

from dagster import AssetSelection, DagsterEventType, DagsterRunStatus, materialize
from live_deployment import (
    GATE_VARIABLES,
    REPO,
    TERMINAL,
    deployment,
    wait_for,
)
from live_deployment import PROMOTION_SENSOR as SENSOR

from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import MODEL_VERSION_TAG

SCHEDULE = "nightly_alias_reevaluation"


def test_nightly_reevaluation_of_a_trailing_holder_succeeds(
    tmp_path, model_cache_dir, model_server, monkeypatch
):
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed:
        deployed.env["ASSAY_REEVALUATION_CRON"] = "* * * * *"
        deployed.assay("create", "n")
        deployed.assay("register", "n", f"openai:{model_server}#wrong")  # v1 trails
        deployed.assay("register", "n", f"openai:{model_server}#right")  # v2, the champion
        deployed.assay("alias", "set", "n", "champion", "2")
        deployed.assay("alias", "set", "n", "challenger", "1")

        # What the promotion sensor would have done, and the champion's evaluation, in
        # process on the same instance (ASSAY_SUITE names the same single scenario).
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        from assets import all_assets
        from assets.checks import all_checks

        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            models=ModelsResource(cache_dir=deployed.env["ASSAY_HOME"] + "/cache"),
        )
        instance = deployed.instance
        instance.add_dynamic_partitions("model_version", ["n@v1", "n@v2"])
        for selection, key in [
            ("registered_models", "n@v1"),
            ("registered_models", "n@v2"),
            ("scenario_instances", "arithmetic"),
        ]:
            assert materialize(
                all_assets,
                selection=AssetSelection.assets(selection),
                partition_key=key,
                instance=instance,
                resources=resources,
            ).success
        assert materialize(
            [*all_assets, *all_checks],
            selection=AssetSelection.assets("model_outputs", "instance_scores", "metric_tables"),
            partition_key="n@v2|arithmetic",
            instance=instance,
            resources=resources,
        ).success

        deployed.start()
        deployed.dagster("schedule", "start", SCHEDULE)

        def finished():
            runs = deployed.runs(**{"assay/reason": "nightly re-evaluation"})
            return runs if len(runs) == 2 and {r.status for r in runs} <= TERMINAL else None

        runs = wait_for(finished, 420, "both nightly runs to finish", deployed.log)
        assert {r.tags[MODEL_VERSION_TAG] for r in runs} == {"n@v1", "n@v2"}
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}

        (trailing,) = [r for r in runs if r.tags[MODEL_VERSION_TAG] == "n@v1"]
        verdicts = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(
                trailing.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
        assert [(v.partition, v.passed, v.severity.value) for v in verdicts] == [
            ("n@v1|arithmetic", False, "WARN")
        ]
        # The per-partition verdict is on the version for users to read (promotion decisions,
        # tested below, decide whether champion may move).
        registry = deployed.registry()
        assert registry.get_version("n@v1").tags["gate.arithmetic"] == "failed"
        registry.close()


def test_the_demo_then_the_sensor_launches_nothing_twice(tmp_path, model_cache_dir):
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=0) as deployed:
        for variable in GATE_VARIABLES:  # the demo runs as a user's would: champion gated
            deployed.env.pop(variable, None)
        demo = deployed.run(sys.executable, str(REPO / "demo.py"), timeout_s=900)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        before = {r.run_id for r in deployed.runs()}
        evaluated = {r.tags.get(MODEL_VERSION_TAG) for r in deployed.runs()} - {None}
        assert evaluated == {"smollm2-135m-instruct@v1", "smollm2-135m-instruct@v2"}

        deployed.start()
        deployed.dagster("sensor", "start", "--start-all")  # as a user turns them on in the UI
        wait_for(lambda: deployed.sensor_caught_up(SENSOR), 120, "the sensor's tick", deployed.log)
        for sensor in ("rankings_refresh_sensor", "evaluation_recorder_sensor"):
            wait_for(lambda s=sensor: deployed.ticks(s), 60, f"a tick of {sensor}", deployed.log)
        assert {r.run_id for r in deployed.runs()} == before
        for sensor in (SENSOR, "rankings_refresh_sensor"):
            assert all(not t.run_ids for t in deployed.ticks(sensor)), sensor
