"""Retention: retired versions' files folded into one per table, read back as they were."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_rankings_query import DAYS, REGISTERED, _at, _results, _stored, _suite

from assay.compare.standings import StoredResults, end_of_day, leaderboard_as_of, leaderboard_of_day
from assay.registry import Registry
from assay.storage.compacted import CompactionError
from assay.storage.parquet import ParquetStore
from assay.storage.query import TablesAsOf
from assay.storage.retention import (
    RETAINED_TABLES,
    RetentionPolicy,
    compact_version,
    retired_versions,
)

TABLES = ("instance_scores", "metric_tables")


def _boards(store: ParquetStore, registry: Registry) -> dict[str, tuple[str, ...]]:
    """Every day's board and its metric tables, spelled exactly (repr writes every float,
    NaN included), by both readers: loaded (read_all_as_of) and queried (DuckDB)."""
    suite = _suite("clean")
    found = {}
    for day in DAYS:
        loaded, loaded_cards = leaderboard_as_of(
            day, StoredResults.of_day(store, day), registry, suite
        )
        queried, queried_cards = leaderboard_of_day(day, store, registry, suite)
        found[day] = tuple(
            repr(x)
            for x in (
                loaded,
                loaded.comparisons_table().to_pylist(),
                loaded_cards.to_pylist(),
                queried,
                queried_cards.to_pylist(),
            )
        )
    return found


def _listing(store: ParquetStore) -> dict[str, object]:
    """What every reader of the store finds: partitions, each one's latest table, history
    times, and each day's as-of tables (rows and columns by name); repr spells NaN."""
    seen: dict[str, object] = {}
    for asset in TABLES:
        partitions = store.partitions(asset)
        seen[f"{asset} partitions"] = partitions
        seen[f"{asset} latest"] = [
            (str(t.schema), repr(t.to_pylist())) for t in (store.read(asset, p) for p in partitions)
        ]
        seen[f"{asset} exists"] = [store.exists(asset, p) for p in partitions]
        seen[f"{asset} history"] = {
            key: [when for when, _ in copies] for key, copies in store.history(asset).items()
        }
        for day in DAYS:
            chosen = store.files_as_of(asset, end_of_day(day))
            seen[f"{asset} files {day}"] = [p for p, _ in chosen]
            table = store.read_all_as_of(asset, end_of_day(day))
            seen[f"{asset} rows {day}"] = sorted(
                repr(row) for row in table.select(sorted(table.column_names)).to_pylist()
            )
    return seen


def _files(root: str, folder: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, names in os.walk(os.path.join(root, folder))
        for f in names
    )


def test_past_boards_are_the_same_after_compaction(tmp_path):
    store, registry = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    boards, listing = _boards(store, registry), _listing(store)
    # Per table, from WRITES: 12 history copies, and a latest file for each of the 10
    # partitions they wrote plus NO_HISTORY's.
    assert len(_files(store.root, "instance_scores")) == 11
    assert len(_files(store.root, "_history")) == 2 * 12

    done = [compact_version(store, version) for version in REGISTERED]

    # Each version's files in each table are gone, one compacted file per table holds them.
    assert _files(store.root, "instance_scores") == []
    assert _files(store.root, "metric_tables") == []
    assert _files(store.root, "_history") == []
    assert _files(store.root, "_compacted") == sorted(
        f"_compacted/{table}/model_version={version}.parquet"
        for table in TABLES
        for version in REGISTERED
    )
    assert sum(d.files_removed for d in done) == 2 * (12 + 11)
    # Every reader finds the same, and every day's board is the same to the last digit.
    assert _listing(store) == listing
    assert _boards(store, registry) == boards


def test_a_memory_store_compacts_and_reads_the_same(tmp_path):
    url = f"memory://retention-{tmp_path.name}"
    store, registry = _stored(url, f"sqlite:///{tmp_path / 'r.db'}")
    try:
        boards, listing = _boards(store, registry), _listing(store)
        for version in REGISTERED:
            compact_version(store, version)
        assert store.fs.find(f"{store.root}/_history") == []
        assert len(store.fs.find(f"{store.root}/_compacted")) == 2 * len(REGISTERED)
        assert _listing(store) == listing
        assert _boards(store, registry) == boards
    finally:
        store.fs.rm(store.root, recursive=True)


