"""The leaderboard of a day: the versions registered by its end, ranked on their results as they
stood at its end.

Rebuilding a past day gives the board shown that day: the registry answers which versions were
registered by then, and the store's history (:meth:`ParquetStore.read_all_as_of`) which metric
tables and instance scores had been written by then. A day ends at midnight UTC.

Two ways to read the results, giving the same board: :func:`leaderboard_of_day` queries the
store (``assay.storage.query``): the metric tables of the registered versions, then one
scenario's instance scores at a time, only the rows the board ranks on, so its memory is
bounded by a scenario rather than the store. :func:`leaderboard_as_of` ranks tables already in
memory (:class:`StoredResults`, every partition loaded).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from assay.compare.ranking import (
    INSTANCE_SCORE_COLUMNS,
    Leaderboard,
    ScoreSource,
    build_leaderboard,
)
from assay.contamination.clean import CLEAN, RATE
from assay.core.digests import seed_from
from assay.core.records import subset_rows
from assay.evaluate.sequential import partial_versions
from assay.evaluate.suite import Suite
from assay.registry import Registry
from assay.scoring.metrics.directions import lower_is_better_in
from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, MODEL_VERSION, RANKINGS, SCENARIO
from assay.storage.parquet import ParquetStore
from assay.storage.query import TablesAsOf


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
    versions = _registered(registry, day)
    cards = _only(results.metric_tables, versions)
    return _leaderboard(day, versions, cards, _only(results.instance_scores, versions), suite)


def leaderboard_of_day(
    day: str, store: ParquetStore, registry: Registry, suite: Suite
) -> tuple[Leaderboard, pa.Table]:
    """:func:`leaderboard_as_of` with the results of ``day`` queried from ``store`` rather
    than loaded: the metric tables of the versions registered by its end, and per scenario on
    the board only the instance scores its rank intervals and paired tests use (the primary
    metric's unperturbed rows, and the contamination flags when ranking on the clean
    subset), a few scenarios in memory at a time (:class:`_ScoresReader`). The same board,
    to the last digit."""
    versions = _registered(registry, day)
    # Each file is read once: no footer cache, which would grow with the store.
    with TablesAsOf(store, end_of_day(day), metadata_cache=False) as tables:
        cards = tables.read(METRIC_TABLES, lambda p: p.get(MODEL_VERSION) in versions)
        plan = [(key, suite[key].metric) for key in suite.keys]
        scores = _ScoresReader(tables, versions, plan, with_rates=suite.rankings.subset == CLEAN)
        return _leaderboard(day, versions, cards, scores, suite)


# Partitions of instance scores read by one query: each query costs DuckDB a fixed part,
# and a compacted file (a version's every scenario) is opened once per query, so scenarios
# are read a batch at a time. DuckDB holds ~150 kB a file while a query runs: this bounds
# that (~300 MB) and a batch's rows (1,000 versions: 2 scenarios a batch).
_BATCH_PARTITIONS = 2048


class _ScoresReader:
    """scenario, metric → the instance scores of ``versions`` a board ranks on (a
    :data:`~assay.compare.ranking.ScoreSource`). The scenarios of ``plan`` (scenario,
    metric pairs, in the order the board asks for them) are read in batches of about
    ``_BATCH_PARTITIONS`` partitions, one query each, and each scenario's rows are handed
    out once (then dropped); anything else is read alone. Safe to call from several
    threads."""

    def __init__(
        self,
        tables: TablesAsOf,
        versions: set[str],
        plan: list[tuple[str, str]],
        *,
        with_rates: bool,
    ) -> None:
        self.tables, self.versions, self.with_rates = tables, versions, with_rates
        sizes: dict[str, int] = {}
        for partition in tables.partitions(INSTANCE_SCORES):
            if partition.get(MODEL_VERSION) in versions:
                scenario = partition.get(SCENARIO, "")
                sizes[scenario] = sizes.get(scenario, 0) + 1
        self.batches: list[list[tuple[str, str]]] = []
        held = 0
        for item in dict.fromkeys(plan):
            size = sizes.get(item[0], 0)
            if not self.batches or held + size > _BATCH_PARTITIONS:
                self.batches.append([])
                held = 0
            self.batches[-1].append(item)
            held += size
        self.batch_of = {item: b for b, batch in enumerate(self.batches) for item in batch}
        self.locks = [threading.Lock() for _ in self.batches]
        self.loaded: dict[int, dict[tuple[str, str], pa.Table]] = {}

    def __call__(self, scenario: str, metric: str) -> pa.Table:
        item = (scenario, metric)
        b = self.batch_of.get(item)
        if b is not None:
            with self.locks[b]:
                if b not in self.loaded:
                    self.loaded[b] = self._read(self.batches[b])
                rows = self.loaded[b].pop(item, None)
            if rows is not None:
                return rows
        return self._read([item])[item]

    def _read(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], pa.Table]:
        """Each of ``items``' rows, from one query."""
        columns = [c for c in INSTANCE_SCORE_COLUMNS if c not in (MODEL_VERSION, SCENARIO)]
        metrics = sorted({metric for _, metric in items})
        scenarios = {scenario for scenario, _ in items}
        where = f"(t.metric IN ({', '.join('?' * len(metrics))}) AND t.perturbation = '')"
        if (
            self.with_rates
        ):  # _clean_instances reads each instance's flag, whatever its perturbation
            where += f" OR t.metric = '{RATE}'"
        rows = self.tables.read(
            INSTANCE_SCORES,
            lambda p: p.get(SCENARIO) in scenarios and p.get(MODEL_VERSION) in self.versions,
            columns=columns,
            where=where,
            params=metrics,
        )
        found = {}
        for scenario, metric in items:
            if rows is None:
                found[(scenario, metric)] = pa.table(
                    {c: pa.array([], pa.string()) for c in INSTANCE_SCORE_COLUMNS}
                )
                continue
            # The rows the scenario's own query would return, in the same order.
            keep = pc.and_(pc.equal(rows["metric"], metric), pc.equal(rows["perturbation"], ""))
            if self.with_rates:
                keep = pc.or_(keep, pc.equal(rows["metric"], RATE))
            found[(scenario, metric)] = rows.filter(
                pc.and_(pc.equal(rows[SCENARIO], scenario), keep)
            )
        return found


