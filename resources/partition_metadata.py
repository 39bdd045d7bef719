"""Per-partition metadata for a step that materializes several partitions (a range run).

Dagster records one materialization per partition of a range and merges into each the
metadata added for that partition (``add_asset_metadata(..., partition_key=...)``). The public
call first checks the key against the run's range by listing the range's partitions, the
dynamic ones read from the instance, on every call: about 50 ms per call on this project's
machines and growing with the range, so a 500-partition rescoring step would spend minutes on
it. The keys given here are the step's own, so they are recorded on the step's metadata
accumulator directly, which is what the public call does after its check (Dagster 1.13).
Without that accumulator (another Dagster), the public call is used: slower, same result.
``tests/test_range_metadata.py`` checks the result in the instance.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetKey
from dagster._core.execution.context.system import StepExecutionContext


def add_partition_metadata(
    step: StepExecutionContext,
    asset_key: AssetKey,
    metadata: Mapping[str, Mapping[str, object]],
) -> None:
    """Each partition key's own metadata on its materialization of ``asset_key``."""
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):
        for key, values in metadata.items():
            step.add_asset_metadata(values, asset_key=asset_key, partition_key=key)
        return
    for key, values in metadata.items():
        accumulator = accumulator.with_additional_asset_metadata(
            asset_key=asset_key, partition_key=key, metadata=values
        )
    step._metadata_accumulator = accumulator