def test_a_compaction_stopped_halfway_counts_nothing_twice(tmp_path, monkeypatch):
    store, registry = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    boards, listing = _boards(store, registry), _listing(store)
    remove = store.fs.rm_file
    removed = []

    def crash_after_two(path):
        if len(removed) == 2:
            raise OSError("the machine stopped")
        removed.append(path)
        remove(path)

    monkeypatch.setattr(store.fs, "rm_file", crash_after_two)
    with pytest.raises(OSError, match="stopped"):
        compact_version(store, "m@v1")
    # The compacted file is complete and most originals are still there: both are stored,
    # each copy is read once.
    assert os.path.exists(store.compacted_path("instance_scores", {"model_version": "m@v1"}))
    assert len(_files(store.root, "_history/instance_scores/model_version=m@v1")) >= 2
    assert _listing(store) == listing
    assert _boards(store, registry) == boards
    monkeypatch.setattr(store.fs, "rm_file", remove)
    again = compact_version(store, "m@v1")
    # v1 per table: 4 history copies (quiz twice, sums, facts) and 3 latest files; 2 went.
    assert again.files_removed == 2 * (4 + 3) - 2
    assert _files(store.root, "_history/metric_tables/model_version=m@v1") == []
    assert _listing(store) == listing
    assert _boards(store, registry) == boards


def test_a_version_written_again_after_compaction(tmp_path):
    store, registry = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    boards = _boards(store, registry)
    compact_version(store, "m@v1")
    # Un-archived and evaluated again on day 4: the new files are read, past days unchanged.
    later = ParquetStore(store.base_url, clock=lambda: _at(4, 9))
    scores, card = _results("m@v1", "quiz", 99)
    where = {"model_version": "m@v1", "scenario": "quiz"}
    later.write("instance_scores", where, scores)
    later.write("metric_tables", where, card)
    assert later.read("metric_tables", where).equals(card)
    assert _boards(later, registry) == boards
    # Its history: WRITES wrote v1/quiz on day 1 and day 2, and now day 4.
    times = [when for when, _ in later.history("metric_tables")[tuple(where.items())]]
    assert times == [_at(1, 15), _at(2, 8), _at(4, 9)]
    # Compacting again folds the new files in; the reads stay the same.
    listing = _listing(later)
    assert compact_version(later, "m@v1").files_removed == 2 * 2
    assert later.read("metric_tables", where).equals(card)
    assert _listing(later) == listing
    assert _boards(later, registry) == boards


def test_a_compacted_partition_reads_back_as_written(tmp_path):
    store = ParquetStore(str(tmp_path / "s"), clock=lambda: _at(1, 9))
    odd = pa.table(
        {"z": pa.array([3, 1], pa.int32()), "a": ["x", None], "gone": pa.nulls(2)}
    ).replace_schema_metadata({"note": "kept"})
    wide = pa.table({"a": ["y"], "z": pa.array([7], pa.int32()), "extra": [1.5]})
    empty = pa.table({"a": pa.array([], pa.string())})
    tables = {"s1": odd, "s2": wide, "s3": empty}
    for scenario, table in tables.items():
        store.write("model_outputs", {"model_version": "m@v1", "scenario": scenario}, table)
    modified = datetime(2026, 11, 10, 12, tzinfo=UTC)
    for scenario in tables:
        path = store.path("model_outputs", {"model_version": "m@v1", "scenario": scenario})
        os.utime(path, (modified.timestamp(), modified.timestamp()))
    store.compact("model_outputs", {"model_version": "m@v1"})

    fresh = ParquetStore(store.base_url)  # no cached manifests
    for scenario, table in tables.items():
        where = {"model_version": "m@v1", "scenario": scenario}
        assert fresh.exists("model_outputs", where)
        read = fresh.read("model_outputs", where)
        assert read.schema.equals(table.schema, check_metadata=True)
        assert read.equals(table)
        assert fresh.read("model_outputs", where, columns=["a"]).equals(table.select(["a"]))
        assert pq.read_table(pa.BufferReader(fresh.read_bytes("model_outputs", where))).equals(
            table
        )
    assert not fresh.exists("model_outputs", {"model_version": "m@v1", "scenario": "s4"})
    # No history: a latest file counts from its modification time, kept through compaction.
    assert fresh.files_as_of("model_outputs", modified) == []
    later = modified + timedelta(seconds=1)
    assert [p["scenario"] for p, _ in fresh.files_as_of("model_outputs", later)] == list(tables)
    with TablesAsOf(fresh, later) as query:
        rows = query.read("model_outputs")
    assert rows["scenario"].to_pylist() == ["s1", "s1", "s2"]
    assert rows["z"].to_pylist() == [3, 1, 7]
    assert rows["extra"].to_pylist() == [None, None, 1.5]