def _registered(registry: Registry, day: str) -> set[str]:
    return {v.key for v in registry.list_versions(as_of=end_of_day(day))}


def _leaderboard(
    day: str, versions: set[str], cards: pa.Table | None, scores: ScoreSource, suite: Suite
) -> tuple[Leaderboard, pa.Table]:
    # A partial evaluation (a sequential promotion decision stopped it) is not ranked: its
    # figures cover the first instances of the order only. The board says what it left off.
    partial = partial_versions(cards)
    cards, scores = _without(cards, partial), _scores_without(scores, partial)
    left_off = tuple(
        f"{version} × {scenario}: a partial evaluation (a sequential promotion decision "
        "stopped it), left off the board until a full evaluation completes it"
        for version, scenario in sorted(partial)
    )
    if cards is None or cards.num_rows == 0:
        raise ValueError(
            f"no metric tables for the {len(versions)} model versions registered by "
            f"{end_of_day(day):%Y-%m-%d}; materialize model_outputs and metric_tables first"
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


def _scores_without(scores: ScoreSource, partitions: set[tuple[str, str]]) -> ScoreSource:
    """:func:`_without` for instance scores held in memory or read per scenario."""
    if not partitions or not callable(scores):
        return _without(scores, partitions)

    def read(scenario: str, metric: str) -> pa.Table:
        return _without(scores(scenario, metric), partitions)

    return read


def ranked_results(
    cards: pa.Table, scores: ScoreSource | None, subset: str = "full"
) -> tuple[pa.Table, ScoreSource | None, list[str]]:
    """The metric tables and instance scores a board ranks on, and notes saying how.

    ``subset="full"``: the rows over every evaluated instance. ``subset="clean"`` (the suite's
    ``rankings: {subset: clean}``): each model version × scenario with a clean slice is ranked
    on it: its ``clean`` rows take the place of the full rows with the same metric, family,
    group and perturbation (partition-level figures, computed on all instances only, stay),
    and only its clean instances (``contamination_rate`` 0) enter the rank intervals and the
    paired tests, so two versions are compared on the instances clean for both. A partition
    with no contamination check is ranked on all its instances, and a note names it.
    ``scores`` may be a reader (scenario, metric → rows, :data:`ScoreSource`): the reader
    returned then cleans each scenario's rows as it reads them.
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
    if callable(scores):
        read = scores
        return (
            rows,
            lambda scenario, metric: _clean_instances(read(scenario, metric), ranked),
            notes,
        )
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
