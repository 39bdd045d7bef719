"""Parquet IO manager: one file per partition on any fsspec URL, written atomically.

Accepts several partitions at once (partition-range runs): the asset returns a mapping
partition key → table and each partition is written on its own file, a few at a time; inputs
spanning several partitions load as the same kind of mapping, read a few at a time.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MultiPartitionsDefinition,
    OutputContext,
    PartitionsDefinition,
)
from pydantic import Field

from assay.storage.parquet import ParquetStore, default_base_url
from resources.partition_metadata import add_partition_metadata


def partition_dims(
    partitions_def: PartitionsDefinition | None, key: str, dimension: str
) -> dict[str, str]:
    """A partition key as dimension → value (multi-partitions keep their dimension names)."""
    if isinstance(partitions_def, MultiPartitionsDefinition):
        return dict(partitions_def.get_partition_key_from_str(key).keys_by_dimension)
    return {dimension: key}


def _asset_name(context: OutputContext | InputContext) -> str:
    return "/".join(context.asset_key.path)


def _dimension(metadata: Mapping[str, object] | None) -> str:
    value = (metadata or {}).get("partition_dimension", "partition")
    return str(getattr(value, "value", value))


class ParquetIOManager(ConfigurableIOManager):
    """Stores pyarrow tables as Parquet under ``base_url`` (local path, memory://, s3://, …)."""

    base_url: str = Field(
        default_factory=default_base_url,
        description="fsspec URL of the storage root (default .assay/storage).",
    )

    @property
    def store(self) -> ParquetStore:
        return ParquetStore(self.base_url)

    def handle_output(self, context: OutputContext, obj: pa.Table | Mapping[str, pa.Table]):
        store, asset = self.store, _asset_name(context)
        if not context.has_asset_partitions:
            if not isinstance(obj, pa.Table):
                raise TypeError(f"asset {asset!r} must return a pyarrow Table")
            context.add_output_metadata({"path": store.write(asset, None, obj)})
            return
        keys = list(context.asset_partition_keys)
        tables = obj if isinstance(obj, Mapping) else None
        if tables is None:
            if len(keys) != 1:
                raise TypeError(
                    f"asset {asset!r} ran for {len(keys)} partitions and must return a mapping "
                    "partition key → table"
                )
            tables = {keys[0]: obj}
        missing = sorted(set(keys) - set(tables))
        if missing:
            raise ValueError(f"asset {asset!r} returned no table for partitions {missing}")
        dimension = _dimension(context.definition_metadata)
        # A range's partitions are written a few at a time (ParquetStore.write_many).
        written = store.write_many(
            asset,
            [
                (partition_dims(context.asset_partitions_def, key, dimension), tables[key])
                for key in keys
            ],
        )
        paths = dict(zip(keys, written, strict=True))
        if len(keys) == 1:
            context.add_output_metadata({"path": paths[keys[0]]})
            return
        # A range: each partition's materialization names its own file (the step records one
        # materialization per partition, after this returns).
        paths_metadata = {key: {"path": path} for key, path in paths.items()}
        add_partition_metadata(context.step_context, context.asset_key, paths_metadata)

    def load_input(self, context: InputContext) -> pa.Table | dict[str, pa.Table]:
        store, asset = self.store, _asset_name(context)
        if not context.has_asset_partitions:
            return store.read(asset, None)
        upstream_meta = (
            context.upstream_output.definition_metadata if context.upstream_output else {}
        )
        dimension = _dimension(upstream_meta)
        partitions_def = context.asset_partitions_def
        keys = list(context.asset_partition_keys)
        read = store.read_many(asset, [partition_dims(partitions_def, k, dimension) for k in keys])
        tables = dict(zip(keys, read, strict=True))
        return tables[keys[0]] if len(keys) == 1 else tables