def test_a_deleted_partition_is_gone_from_its_compacted_file_too(tmp_path):
    """``delete`` reads the same on a compacted version as on its plain files: the
    partition's latest table is gone, the others and the history copies stay."""
    plain, registry = _stored(str(tmp_path / "plain"), f"sqlite:///{tmp_path / 'p.db'}")
    folded, _ = _stored(str(tmp_path / "folded"), f"sqlite:///{tmp_path / 'f.db'}")
    compact_version(folded, "m@v1")
    quiz = {"model_version": "m@v1", "scenario": "quiz"}
    sums = {"model_version": "m@v1", "scenario": "sums"}
    # A table without history (its copy is the latest file) and one with history.
    judge = pa.table({"instance_id": ["q1"], "reply": ["yes"]})
    for store in (plain, folded):
        store.write("judge_replies", quiz, judge)
    compact_version(folded, "m@v1")
    assert folded.fs.find(f"{folded.root}/judge_replies") == []

    for store in (plain, folded):
        store.delete("judge_replies", quiz)
        store.delete("metric_tables", quiz)
    for store in (plain, folded):
        fresh = ParquetStore(store.base_url)  # no cached manifests
        assert not fresh.exists("judge_replies", quiz)
        assert not fresh.exists("metric_tables", quiz)
        assert fresh.exists("metric_tables", sums)
        assert fresh.partitions("judge_replies") == []
        assert quiz not in fresh.partitions("metric_tables")
    assert (
        ParquetStore(folded.base_url)
        .read("metric_tables", sums)
        .equals(plain.read("metric_tables", sums))
    )
    # The history copies stay: a past day's board is the same in both stores.
    assert _boards(ParquetStore(folded.base_url), registry) == _boards(plain, registry)


def test_columns_whose_types_disagree_are_not_compacted(tmp_path):
    store = ParquetStore(str(tmp_path / "s"))
    store.write("metric_tables", {"model_version": "m@v1", "scenario": "a"}, pa.table({"x": [1]}))
    store.write("metric_tables", {"model_version": "m@v1", "scenario": "b"}, pa.table({"x": ["1"]}))
    before = _files(store.root, ".")
    with pytest.raises(CompactionError, match=r"metric_tables.*do not agree"):
        store.compact("metric_tables", {"model_version": "m@v1"})
    assert _files(store.root, ".") == before  # nothing written, nothing removed


def test_retired_versions_follow_the_archived_stage_and_its_age(tmp_path, monkeypatch):
    now = [datetime(2026, 10, 1, tzinfo=UTC)]
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", clock=lambda: now[0])
    registry.create_model("m")
    for _ in range(5):
        registry.create_version("m", "hf:/m")
    now[0] = datetime(2026, 10, 2, tzinfo=UTC)
    registry.transition_stage("m", 1, "Archived")  # 40 days before Nov 11
    registry.transition_stage("m", 3, "Archived")
    registry.set_alias("m", "legacy", 3)  # archived but still named by an alias
    registry.transition_stage("m", 4, "Archived")
    now[0] = datetime(2026, 10, 3, tzinfo=UTC)
    registry.transition_stage("m", 4, "Staging")  # brought back: not retired
    now[0] = datetime(2026, 11, 1, tzinfo=UTC)
    registry.transition_stage("m", 2, "Archived")  # 10 days before Nov 11
    at = datetime(2026, 11, 11, tzinfo=UTC)

    assert [r.key for r in retired_versions(registry, at, RetentionPolicy(30))] == ["m@v1"]
    assert retired_versions(registry, at, RetentionPolicy(30))[0].archived_at == datetime(
        2026, 10, 2, tzinfo=UTC
    )
    assert [r.key for r in retired_versions(registry, at, RetentionPolicy(0))] == [
        "m@v1",
        "m@v2",
    ]
    monkeypatch.setenv("ASSAY_RETENTION_ARCHIVED_DAYS", "9.5")
    assert [r.key for r in retired_versions(registry, at)] == ["m@v1", "m@v2"]
    monkeypatch.setenv("ASSAY_RETENTION_ARCHIVED_DAYS", "a month")
    with pytest.raises(ValueError, match="ASSAY_RETENTION_ARCHIVED_DAYS='a month'"):
        RetentionPolicy.from_env()


def test_the_retained_tables_are_the_version_by_scenario_tables():
    assert set(RETAINED_TABLES) >= set(TABLES) | {"model_outputs"}
