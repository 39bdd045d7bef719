"""``rankings``: the leaderboard as of each day, over the versions registered by then."""

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    MetadataValue,
    asset,
)

from assay.digests import seed_from
from assay.metrics.directions import LOWER_IS_BETTER
from assay.ranking import Leaderboard, build_leaderboard
from assets.partitions import ranking_days
from resources import RegistryResource, StorageResource, SuiteResource


def _only(table: pa.Table | None, keys: set[str]) -> pa.Table | None:
    if table is None:
        return None
    return table.filter(pc.is_in(table["model_version"], pa.array(sorted(keys), pa.string())))


def leaderboard_as_of(
    day: str, storage: StorageResource, registry: RegistryResource, suite: SuiteResource
) -> tuple[Leaderboard, pa.Table]:
    """The leaderboard of ``day`` (versions registered by its end) and the metric tables
    behind it. Deterministic: the bootstrap seed derives from the day."""
    as_of = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    versions = {v.key for v in registry.open().list_versions(as_of=as_of)}
    store = storage.store()
    cards = _only(store.read_all("metric_tables"), versions)
    scores = _only(store.read_all("instance_scores"), versions)
    if cards is None or cards.num_rows == 0:
        raise ValueError(
            f"no metric tables for the {len(versions)} model versions registered by "
            f"{as_of:%Y-%m-%d}; materialize model_outputs and metric_tables first"
        )
    loaded = suite.load()
    evaluated = set(cards["scenario"].to_pylist())
    # Scenarios nobody has been evaluated on yet are left off the board rather than failing it.
    primary = {key: loaded[key].metric for key in loaded.keys if key in evaluated}
    board = build_leaderboard(
        cards,
        scores,
        primary_metrics=primary,
        lower_is_better=LOWER_IS_BETTER,
        seed=seed_from("rankings", day),
    )
    return board, cards


@asset(
    partitions_def=ranking_days,
    # Reads every metric table straight from the Parquet dataset rather than loading
    # thousands of partitions through the IO manager.
    deps=[
        AssetDep("metric_tables", partition_mapping=AllPartitionMapping()),
        AssetDep("instance_scores", partition_mapping=AllPartitionMapping()),
    ],
    group_name="rankings",
    kinds={"python", "parquet"},
    code_version="1",
    io_manager_key="parquet_io_manager",
    backfill_policy=BackfillPolicy.single_run(),
    metadata={"partition_dimension": "day"},
    description=(
        "The leaderboard as of the partition's day over the model versions registered by "
        "then: mean win rate, mean score, per-family scores, rank intervals and paired "
        "significance tests."
    ),
)
def rankings(
    context: AssetExecutionContext,
    storage: StorageResource,
    registry: RegistryResource,
    suite: SuiteResource,
):
    tables = {}
    for day in context.partition_keys:
        board, _ = leaderboard_as_of(day, storage, registry, suite)
        tables[day] = board.to_table()
    if len(tables) == 1:
        context.add_output_metadata(
            {
                "num_model_versions": tables[day].num_rows,
                "leaderboard": MetadataValue.md(board.to_markdown()),
            }
        )
        return tables[day]
    return tables
