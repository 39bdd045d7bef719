"""Parquet storage: round trips on local paths and memory://, atomic writes, clear errors."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from assay.storage.parquet import (
    CorruptPartitionError,
    ParquetStore,
    PartitionNotFoundError,
    StorageWriteError,
)


def _table(n: int = 3) -> pa.Table:
    return pa.table({"x": list(range(n)), "s": [f"row{i}" for i in range(n)]})


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> ParquetStore:
    if request.param == "local":
        return ParquetStore(str(tmp_path / "storage"))
    return ParquetStore(f"memory://assay-test-{uuid.uuid4().hex}")


def test_round_trip_single_and_multi_dimension(store):
    store.write("scenario_instances", {"scenario": "boolq"}, _table(3))
    key = {"model_version": "m@v1", "scenario": "boolq"}
    store.write("model_outputs", key, _table(5))
    assert store.read("scenario_instances", {"scenario": "boolq"}).equals(_table(3))
    assert store.read("model_outputs", key).equals(_table(5))
    assert store.partitions("model_outputs") == [key]


def test_rewrite_replaces_partition(store):
    store.write("a", {"p": "k"}, _table(3))
    store.write("a", {"p": "k"}, _table(1))
    assert store.read("a", {"p": "k"}).num_rows == 1


def test_read_all_adds_partition_columns(store):
    store.write("metric_tables", {"model_version": "m@v1", "scenario": "x"}, _table(2))
    store.write("metric_tables", {"model_version": "m@v2", "scenario": "x"}, _table(3))
    table = store.read_all("metric_tables")
    assert table.num_rows == 5
    assert sorted(set(table["model_version"].to_pylist())) == ["m@v1", "m@v2"]
    assert store.read_all("nothing") is None


def test_missing_partition_names_it(store):
    with pytest.raises(PartitionNotFoundError, match=r"model_outputs.*m@v9"):
        store.read("model_outputs", {"model_version": "m@v9", "scenario": "x"})


def test_corrupt_partition_names_it(store):
    key = {"scenario": "boolq"}
    store.write("scenario_instances", key, _table())
    store.fs.pipe_file(store.path("scenario_instances", key), b"not parquet at all")
    with pytest.raises(CorruptPartitionError, match=r"scenario_instances.*boolq"):
        store.read("scenario_instances", key)


def test_failed_write_leaves_old_partition_and_no_temp_file(tmp_path, monkeypatch):
    store = ParquetStore(str(tmp_path / "storage"))
    key = {"scenario": "x"}
    store.write("a", key, _table(2))

    import assay.storage.parquet as storage_module

    def explode(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage_module.os, "replace", explode)
    with pytest.raises(OSError, match="disk full"):
        store.write("a", key, _table(7))
    monkeypatch.undo()
    assert store.read("a", key).num_rows == 2
    leftovers = [p.name for p in (tmp_path / "storage").rglob("*") if p.is_file()]
    assert leftovers == ["part.parquet"]


def test_partitions_within_lists_one_versions_folder(store):
    for version in ("m@v1", "m@v10", "m@v2"):
        for scenario in ("x", "y"):
            store.write("contamination", {"model_version": version, "scenario": scenario}, _table())
    # m@v1's folder only: not m@v10's, whose name starts the same.
    assert store.partitions("contamination", {"model_version": "m@v1"}) == [
        {"model_version": "m@v1", "scenario": "x"},
        {"model_version": "m@v1", "scenario": "y"},
    ]
    assert store.partitions("contamination", {"model_version": "m@v3"}) == []
    assert len(store.partitions("contamination")) == 6


def test_read_many_and_write_many_keep_order(store):
    keys = [{"model_version": f"m@v{i}", "scenario": "x"} for i in range(20)]
    urls = store.write_many("metric_tables", [(k, _table(i + 1)) for i, k in enumerate(keys)])
    assert urls == [store.url("metric_tables", k) for k in keys]
    tables = store.read_many("metric_tables", keys)
    assert [t.num_rows for t in tables] == list(range(1, 21))
    # History copies too, one per write, as with write().
    assert sum(len(c) for c in store.history("metric_tables").values()) == 20
    assert store.write_many("metric_tables", []) == []


def test_read_many_names_the_first_missing_partition(store):
    store.write("model_outputs", {"model_version": "m@v1", "scenario": "x"}, _table())
    keys = [
        {"model_version": "m@v1", "scenario": "x"},
        {"model_version": "m@v7", "scenario": "x"},
        {"model_version": "m@v8", "scenario": "x"},
    ]
    with pytest.raises(PartitionNotFoundError, match=r"m@v7"):
        store.read_many("model_outputs", keys)


def test_write_many_writes_the_others_and_raises_the_failure(tmp_path, monkeypatch):
    store = ParquetStore(str(tmp_path / "storage"))
    real = ParquetStore._put_atomic

    def refuse_v3(self, final, data):
        if "m%40v3" in final or "m@v3" in final:
            raise OSError("refused")
        real(self, final, data)

    monkeypatch.setattr(ParquetStore, "_put_atomic", refuse_v3)
    keys = [{"model_version": f"m@v{i}", "scenario": "x"} for i in range(6)]
    with pytest.raises(StorageWriteError, match=r"m@v3.*refused"):
        store.write_many("metric_tables", [(k, _table()) for k in keys])
    monkeypatch.undo()
    written = store.partitions("metric_tables")
    assert written == [k for k in keys if k["model_version"] != "m@v3"]


def test_partitions_within_includes_a_compacted_versions_partitions(store):
    for version in ("m@v1", "m@v2"):
        for scenario in ("x", "y"):
            store.write("contamination", {"model_version": version, "scenario": scenario}, _table())
    store.compact("contamination", {"model_version": "m@v1"})
    assert store.partitions("contamination", {"model_version": "m@v1"}) == [
        {"model_version": "m@v1", "scenario": "x"},
        {"model_version": "m@v1", "scenario": "y"},
    ]
    assert store.partitions("contamination", {"model_version": "m@v2"}) == [
        {"model_version": "m@v2", "scenario": "x"},
        {"model_version": "m@v2", "scenario": "y"},
    ]


def test_history_copy_names_read_as_strptime_reads_them() -> None:
    """A history copy's write time is read without ``strptime`` where the name is spelled as
    the writer spells it; every name gives what ``strptime`` gives, or its ValueError."""
    from assay.storage.parquet import _STAMP, _written_at

    rng = random.Random(7)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    for _ in range(500):
        when = start + timedelta(microseconds=rng.randrange(10**9 * 10**6))
        stamp = when.strftime(_STAMP)
        assert _written_at(stamp) == when == datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    # Spelled otherwise: strptime's reading (a shorter fraction), or its refusal.
    assert _written_at("20261207T101112.5Z") == datetime(2026, 12, 7, 10, 11, 12, 500000, UTC)
    for bad in ("20261307T101112.000000Z", "20261207T101112.000000", "2026-12-07", ""):
        with pytest.raises(ValueError):
            datetime.strptime(bad, _STAMP)
        with pytest.raises(ValueError):
            _written_at(bad)
