"""What the explorer is built from: the stored tables, the registry's history, the board.

Everything here is read once per build, except the model outputs, the judges' replies and
the scenario instances, which are read one partition at a time while that partition's page
data is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

import pyarrow as pa
import pyarrow.compute as pc

from assay.compare.ranking import Leaderboard
from assay.evaluate.suite import Suite
from assay.registry import Registry
from assay.registry.entities import Event, EventKind, ModelVersion
from assay.storage.parquet import ParquetStore

ALIAS_EVENTS = (EventKind.ALIAS_SET, EventKind.ALIAS_MOVED, EventKind.ALIAS_REMOVED)


@dataclass(frozen=True)
class ExplorerData:
    """The inputs of one explorer build.

    ``board`` is the full leaderboard of ``day`` (with its paired comparisons) and
    ``metric_tables`` / ``instance_scores`` the stored tables behind it, or both None: the
    build then queries them from ``store`` as of the end of ``day``, a scenario or a
    partition at a time (:meth:`of_day`; :mod:`assay.report.results`). ``rankings`` holds
    every stored rankings partition (a ``day`` column), the leaderboards of earlier days.
    ``events`` is the registry's log (alias moves, registrations) and ``versions`` the
    registered versions as they are now. Model outputs and scenario instances are read per
    partition from ``store``.
    """

    day: str
    board: Leaderboard
    metric_tables: pa.Table | None
    instance_scores: pa.Table | None
    rankings: pa.Table | None
    events: Sequence[Event]
    versions: Sequence[ModelVersion]
    store: ParquetStore
    # The metrics ranked lower-is-better; None: read from the stored metric tables of the
    # versions a comparison is computed for, when it is (what :meth:`of_day` leaves).
    lower_is_better: frozenset[str] | None = frozenset()

    @classmethod
    def of_day(
        cls,
        store: ParquetStore,
        registry: Registry,
        suite_or_board: Suite | Leaderboard,
        day: str,
        *,
        rankings: pa.Table | None = None,
    ) -> ExplorerData:
        """The explorer of ``day`` over ``store``, reading its results through the query
        engine as of the end of ``day`` instead of holding them: ``suite_or_board`` is the
        suite or the day's board already ranked; ``rankings`` the stored rankings (read from
        ``store`` when None). Given the suite, the board is the one the rankings step stored
        for the day (:func:`~assay.compare.stored_boards.read_board`), or, when there is none
        that matches the day's rankings partition, ranked with ``leaderboard_of_day``."""
        from assay.compare.standings import leaderboard_of_day
        from assay.compare.stored_boards import read_board

        if isinstance(suite_or_board, Leaderboard):
            board = suite_or_board
        else:
            board = read_board(store, day)
            if board is None:
                board, _ = leaderboard_of_day(day, store, registry, suite_or_board)
        if rankings is None:
            rankings = store.read_all("rankings")
        return cls(
            day=day,
            board=board,
            metric_tables=None,
            instance_scores=None,
            rankings=rankings,
            events=registry.events(),
            versions=registry.versions(),
            store=store,
            lower_is_better=None,
        )

    @property
    def board_versions(self) -> list[str]:
        return [r.model_version for r in self.board.rows]

    def days(self) -> list[str]:
        """Every day with a stored leaderboard, oldest first (the build's day included)."""
        return sorted(set(self._stored_days) | {self.day})

    def ranking_rows(self, day: str, columns: Sequence[str] | None = None) -> list[dict]:
        """The stored leaderboard of ``day``, best first (the build's day: its full board);
        only ``columns`` of each row when given."""
        if day == self.day or self.rankings is None:
            table = self.board.to_table()
        else:
            stored = self.stored_board(day)
            if stored is None:
                return []
            table = stored.take(best_first(stored))
        return (table if columns is None else table.select(list(columns))).to_pylist()

    def stored_board(self, day: str) -> pa.Table | None:
        """The rows of ``rankings`` stored for ``day`` (in the table's order, one chunk), if
        any."""
        return self._stored_days.get(day)

    @cached_property
    def _stored_days(self) -> dict[str, pa.Table]:
        """``rankings`` split by day in one pass: a filter per day read the whole table
        again for each day and page, which grew with the square of the days kept."""
        if self.rankings is None:
            return {}
        # One chunk first: a take from a table of many chunks (one a stored day) goes through
        # them all each time.
        table = self.rankings.combine_chunks()
        at: dict[str, list[int]] = {}
        for i, day in enumerate(table["day"].to_pylist()):
            at.setdefault(day, []).append(i)
        return {day: table.take(pa.array(rows, pa.int64())) for day, rows in at.items()}

    def outputs(self, version: str, scenario: str) -> pa.Table | None:
        where = {"model_version": version, "scenario": scenario}
        return (
            self.store.read("model_outputs", where)
            if self.store.exists("model_outputs", where)
            else None
        )

    def instances(self, scenario: str) -> pa.Table | None:
        where = {"scenario": scenario}
        if not self.store.exists("scenario_instances", where):
            return None
        return self.store.read("scenario_instances", where)


def best_first(board: pa.Table) -> pa.Array:
    """The order of a stored board's rows, best first: by rank, then by version."""
    return pc.sort_indices(board, [("rank", "ascending"), ("model_version", "ascending")])


def end_of(day: str) -> datetime:
    """The first instant after ``day`` (UTC): what "as of day" means for the registry."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)


def alias_holders(events: Sequence[Event], as_of: datetime) -> dict[str, list[str]]:
    """version key → the aliases it held at ``as_of``, replayed from the event log."""
    holder: dict[tuple[str, str], str | None] = {}
    for event in sorted(events, key=lambda e: e.id):
        if event.kind not in ALIAS_EVENTS or event.ts > as_of or event.model is None:
            continue
        alias = str(event.payload.get("alias"))
        after = event.payload.get("after")
        holder[(event.model, alias)] = None if after is None else f"{event.model}@v{after}"
    held: dict[str, list[str]] = {}
    for (_model, alias), key in sorted(holder.items()):
        if key is not None:
            held.setdefault(key, []).append(alias)
    return held


def alias_moves(events: Sequence[Event]) -> list[dict]:
    """Every alias event as a row: when, which model's alias, from and to which version."""
    rows = []
    for e in sorted(events, key=lambda e: e.id):
        if e.kind not in ALIAS_EVENTS or e.model is None:
            continue
        before, after = e.payload.get("before"), e.payload.get("after")
        rows.append(
            {
                "ts": e.ts.isoformat(),
                "kind": e.kind.value,
                "model": e.model,
                "alias": str(e.payload.get("alias")),
                "before": None if before is None else f"{e.model}@v{before}",
                "after": None if after is None else f"{e.model}@v{after}",
                "actor": e.actor,
            }
        )
    return rows


def split_by(table: pa.Table, column: str) -> Mapping[str, pa.Table]:
    """``table`` split into one table per value of ``column`` (one pass, sorted by value)."""
    if table.num_rows == 0:
        return {}
    order = pc.sort_indices(table, [(column, "ascending")])
    table = table.take(order)
    values = table[column].combine_chunks()
    out, start = {}, 0
    runs = pc.run_end_encode(values)
    ends = runs.run_ends.to_pylist()
    for end, value in zip(ends, runs.values.to_pylist(), strict=True):
        out[value] = table.slice(start, end - start)
        start = end
    return out
