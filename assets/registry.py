"""``registered_models``: each model version as resolved when it was materialized."""

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, asset

from assay.registry.resolved import record_registered_model
from assay.storage.code_versions import code_version
from assay.storage.contract import MODEL_VERSION, REGISTERED_MODELS
from assets.common import add_partition_metadata
from assets.partitions import model_version_partitions
from resources import ModelsResource, RegistryResource, StorageResource


@asset(
    partitions_def=model_version_partitions,
    group_name="registry",
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"python", "parquet"},
    code_version=code_version(REGISTERED_MODELS),
    # Written by assay.registry.resolved.record_registered_model (shared with the promotion
    # sensor); downstream assets load it through the Parquet IO manager, which reads the same
    # path.
    io_manager_key="parquet_io_manager",
    metadata={"partition_dimension": MODEL_VERSION},
    description=(
        "One model version from the registry as resolved: source URI, artifact digest "
        "(weights, tokenizer, chat template), aliases and stage, serving config and the "
        "package versions of the environment."
    ),
)
def registered_models(
    context: AssetExecutionContext,
    registry: RegistryResource,
    models: ModelsResource,
    storage: StorageResource,
) -> MaterializeResult:
    store, reg = storage.store(), registry.open()
    metadata: dict[str, dict] = {}
    for key in context.partition_keys:
        recorded = record_registered_model(store, reg.get_version(key), models.artifact_digest)
        metadata[key] = recorded.metadata()
        resolved = recorded.resolved
        context.log.info(f"{key}: {resolved.source} artifact {resolved.artifact_digest[:12]}")
    if len(metadata) == 1:
        return MaterializeResult(metadata=next(iter(metadata.values())))
    add_partition_metadata(context, metadata)
    return MaterializeResult()
