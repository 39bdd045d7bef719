"""Promotion → re-evaluation: the registry's event log drives Dagster runs.

``model_promotion_sensor`` reads registry events after its cursor (the last event id it
handled), adds ``model_version`` partitions for new versions, records their
``registered_models`` partitions, and launches one run per promoted version that evaluates
it across the whole suite (a partition-range run over ``<key>|<first>`` … ``<key>|<last>``).
"""

import os

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assay.registry.promotion import Promotion, PromotionPolicy, new_version_keys
from assay.registry.resolved import resolve_version
from assets.partitions import MODEL_VERSION, model_version_partitions
from assets.registry import resolved_metadata
from resources import ModelsResource, RegistryResource, StorageResource, SuiteResource

EVALUATION_KEYS = [AssetKey(k) for k in ("model_outputs", "instance_scores", "metric_tables")]
EVALUATION_ASSETS = AssetSelection.assets(*EVALUATION_KEYS)
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def max_events_per_tick() -> int:
    return int(os.environ.get("ASSAY_SENSOR_MAX_EVENTS", "100"))


def promotion_policy() -> PromotionPolicy:
    """``ASSAY_PROMOTION_ALIASES`` (comma list; unset = any alias) and
    ``ASSAY_PROMOTION_STAGES`` (default Staging,Production)."""
    aliases = os.environ.get("ASSAY_PROMOTION_ALIASES")
    stages = os.environ.get("ASSAY_PROMOTION_STAGES", "Staging,Production")
    return PromotionPolicy.from_lists(
        None if aliases is None else [a.strip() for a in aliases.split(",") if a.strip()],
        [s.strip() for s in stages.split(",") if s.strip()],
    )


def evaluation_run_request(key: str, scenarios: list[str], run_key: str, reason: str) -> RunRequest:
    """One run evaluating version ``key`` on every scenario: a partition-range run."""
    return RunRequest(
        run_key=run_key,
        asset_selection=EVALUATION_KEYS,
        tags={
            RANGE_START: f"{key}|{scenarios[0]}",
            RANGE_END: f"{key}|{scenarios[-1]}",
            "assay/model_version": key,
            "assay/reason": reason[:200],
        },
    )


@sensor(
    name="model_promotion_sensor",
    minimum_interval_seconds=30,
    asset_selection=EVALUATION_ASSETS,
    description="Re-evaluates a model version across the suite when it is promoted "
    "(an alias set or moved, or a move to Staging/Production).",
)
def model_promotion_sensor(
    context: SensorEvaluationContext,
    registry: RegistryResource,
    storage: StorageResource,
    models: ModelsResource,
    suite: SuiteResource,
):
    after = int(context.cursor or 0)
    try:
        reg = registry.open()
        events = reg.events(after_id=after, limit=max_events_per_tick())
    except Exception as exc:  # any registry outage: skip the tick, keep the cursor
        return SkipReason(
            f"registry unreachable ({type(exc).__name__}); cursor stays at event {after}"
        )
    if not events:
        return SkipReason(f"no registry events after id {after}")

    promotions: list[Promotion] = promotion_policy().promotions(events)
    wanted = list(dict.fromkeys(new_version_keys(events) + [p.key for p in promotions]))
    known = set(context.instance.get_dynamic_partitions(MODEL_VERSION))
    to_add = [k for k in wanted if k not in known]

    # Record registered_models for every new or promoted version (cheap: a digest lookup),
    # so the evaluation run finds its upstream partition.
    store, materializations = storage.store(), []
    for key in wanted:
        resolved = resolve_version(reg.get_version(key), models.artifact_digest)
        path = store.write("registered_models", {MODEL_VERSION: key}, resolved.to_table())
        materializations.append(
            AssetMaterialization(
                asset_key=AssetKey("registered_models"),
                partition=key,
                metadata={**resolved_metadata(resolved), "path": path},
                description="recorded by model_promotion_sensor",
            )
        )

    scenarios = suite.load().keys
    run_requests = [
        evaluation_run_request(p.key, scenarios, f"promotion-{p.event_id}", p.reason)
        for p in promotions
    ]
    context.log.info(
        f"events {events[0].id}..{events[-1].id}: {len(to_add)} new partitions, "
        f"{len(run_requests)} evaluation runs"
    )
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=(
            [AddDynamicPartitionsRequest(model_version_partitions.name, to_add)] if to_add else []
        ),
        asset_events=materializations,
        cursor=str(events[-1].id),
    )
