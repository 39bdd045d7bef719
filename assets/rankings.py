"""``rankings``: the leaderboard as of each day, over the versions registered and the results
written by its end."""

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    MetadataValue,
    asset,
)

from assay.compare.standings import leaderboard_of_day
from assay.compare.stored_boards import write_board
from assay.storage.code_versions import code_version
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, RANKINGS
from assets.common import partitioned_output
from assets.partitions import ranking_days
from resources import RegistryResource, StorageResource, SuiteResource


@asset(
    partitions_def=ranking_days,
    # Queries the Parquet dataset (DuckDB, one scenario's instance scores at a time) rather
    # than loading thousands of partitions through the IO manager.
    deps=[
        AssetDep(METRIC_TABLES, partition_mapping=AllPartitionMapping()),
        AssetDep(INSTANCE_SCORES, partition_mapping=AllPartitionMapping()),
    ],
    group_name="rankings",
    kinds={"python", "parquet"},
    code_version=code_version(RANKINGS),
    io_manager_key="parquet_io_manager",
    backfill_policy=BackfillPolicy.single_run(),
    metadata={"partition_dimension": "day"},
    description=(
        "The leaderboard as of the partition's day: the model versions registered by its end, "
        "ranked on their results as they stood at its end (rebuilding a past day gives the "
        "same board): mean win rate, mean score, per-family scores, rank intervals and paired "
        "significance tests."
    ),
)
def rankings(
    context: AssetExecutionContext,
    storage: StorageResource,
    registry: RegistryResource,
    suite: SuiteResource,
):
    store, opened, loaded = storage.store(), registry.open(), suite.load()
    tables, metadata = {}, {}
    for day in context.partition_keys:
        board, _ = leaderboard_of_day(day, store, opened, loaded)
        # The full board (comparisons, family figures) for the explorer, which renders it
        # rather than ranking the day again.
        write_board(store, day, board)
        tables[day] = board.to_table()
        metadata[day] = {
            "num_model_versions": tables[day].num_rows,
            "leaderboard": MetadataValue.md(board.to_markdown()),
        }
    return partitioned_output(context, tables, metadata)
