"""Helpers shared by the asset modules: partition bookkeeping and metadata."""

from collections.abc import Mapping

import pyarrow as pa
from dagster import AssetExecutionContext, AssetKey, MetadataValue, MultiPartitionKey

from assay.report import explorer_url
from assay.storage.contract import MODEL_VERSION, SCENARIO
from assay.storage.parquet import ParquetStore
from assets.partitions import evaluation_partitions
from resources.partition_metadata import add_partition_metadata as record_partition_metadata


def evaluation_keys(context: AssetExecutionContext) -> list[MultiPartitionKey]:
    """The (model_version, scenario) partitions this step materializes (one, or a range)."""
    return [evaluation_partitions.get_partition_key_from_str(k) for k in context.partition_keys]


def model_version_of(key: MultiPartitionKey) -> str:
    return key.keys_by_dimension[MODEL_VERSION]


def scenario_of(key: MultiPartitionKey) -> str:
    return key.keys_by_dimension[SCENARIO]


def by_key(value: pa.Table | Mapping[str, pa.Table], keys: list[str]) -> dict[str, pa.Table]:
    """An upstream input as a mapping key → table, whether it spans one partition or several."""
    if isinstance(value, pa.Table):
        if len(set(keys)) != 1:
            raise ValueError(f"expected one upstream partition, got keys {sorted(set(keys))}")
        return {keys[0]: value}
    return dict(value)


def partitioned_output(
    context: AssetExecutionContext,
    results: dict[str, object],
    metadata: Mapping[str, Mapping[str, object]],
) -> object:
    """What an asset returns for its run's partitions, each partition with its own metadata.

    One partition: its table, with its metadata on the output. Several (a promotion, a nightly
    run, a single-run backfill): the mapping by key, and each partition's materialization gets
    that partition's metadata, as if it had run alone (see :func:`add_partition_metadata`).
    """
    if len(results) == 1:
        context.add_output_metadata(dict(next(iter(metadata.values()))))
        return next(iter(results.values()))
    add_partition_metadata(context, metadata)
    return results


def add_partition_metadata(
    context: AssetExecutionContext,
    metadata: Mapping[str, Mapping[str, object]],
    asset_key: str | None = None,
) -> None:
    """Each partition's own metadata on its materialization in a multi-partition step (Dagster
    records one materialization per partition of a range); every partition also shows
    ``num_partitions``, how many the run materialized."""
    count = len(metadata)
    record_partition_metadata(
        context.get_step_execution_context(),
        AssetKey(asset_key) if asset_key else context.asset_key,
        {key: {**values, "num_partitions": count} for key, values in metadata.items()},
    )


def markdown_table(table: pa.Table, limit: int = 20) -> MetadataValue:
    """A small markdown preview of a table for the Dagster UI."""
    rows = table.slice(0, limit).to_pylist()
    if not rows:
        return MetadataValue.md("_empty_")
    columns = table.column_names
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row[c]
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            cells.append(text.replace("|", "\\|").replace("\n", "\\n")[:60])
        lines.append("| " + " | ".join(cells) + " |")
    if table.num_rows > limit:
        lines.append(f"\n_{table.num_rows - limit} more rows_")
    return MetadataValue.md("\n".join(lines))


def explorer_link(store: ParquetStore, page: str = "index.html") -> MetadataValue:
    """A link to a page of the results explorer (written by the ``dashboard`` asset): a path
    for local storage, a URL on an object store."""
    url = explorer_url(store, page)
    return MetadataValue.path(url) if store.is_local else MetadataValue.url(url)
