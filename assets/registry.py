"""``registered_models``: each model version as resolved when it was materialized."""

from __future__ import annotations

from dagster import AssetExecutionContext, MetadataValue, asset

from assay.models.base import ModelSpec, ServingConfig
from assay.models.registration import ResolvedModel, environment
from assets.partitions import MODEL_VERSION, model_version_partitions
from resources import ModelsResource, RegistryResource


@asset(
    partitions_def=model_version_partitions,
    group_name="registry",
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
    tables = {}
    for key in context.partition_keys:
        version = registry.open().get_version(key)
        serving = ServingConfig.from_dict(dict(version.serving or {}))
        spec = ModelSpec(key=key, source=version.source, serving=serving)
        resolved = ResolvedModel(
            key=key,
            model=version.model,
            version=version.version,
            source=version.source,
            serving=serving,
            artifact_digest=models.artifact_digest(spec),
            aliases=tuple(sorted(version.aliases)),
            stage=str(version.stage or "None"),
            tags=dict(version.tags or {}),
            environment=environment(),
        )
        tables[key] = resolved.to_table()
        context.log.info(f"{key}: {version.source} artifact {resolved.artifact_digest[:12]}")
    if len(tables) == 1:
        context.add_output_metadata(
            {
                "source": resolved.source,
                "artifact_digest": resolved.artifact_digest,
                "aliases": ", ".join(resolved.aliases) or "-",
                "stage": resolved.stage,
                "serving": MetadataValue.json(resolved.serving.to_dict()),
                "environment": MetadataValue.json(resolved.environment),
            }
        )
        return next(iter(tables.values()))
    return tables
