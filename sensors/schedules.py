"""Time- and materialization-driven runs: nightly re-evaluation, leaderboard and explorer
refresh."""

import os
from datetime import UTC, datetime

from dagster import (
    AssetKey,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    schedule,
    sensor,
)

from assay.registry.names import version_key
from assay.storage.contract import DASHBOARD, METRIC_TABLES, MODEL_VERSION, RANKINGS
from resources import RegistryResource, SuiteResource
from sensors.promotion import (
    EVALUATION_ASSETS,
    active_evaluation,
    evaluation_run_requests,
    sensor_interval_s,
)


@schedule(
    name="nightly_alias_reevaluation",
    cron_schedule=os.environ.get("ASSAY_REEVALUATION_CRON", "0 2 * * *"),
    target=EVALUATION_ASSETS,
    description="Re-evaluates every version that currently holds an alias; a "
    "version whose evaluation is already queued or running is skipped.",
)
def nightly_alias_reevaluation(
    context: ScheduleEvaluationContext, registry: RegistryResource, suite: SuiteResource
):
    reg = registry.open()
    known = set(context.instance.get_dynamic_partitions(MODEL_VERSION))
    holders = sorted(
        {
            version_key(model.name, version)
            for model in reg.list_models()
            for version in model.aliases.values()
        }
        & known
    )
    if not holders:
        return SkipReason("no alias holder is a known model_version partition")
    scenarios = suite.load().keys
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    requests, skipped = [], []
    for key in holders:
        running = active_evaluation(context.instance, key)
        if running is not None:
            skipped.append(f"{key}: run {running} already evaluates it")
            continue
        requests += evaluation_run_requests(
            key, scenarios, f"nightly-{stamp}-{key}", "nightly re-evaluation"
        )
    for line in skipped:
        context.log.info(f"skipped {line}")
    if not requests:
        return SkipReason("every alias holder is being evaluated: " + "; ".join(skipped))
    return requests


@sensor(
    name="rankings_refresh_sensor",
    minimum_interval_seconds=sensor_interval_s(60),
    asset_selection=[AssetKey(RANKINGS)],
    description="Rebuilds today's leaderboard after new metric tables are materialized.",
)
def rankings_refresh_sensor(context: SensorEvaluationContext):
    latest = context.instance.fetch_materializations(AssetKey(METRIC_TABLES), limit=1)
    if not latest.records:
        return SkipReason("no metric tables materialized yet")
    storage_id = latest.records[0].storage_id
    if context.cursor and int(context.cursor) >= storage_id:
        return SkipReason("no new metric tables since the last leaderboard")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    context.update_cursor(str(storage_id))
    return RunRequest(run_key=f"rankings-{storage_id}", partition_key=today)


@sensor(
    name="dashboard_refresh_sensor",
    minimum_interval_seconds=sensor_interval_s(30),
    asset_selection=[AssetKey(DASHBOARD)],
    description="Rebuilds the results explorer after the leaderboard changes (a rankings "
    "materialization newer than the explorer's last build); the build rewrites only the "
    "pages whose content changed.",
)
def dashboard_refresh_sensor(context: SensorEvaluationContext):
    # Stateless on purpose: the explorer is stale exactly when the newest rankings
    # materialization is newer than the newest dashboard one, however either was made (by
    # this sensor, by hand, by the demo), so nothing needs a cursor kept in step.
    rankings = context.instance.fetch_materializations(AssetKey(RANKINGS), limit=1).records
    if not rankings:
        return SkipReason("no rankings materialized yet")
    newest = rankings[0].storage_id
    built = context.instance.fetch_materializations(AssetKey(DASHBOARD), limit=1).records
    if built and built[0].storage_id > newest:
        return SkipReason("the explorer was built after the newest rankings")
    return RunRequest(run_key=f"dashboard-after-rankings-{newest}")
