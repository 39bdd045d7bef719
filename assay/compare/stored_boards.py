"""A day's full leaderboard kept next to its ``rankings`` partition.

The ``rankings`` table holds one row per version (ranks, intervals, scores); the explorer also
needs what that table leaves out: the paired comparisons, the family figures and the notes.
The rankings step stores the whole :class:`Leaderboard` of the day as one JSON document
(``leaderboards`` table, partition ``day``), so that the explorer renders the board the
rankings step ranked instead of ranking the day a second time.

A stored board is used only while it is the board of the stored rankings partition (its rows
equal that partition's rows); otherwise, e.g. a rankings partition written by code older than
this module, :func:`read_board` answers None and the reader ranks the day itself.
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from assay.compare.ranking import Leaderboard
from assay.storage.contract import LEADERBOARDS, RANKINGS
from assay.storage.parquet import ParquetStore

_BOARD = TypeAdapter(Leaderboard)
_SCHEMA = pa.schema([("leaderboard", pa.large_string())])


def board_to_json(board: Leaderboard) -> str:
    """``board`` as JSON (floats exact, NaN kept as ``NaN``)."""
    return json.dumps(dataclasses.asdict(board), ensure_ascii=False, allow_nan=True)


def board_from_json(text: str) -> Leaderboard:
    """The :class:`Leaderboard` that :func:`board_to_json` wrote."""
    return _BOARD.validate_python(json.loads(text))


def write_board(store: ParquetStore, day: str, board: Leaderboard) -> str:
    """Store ``board`` as the full leaderboard of ``day``; returns the file's URL."""
    table = pa.table({"leaderboard": [board_to_json(board)]}, schema=_SCHEMA)
    return store.write(LEADERBOARDS, {"day": day}, table)


def read_board(store: ParquetStore, day: str) -> Leaderboard | None:
    """The stored full leaderboard of ``day``, or None when there is none or it is not the
    board of the day's stored ``rankings`` partition (older, newer, or unreadable)."""
    where = {"day": day}
    if not (store.exists(LEADERBOARDS, where) and store.exists(RANKINGS, where)):
        return None
    try:
        stored = store.read(LEADERBOARDS, where)
        board = board_from_json(stored["leaderboard"][0].as_py())
    except (OSError, ValueError, KeyError, IndexError, ValidationError):
        return None
    rankings = store.read(RANKINGS, where)
    return board if _rows(rankings) == _rows(board.to_table()) else None


def _rows(table: pa.Table) -> str:
    """A table's rows as text, NaN equal to NaN (not so in Arrow's comparison)."""
    rows = table.drop_columns([c for c in table.column_names if c == "day"]).to_pylist()
    return json.dumps(rows, allow_nan=True)
