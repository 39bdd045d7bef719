"""The leaderboard of a day: the versions registered by its end, ranked on their results as they
stood at its end.

Rebuilding a past day gives the board shown that day: the registry answers which versions were
registered by then, and the store's history (:meth:`ParquetStore.read_all_as_of`) which metric
tables and instance scores had been written by then. A day ends at midnight UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from assay.compare.ranking import Leaderboard, build_leaderboard
from assay.contamination.clean import CLEAN, RATE
from assay.core.digests import seed_from
from assay.core.records import subset_rows
from assay.evaluate.sequential import partial_versions
from assay.evaluate.suite import Suite
from assay.registry import Registry
from assay.scoring.metrics.directions import lower_is_better_in
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, MODEL_VERSION, RANKINGS, SCENARIO
from assay.storage.parquet import ParquetStore


def end_of_day(day: str) -> datetime:
    """The instant a ``YYYY-MM-DD`` day ends (midnight UTC after it)."""
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"day {day!r} is not a date like 2026-11-30") from None
    return start + timedelta(days=1)


@dataclass(frozen=True)
class StoredResults:
    """Stored metric tables and instance scores (None where nothing is stored yet)."""

    metric_tables: pa.Table | None
    instance_scores: pa.Table | None

    @classmethod
    def read(
        cls,
        store: ParquetStore,
        as_of: datetime | None = None,
        cache: dict[str, pa.Table] | None = None,
    ) -> StoredResults:
        """The latest tables, or with ``as_of`` the tables as they stood just before it
        (``cache`` saves rereading a stored copy when several instants are read)."""
        if as_of is None:
            return cls(store.read_all(METRIC_TABLES), store.read_all(INSTANCE_SCORES))
        return cls(
            store.read_all_as_of(METRIC_TABLES, as_of, cache),
            store.read_all_as_of(INSTANCE_SCORES, as_of, cache),
        )

    @classmethod
    def of_day(
        cls, store: ParquetStore, day: str, cache: dict[str, pa.Table] | None = None
    ) -> StoredResults:
        """The tables as they stood at the end of ``day``."""
        return cls.read(store, end_of_day(day), cache)


def leaderboard_as_of(
    day: str, results: StoredResults, registry: Registry, suite: Suite
) -> tuple[Leaderboard, pa.Table]:
    """The leaderboard of ``day`` (versions registered by its end) and the metric tables
    behind it. ``results`` should be :meth:`StoredResults.of_day` for the board to be that
    day's. Deterministic: the bootstrap seed derives from the day."""
    as_of = end_of_day(day)
    versions = {v.key for v in registry.list_versions(as_of=as_of)}
    cards = _only(results.metric_tables, versions)
    scores = _only(results.instance_scores, versions)
    # A partial evaluation (a sequential promotion decision stopped it) is not ranked: its
    # figures cover the first instances of the order only. The board says what it left off.
    partial = partial_versions(cards)
    cards, scores = _without(cards, partial), _without(scores, partial)
    left_off = tuple(
        f"{version} × {scenario}: a partial evaluation (a sequential promotion decision "
        "stopped it), left off the board until a full evaluation completes it"
        for version, scenario in sorted(partial)
    )
    if cards is None or cards.num_rows == 0:
        raise ValueError(
            f"no metric tables for the {len(versions)} model versions registered by "
            f"{as_of:%Y-%m-%d}; materialize model_outputs and metric_tables first"
        )
    evaluated = set(cards[SCENARIO].to_pylist())
    # Scenarios nobody has been evaluated on yet are left off the board rather than failing it.
    primary = {key: suite[key].metric for key in suite.keys if key in evaluated}
    lower = lower_is_better_in(cards)
    cards, scores, notes = ranked_results(cards, scores, suite.rankings.subset)
    board = build_leaderboard(
        cards,
        scores,
        primary_metrics=primary,
        lower_is_better=lower,
        seed=seed_from(RANKINGS, day),
    )
    if notes or left_off:
        board = replace(board, notes=(*board.notes, *notes, *left_off))
    return board, cards


def _without(table: pa.Table | None, partitions: set[tuple[str, str]]) -> pa.Table | None:
    """The rows of ``table`` outside ``partitions`` ((model version, scenario) pairs)."""
    if table is None or not partitions:
        return table
    keys = pc.binary_join_element_wise(table[MODEL_VERSION], table[SCENARIO], "|")
    dropped = pa.array(sorted(f"{v}|{s}" for v, s in partitions), pa.string())
    return table.filter(pc.invert(pc.is_in(keys, dropped)))


