"""The demo evaluation, end to end on the bundled model.

1. Registers two versions of SmolLM2-135M-Instruct that really differ (raw prompt vs the
   model's chat template) and materializes the suite's scenarios.
2. Promotes them in the registry: ``challenger`` → v2, and asks for ``champion`` → v1.
   ``champion`` is gated, so that move is recorded as pending; the promotion sensor turns
   both into one evaluation run per version, each covering the whole suite, then judges v1
   on the suite's promotion criteria (the first holder: absolute criteria alone) and moves
   ``champion``. The demo plays the daemon's part and executes the runs in process.
3. Builds today's leaderboard, records the evaluations in the registry, then asks for
   ``champion`` → v2: pending, judged at the next tick on v2's stored evaluation against
   v1's, and refused with every criterion's numbers (in the registry's history and on the
   explorer's decision page).

Run it with ``make demo``. Running it again is safe: registrations and aliases are
idempotent, the sensors' cursors are the ones the Dagster instance stores for the real
sensors (so turning them on in ``make ui`` afterwards launches nothing the demo already ran),
and every request that already ran is answered by the request cache.
"""

import os
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent
HOME = ROOT / ".assay"
os.environ.setdefault("DAGSTER_HOME", str(HOME / "dagster"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Also for the code server the demo starts to find the sensors' stored state.
os.environ.setdefault("PYTHONWARNINGS", "ignore")
DAGSTER_YAML = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
if not DAGSTER_YAML.exists():
    DAGSTER_YAML.parent.mkdir(parents=True, exist_ok=True)
    DAGSTER_YAML.write_text("telemetry:\n  enabled: false\n")
# Dagster marks multi-partition mappings and partitioned checks as beta/preview; the demo's
# output is for reading the evaluation, not those notices.
warnings.filterwarnings("ignore", module="dagster")
warnings.filterwarnings("ignore", message=".*(beta|preview).*")

from dagster import (  # noqa: E402
    AssetKey,
    AssetSelection,
    DagsterInstance,
    SensorResult,
    build_sensor_context,
    materialize,
)

from assay.compare.decision import decision_from_record  # noqa: E402
from assay.registry import Registry, default_registry_url  # noqa: E402
from assay.report.decisions import decision_page  # noqa: E402
from assay.storage.parquet import default_base_url  # noqa: E402
from assets import all_assets  # noqa: E402
from assets.checks import all_checks  # noqa: E402
from assets.partitions import scenario_partitions  # noqa: E402
from definitions import defs  # noqa: E402
from sensors.evaluations import evaluation_recorder_sensor  # noqa: E402
from sensors.promotion import EVALUATION_ASSETS, model_promotion_sensor  # noqa: E402
from sensors.schedules import rankings_refresh_sensor  # noqa: E402
from sensors.state import SensorCursors, sensor_cursors  # noqa: E402

MODEL = "smollm2-135m-instruct"
SOURCE = "bundled:smollm2-135m-instruct"
VERSIONS = [
    ({"chat_template": False}, "raw prompt, no chat template"),
    ({"chat_template": True}, "prompt wrapped in the model's chat template"),
]
# Framework step events (DEBUG) stay in the run's event log for the UI; the terminal shows the
# assets' own progress lines.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def register_versions(registry: Registry) -> list[str]:
    registry.get_or_create_model(MODEL, description="SmolLM2-135M-Instruct, bundled GGUF")
    keys = []
    for serving, description in VERSIONS:
        version = registry.find_version(MODEL, SOURCE, serving)
        if version is None:
            version = registry.create_version(
                MODEL, SOURCE, serving=serving, description=description
            )
        keys.append(version.key)
    return keys


def run(instance: DagsterInstance, selection: AssetSelection, **kwargs) -> None:
    started = time.perf_counter()
    label = (
        kwargs.get("partition_key")
        or kwargs.get("tags", {}).get("assay/model_version")
        or ", ".join(k.to_user_string() for k in selection.resolve(all_assets))
    )
    result = materialize(
        [*all_assets, *all_checks],
        selection=selection,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
        run_config=QUIET,
        **kwargs,
    )
    failed_checks = [c for c in result.get_asset_check_evaluations() if not c.passed]
    for check in failed_checks:
        print(f"  {label}: check {check.check_name} failed: {check.description or ''}")
    failed_steps = [e.step_key for e in result.get_step_failure_events()]
    if failed_steps and not failed_checks:
        sys.exit(f"run for {label} failed in {failed_steps}; see the Dagster UI (make ui)")
    print(f"  {label}: done in {time.perf_counter() - started:.1f}s", flush=True)


class Daemon:
    """Evaluates the sensors once and executes what they request, as the daemon would, with
    the cursors the instance stores for the real sensors."""

    def __init__(self, instance: DagsterInstance, cursors: SensorCursors) -> None:
        self.instance = instance
        self.cursors = cursors

    def promotion_tick(self) -> None:
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(model_promotion_sensor.name),
            resources=defs.resources,
        )
        result = model_promotion_sensor(context)
        if not isinstance(result, SensorResult):
            print(f"  promotion sensor: {result.skip_message}")
            return
        if result.skip_reason:
            print(f"  promotion sensor: {result.skip_reason.skip_message}")
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, request.partition_keys
            )
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        print(f"  promotion sensor: {len(result.run_requests)} evaluation run(s) requested")
        for request in result.run_requests:
            print(f"  run {request.run_key}: {request.tags['assay/reason']}")
            run(self.instance, EVALUATION_ASSETS, tags=request.tags)
        self.cursors.set(model_promotion_sensor.name, result.cursor)

    def leaderboard_built(self) -> None:
        """What rankings_refresh_sensor would have done: today's board covers every metric
        table so far, so the sensor, once on, waits for newer ones."""
        latest = self.instance.fetch_materializations(AssetKey("metric_tables"), limit=1)
        if latest.records:
            self.cursors.set(rankings_refresh_sensor.name, str(latest.records[0].storage_id))

    def record_evaluations(self) -> None:
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(evaluation_recorder_sensor.name),
            resources=defs.resources,
        )
        result = evaluation_recorder_sensor(context)
        said = result.skip_reason if isinstance(result, SensorResult) else result
        print(f"  evaluation recorder: {said.skip_message}")
        self.cursors.set(evaluation_recorder_sensor.name, context.cursor)


