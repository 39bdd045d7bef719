"""Write evaluation results back to the registry, so it shows how each version scored."""

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assay.core.records import headline_means
from assay.evaluate.sequential import extent_of
from assay.storage.contract import METRIC_TABLES, MODEL_VERSION, SCENARIO
from assets.partitions import evaluation_partitions
from resources import RegistryResource, StorageResource
from sensors.outages import is_registry_outage, storage_reachable


@sensor(
    name="evaluation_recorder_sensor",
    minimum_interval_seconds=30,
    description="Records each new metric_tables partition in the registry as an "
    "'evaluation recorded' event and eval.<scenario>.<metric> version tags (a partial "
    "evaluation, stopped by a sequential promotion decision, is not recorded). A partition it "
    "cannot read or record is marked refused (an observation on that partition) and passed.",
)
def evaluation_recorder_sensor(
    context: SensorEvaluationContext, registry: RegistryResource, storage: StorageResource
):
    after = int(context.cursor or 0)
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(METRIC_TABLES), after_storage_id=after),
        limit=100,
        ascending=True,
    ).records
    if not records:
        return SkipReason(f"no metric tables materialized after storage id {after}")
    try:
        reg = registry.open()
    except Exception as exc:  # registry outage: retry next tick, nothing lost
        return SkipReason(f"registry unreachable ({type(exc).__name__})")
    store, recorded = storage.store(), 0
    refusals: list[AssetObservation] = []

    def held(why: str) -> SensorResult:
        return SensorResult(
            skip_reason=SkipReason(
                f"{why}; {recorded} recorded this tick, the rest retried at the next tick"
            ),
            asset_events=refusals,
        )

    for record in records:
        key = record.partition_key
        if key is not None:
            try:
                dims = evaluation_partitions.get_partition_key_from_str(key).keys_by_dimension
                card = store.read(METRIC_TABLES, dims)
                extent = extent_of(card)
                metrics = headline_means(card.to_pylist())
                if extent is not None and extent.partial:
                    # A sequential decision's partial evaluation is not how the version
                    # scores; the full evaluation that completes it is recorded.
                    context.log.info(f"evaluation {key} not recorded: {extent.sentence()}")
                elif metrics:
                    reg.record_evaluation(
                        dims[MODEL_VERSION], dims[SCENARIO], metrics, run_id=record.run_id
                    )
                    recorded += 1
            except Exception as exc:
                if is_registry_outage(exc):
                    return held(f"registry unreachable ({type(exc).__name__})")
                if isinstance(exc, OSError) and not storage_reachable(store):
                    return held(f"storage unreachable ({type(exc).__name__})")
                # This partition cannot be recorded (an unreadable file, a version the
                # registry no longer resolves): say so on it, and go on with the next.
                reason = f"refused: {type(exc).__name__}: {exc}"[:1000]
                context.log.warning(f"evaluation {key} not recorded: {reason}")
                refusals.append(
                    AssetObservation(
                        AssetKey(METRIC_TABLES),
                        partition=key,
                        metadata={"registry_record": reason},
                    )
                )
        context.update_cursor(str(record.storage_id))
    context.log.info(f"recorded {recorded} evaluations in the registry")
    return SensorResult(
        skip_reason=SkipReason(
            f"recorded {recorded} evaluations, {len(refusals)} refused; nothing to launch"
        ),
        asset_events=refusals,
    )
