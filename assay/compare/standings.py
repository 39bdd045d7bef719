"""The leaderboard of a day: the versions registered by its end, ranked on their stored tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from assay.compare.ranking import Leaderboard, build_leaderboard
from assay.core.digests import seed_from
from assay.evaluate.suite import Suite
from assay.registry import Registry
from assay.scoring.metrics.directions import LOWER_IS_BETTER
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, MODEL_VERSION, RANKINGS, SCENARIO
from assay.storage.parquet import ParquetStore


@dataclass(frozen=True)
class StoredResults:
    """Every stored metric table and instance score (None where nothing is stored yet)."""

    metric_tables: pa.Table | None
    instance_scores: pa.Table | None

    @classmethod
    def read(cls, store: ParquetStore) -> StoredResults:
        return cls(store.read_all(METRIC_TABLES), store.read_all(INSTANCE_SCORES))


def leaderboard_as_of(
    day: str, results: StoredResults, registry: Registry, suite: Suite
) -> tuple[Leaderboard, pa.Table]:
    """The leaderboard of ``day`` (versions registered by its end) and the metric tables
    behind it. Deterministic: the bootstrap seed derives from the day."""
    as_of = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    versions = {v.key for v in registry.list_versions(as_of=as_of)}
    cards = _only(results.metric_tables, versions)
    scores = _only(results.instance_scores, versions)
    if cards is None or cards.num_rows == 0:
        raise ValueError(
            f"no metric tables for the {len(versions)} model versions registered by "
            f"{as_of:%Y-%m-%d}; materialize model_outputs and metric_tables first"
        )
    evaluated = set(cards[SCENARIO].to_pylist())
    # Scenarios nobody has been evaluated on yet are left off the board rather than failing it.
    primary = {key: suite[key].metric for key in suite.keys if key in evaluated}
    board = build_leaderboard(
        cards,
        scores,
        primary_metrics=primary,
        lower_is_better=LOWER_IS_BETTER,
        seed=seed_from(RANKINGS, day),
    )
    return board, cards


def _only(table: pa.Table | None, versions: set[str]) -> pa.Table | None:
    """The rows of ``table`` that belong to ``versions``."""
    if table is None:
        return None
    return table.filter(pc.is_in(table[MODEL_VERSION], pa.array(sorted(versions), pa.string())))