def promote(registry: Registry, alias: str, key: str) -> str:
    """Ask for ``alias`` → ``key``; prints and returns the answer (moved, pending, refused)."""
    result = registry.request_alias(MODEL, alias, registry.get_version(key).version)
    print(f"  {result.sentence}")
    return result.outcome.value


def explain(registry: Registry, key: str) -> None:
    """The latest verdict on ``key``: each criterion with its numbers, and its page."""
    verdicts = [
        e
        for e in registry.decisions(model=MODEL)
        if e.kind.value != "gate_pending" and e.payload.get("candidate") == key
    ]
    if not verdicts:
        print(f"  no verdict on {key} yet")
        return
    verdict = verdicts[-1]
    print(f"  decision {verdict.id}: {verdict.payload.get('summary', '')[:300]}")
    for criterion in decision_from_record(verdict.payload):
        if criterion.outcome != "skipped":
            print(f"    {criterion.sentence()}")
    page = Path(default_base_url()) / "explorer" / decision_page(verdict.id)
    print(f"  explorer page: {page}")


def leaderboard(instance: DagsterInstance, day: str) -> str:
    run(instance, AssetSelection.assets("rankings"), partition_key=day)
    record = instance.get_latest_materialization_event(
        AssetSelection.assets("rankings").resolve(all_assets).pop()
    )
    return record.asset_materialization.metadata["leaderboard"].value if record else ""


def main() -> None:
    instance = DagsterInstance.get()
    with sensor_cursors(instance) as cursors:
        demo(instance, Daemon(instance, cursors))


def demo(instance: DagsterInstance, daemon: Daemon) -> None:
    registry = Registry.open(default_registry_url())
    today = datetime.now(UTC).strftime("%Y-%m-%d")

    v1, v2 = register_versions(registry)
    print(f"registered model versions: {v1}, {v2}")
    print("materializing scenario_instances and perturbed_instances (the suite's data)")
    scenario_assets = AssetSelection.assets("scenario_instances", "perturbed_instances")
    for scenario in scenario_partitions.get_partition_keys():
        run(instance, scenario_assets, partition_key=scenario)

    print("promoting: challenger → v2, champion → v1 (champion is gated: a promotion decision)")
    daemon.promotion_tick()  # picks up the new versions as model_version partitions
    aliases = registry.get_model(MODEL).aliases
    if "challenger" not in aliases:
        promote(registry, "challenger", v2)
    if "champion" not in aliases:
        promote(registry, "champion", v1)
    daemon.promotion_tick()  # evaluates v2 (challenger) and v1 (the pending decision)
    daemon.promotion_tick()  # judges v1, the first holder, and moves champion
    daemon.record_evaluations()
    print("\nbuilding the leaderboard")
    board = leaderboard(instance, today)
    daemon.leaderboard_built()

    if registry.get_model(MODEL).aliases.get("champion") != registry.get_version(v2).version:
        print("\nasking for champion → v2, the challenger")
        if promote(registry, "champion", v2) == "pending":
            daemon.promotion_tick()  # judged on v2's stored evaluation against v1's
        explain(registry, v2)

    run(instance, AssetSelection.assets("dashboard"))
    print(f"\nLeaderboard as of {today}\n\n{board}\n")
    print(f"Results explorer: {Path(default_base_url()) / 'explorer' / 'index.html'}")
    print(f"Parquet tables:   {default_base_url()}")
    print(f"Registry:         {default_registry_url()}")
    print(f"Dagster home:     {os.environ['DAGSTER_HOME']}")
    print("Next: `make ui` and open http://127.0.0.1:3000 for the asset graph, partitions and")
    print("materializations; `.venv/bin/assay registry history` for the registry's event log.")


if __name__ == "__main__":
    main()