def ranked_results(
    cards: pa.Table, scores: pa.Table | None, subset: str = "full"
) -> tuple[pa.Table, pa.Table | None, list[str]]:
    """The metric tables and instance scores a board ranks on, and notes saying how.

    ``subset="full"``: the rows over every evaluated instance. ``subset="clean"`` (the suite's
    ``rankings: {subset: clean}``): each model version × scenario with a clean slice is ranked
    on it: its ``clean`` rows take the place of the full rows with the same metric, family,
    group and perturbation (partition-level figures, computed on all instances only, stay),
    and only its clean instances (``contamination_rate`` 0) enter the rank intervals and the
    paired tests, so two versions are compared on the instances clean for both. A partition
    with no contamination check is ranked on all its instances, and a note names it.
    """
    if subset not in ("full", "clean"):
        raise ValueError(f"rankings subset must be 'full' or 'clean', got {subset!r}")
    full = subset_rows(cards)
    if subset == "full":
        return full, scores, []
    clean = subset_rows(cards, CLEAN)
    if clean.num_rows == 0:
        clean = full.slice(0, 0)
    ranked = set(zip(clean[MODEL_VERSION].to_pylist(), clean[SCENARIO].to_pylist(), strict=True))
    replaced = set(
        zip(
            *(clean[c].to_pylist() for c in (MODEL_VERSION, SCENARIO, *_ROW_KEY)),
            strict=True,
        )
    )
    keep = [
        key not in replaced
        for key in zip(
            *(full[c].to_pylist() for c in (MODEL_VERSION, SCENARIO, *_ROW_KEY)), strict=True
        )
    ]
    rows = pa.concat_tables(
        [full.filter(pa.array(keep, pa.bool_())), _as_full(clean)], promote_options="default"
    )
    unchecked: dict[str, list[str]] = {}
    for version, scenario in sorted(
        set(zip(full[MODEL_VERSION].to_pylist(), full[SCENARIO].to_pylist(), strict=True)) - ranked
    ):
        unchecked.setdefault(version, []).append(scenario)
    notes = [
        f"ranked on the clean subset (rankings.subset: clean): {len(ranked)} version × "
        "scenario partition(s) without the instances a contamination check flagged"
    ]
    notes += [
        f"{version}: not checked for contamination on {', '.join(names)}; ranked on all instances"
        for version, names in unchecked.items()
    ]
    return rows, _clean_instances(scores, ranked), notes


# A scorecard row's place within its partition.
_ROW_KEY = ("metric", "family", "group", "perturbation")


def _as_full(table: pa.Table) -> pa.Table:
    """``table`` with its ``subset`` column emptied: rows the board ranks as headline rows."""
    blank = pa.array([""] * table.num_rows, pa.string())
    index = table.schema.get_field_index("subset")
    if index < 0:
        return table.append_column("subset", blank)
    return table.set_column(index, "subset", blank)


def _clean_instances(scores: pa.Table | None, ranked: set[tuple[str, str]]) -> pa.Table | None:
    """``scores`` without the rows of partitions in ``ranked`` whose instance is not clean
    (its ``contamination_rate`` stat is not 0)."""
    if scores is None or not ranked:
        return scores
    flags = scores.filter(pc.equal(scores["metric"], RATE))
    clean = {
        f"{v}\x1f{s}\x1f{i}"
        for v, s, i, value in zip(
            *(flags[c].to_pylist() for c in (MODEL_VERSION, SCENARIO, "instance_id", "value")),
            strict=True,
        )
        if value == 0
    }
    partition = pc.binary_join_element_wise(scores[MODEL_VERSION], scores[SCENARIO], "\x1f")
    instance = pc.binary_join_element_wise(partition, scores["instance_id"], "\x1f")
    in_ranked = pc.is_in(partition, pa.array(sorted(f"{v}\x1f{s}" for v, s in ranked)))
    is_clean = pc.is_in(instance, pa.array(sorted(clean), pa.string()))
    return scores.filter(pc.or_(pc.invert(in_ranked), is_clean))


def _only(table: pa.Table | None, versions: set[str]) -> pa.Table | None:
    """The rows of ``table`` that belong to ``versions``."""
    if table is None:
        return None
    return table.filter(pc.is_in(table[MODEL_VERSION], pa.array(sorted(versions), pa.string())))
