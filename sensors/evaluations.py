"""Write evaluation results back to the registry, so it shows how each version scored."""

from dagster import AssetKey, AssetRecordsFilter, SensorEvaluationContext, SkipReason, sensor

from assay.core.records import headline_means
from assay.storage.contract import METRIC_TABLES, MODEL_VERSION, SCENARIO
from assets.partitions import evaluation_partitions
from resources import RegistryResource, StorageResource


@sensor(
    name="evaluation_recorder_sensor",
    minimum_interval_seconds=30,
    description="Records each new metric_tables partition in the registry as an "
    "'evaluation recorded' event and eval.<scenario>.<metric> version tags.",
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
    for record in records:
        key = record.partition_key
        if key is None:
            continue
        dims = evaluation_partitions.get_partition_key_from_str(key).keys_by_dimension
        metrics = headline_means(store.read(METRIC_TABLES, dims).to_pylist())
        if metrics:
            reg.record_evaluation(
                dims[MODEL_VERSION], dims[SCENARIO], metrics, run_id=record.run_id
            )
            recorded += 1
        context.update_cursor(str(record.storage_id))
    context.log.info(f"recorded {recorded} evaluations in the registry")
    return SkipReason(f"recorded {recorded} evaluations; nothing to launch")
