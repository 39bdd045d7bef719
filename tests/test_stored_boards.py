"""The rankings step keeps each day's full leaderboard; the explorer renders it instead of
ranking the day again, and ranks the day itself when the stored board is not the board of the
day's rankings partition."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from sample_clock import sample_store

from assay.compare.standings import leaderboard_of_day
from assay.compare.stored_boards import board_from_json, board_to_json, read_board, write_board
from assay.evaluate.suite import parse_suite
from assay.registry import Registry
from assay.report import ExplorerData
from assay.report.sample import Sample, board_of
from assay.storage.contract import LEADERBOARDS, RANKINGS
from assay.storage.parquet import ParquetStore


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Sample]:
    root = tmp_path_factory.mktemp("stored-boards")
    _, registry, sample = sample_store(root, n_instances=12)
    registry.close()
    return root, sample


@pytest.fixture()
def sample(written, tmp_path):
    """A copy of the written sample for one test to change."""
    root, sample = written
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    yield ParquetStore(str(tmp_path / "storage")), registry, sample
    registry.close()


def _suite(primary: dict[str, str]):
    scenarios = {key: {"scenario": "facts_mc", "primary_metric": m} for key, m in primary.items()}
    return parse_suite({"scenarios": scenarios}, "s.yaml")


def test_each_days_stored_board_is_the_board_ranked_that_day(sample):
    store, _, written = sample
    cards, scores = store.read_all("metric_tables"), store.read_all("instance_scores")
    oldest_first = list(reversed(written.versions))
    for i, day in enumerate(written.days):
        ranked = board_of(cards, scores, oldest_first[: i + 1], written.primary_metrics, day)
        stored = read_board(store, day)
        # repr spells every float exactly, NaN included: rows, intervals, comparisons,
        # family figures, notes.
        assert stored is not None and repr(stored) == repr(ranked)
        assert len(stored.comparisons) == len(ranked.comparisons) > (0 if i else -1)


def test_json_keeps_nan_and_the_exact_floats(sample):
    store, _, written = sample
    board = read_board(store, written.days[-1])
    row = replace(board.rows[0], mean_score=float("nan"), mean_win_rate=0.1 + 0.2)
    odd = replace(board, rows=(row, *board.rows[1:]))
    again = board_from_json(board_to_json(odd))
    assert repr(again) == repr(odd)
    assert again.rows[0].mean_win_rate == 0.30000000000000004


def test_a_board_that_is_not_the_days_rankings_partition_is_not_used(sample):
    store, _, written = sample
    first, last = written.days[0], written.days[-1]
    assert read_board(store, last) is not None
    # The day's rankings were rewritten (by another ranking) after its board was stored.
    store.write(RANKINGS, {"day": last}, store.read(RANKINGS, {"day": first}))
    assert read_board(store, last) is None
    # No board stored for the day (rankings written by code that did not keep one).
    store.delete(LEADERBOARDS, {"day": first})
    assert read_board(store, first) is None
    # A stored document that is not a board.
    store.write(LEADERBOARDS, {"day": written.days[1]}, pa.table({"leaderboard": ['{"rows": 3}']}))
    assert read_board(store, written.days[1]) is None


def test_the_explorer_renders_the_stored_board_and_ranks_only_without_one(sample):
    store, registry, written = sample
    day = written.days[-1]
    suite = _suite(written.primary_metrics)
    stored = read_board(store, day)
    # Same rows as the day's rankings, and a note only the stored copy has.
    marked = replace(stored, notes=(*stored.notes, "read from the stored board"))
    write_board(store, day, marked)
    data = ExplorerData.of_day(store, registry, suite, day)
    assert repr(data.board) == repr(marked)
    # Without a stored board the explorer ranks the day with the suite, as the rankings
    # step does.
    store.delete(LEADERBOARDS, {"day": day})
    ranked, _ = leaderboard_of_day(day, store, registry, suite)
    data = ExplorerData.of_day(store, registry, suite, day)
    assert repr(data.board) == repr(ranked)
    assert "read from the stored board" not in data.board.notes
