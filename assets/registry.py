"""``registered_models``: each model version as resolved when it was materialized."""

from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, asset

from assay.registry.resolved import ResolvedModel, resolve_version
from assay.storage.contract import MODEL_VERSION
from assets.common import partitioned_output
from assets.partitions import model_version_partitions
from resources import ModelsResource, RegistryResource


def resolved_metadata(resolved: ResolvedModel) -> dict[str, object]:
    """What the UI shows for one registered_models partition."""
    return {
        "source": resolved.source,
        "artifact_digest": resolved.artifact_digest,
        "aliases": ", ".join(resolved.aliases) or "-",
        "stage": resolved.stage,
        "serving": MetadataValue.json(resolved.serving.to_dict()),
        "environment": MetadataValue.json(resolved.environment),
    }


@asset(
    partitions_def=model_version_partitions,
    group_name="registry",
    backfill_policy=BackfillPolicy.single_run(),
    kinds={"python", "parquet"},
    code_version="1",
    io_manager_key="parquet_io_manager",
    metadata={"partition_dimension": MODEL_VERSION},
    description=(
        "One model version from the registry as resolved: source URI, artifact digest "
        "(weights, tokenizer, chat template), aliases and stage, serving config and the "
        "package versions of the environment."
    ),
)
def registered_models(
    context: AssetExecutionContext, registry: RegistryResource, models: ModelsResource
):
    tables, metadata = {}, {}
    for key in context.partition_keys:
        resolved = resolve_version(registry.open().get_version(key), models.artifact_digest)
        tables[key] = resolved.to_table()
        metadata = resolved_metadata(resolved)
        context.log.info(f"{key}: {resolved.source} artifact {resolved.artifact_digest[:12]}")
    return partitioned_output(context, tables, metadata)
