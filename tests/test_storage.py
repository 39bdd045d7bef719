"""Parquet storage: round trips on local paths and memory://, atomic writes, clear errors."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from assay.storage.parquet import CorruptPartitionError, ParquetStore, PartitionNotFoundError


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
