"""Parquet partitions on S3 through s3fs, against a real S3 API server (moto) on loopback.

The server is frozen (SIGSTOP) to play an outage: it accepts connections and never answers,
as a hung or partitioned object store does. A short outage is ridden out by the client's
retries; a long one ends in an error that names the partition, with the previous version of
the partition left whole.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("s3fs", reason="the deploy extra (s3fs) is not installed")
pytest.importorskip("moto", reason="the deploy extra (moto[server]) is not installed")

from assay.storage.parquet import ParquetStore, StorageWriteError
from assay.storage.query import TablesAsOf
from deploy.stack import free_port, http_ok, wait_until

PARTITION = {"model_version": "m@v1", "scenario": "boolq"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until("moto", lambda: http_ok(f"{endpoint}/moto-api/"), 60, Path(log))
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="t",
            aws_secret_access_key="t",
            region_name="us-east-1",
        ).create_bucket(Bucket="assay-storage-test")
        yield endpoint, server, log
    finally:
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(20)


def _store(
    endpoint: str,
    *,
    timeout_s: float,
    attempts: int,
    clock=None,
    base: str = "s3://assay-storage-test/assay",
    put_timeout_s: float = 60,
) -> ParquetStore:
    options = {
        "key": "t",
        "secret": "t",
        "endpoint_url": endpoint,
        "skip_instance_cache": True,
        "config_kwargs": {
            "connect_timeout": timeout_s,
            "read_timeout": timeout_s,
            "retries": {"max_attempts": attempts, "mode": "standard"},
        },
    }
    return ParquetStore(base, storage_options=options, clock=clock, put_timeout_s=put_timeout_s)


def test_partitions_round_trip_and_are_listed(s3):
    endpoint, _, _ = s3
    store = _store(endpoint, timeout_s=10, attempts=3)
    table = pa.table({"x": [1, 2, 3]})
    url = store.write("model_outputs", PARTITION, table)
    assert (
        url
        == "s3://assay-storage-test/assay/model_outputs/model_version=m@v1/scenario=boolq/part.parquet"
    )
    assert store.read("model_outputs", PARTITION).equals(table)
    # Another process's write is seen by a store that listed before (no stale listing).
    other = _store(endpoint, timeout_s=10, attempts=3)
    assert other.partitions("model_outputs") == [PARTITION]
    second = {"model_version": "m@v2", "scenario": "boolq"}
    store.write("model_outputs", second, table)
    assert sorted(p["model_version"] for p in other.partitions("model_outputs")) == ["m@v1", "m@v2"]


def _requests(log: Path) -> list[str]:
    """The requests the S3 server logged so far, as ``METHOD /path``."""
    lines = log.read_text(errors="replace").splitlines()
    return [" ".join(line.split('"')[1].split()[:2]) for line in lines if ' HTTP/1.1" ' in line]


PARTS = "model_version=m@v1/scenario=boolq"


def test_a_write_is_one_put_per_file_and_makes_no_bucket(s3):
    endpoint, _, log = s3
    # A base of its own: the other tests read whole tables under the shared one.
    store = _store(endpoint, timeout_s=10, attempts=3, base="s3://assay-storage-test/puts")
    before = len(_requests(log))
    store.write("metric_tables", PARTITION, pa.table({"x": [1]}))  # a table with history
    sent = _requests(log)[before:]
    # The history copy and the latest file: two PUTs and nothing else (no bucket probe).
    assert [r.split()[0] for r in sent] == ["PUT", "PUT"], sent
    assert sent[1] == f"PUT /assay-storage-test/puts/metric_tables/{PARTS}/part.parquet"
    # A bucket that does not exist is not created: the write fails and names the partition.
    missing = _store(endpoint, timeout_s=10, attempts=1, base="s3://no-such-bucket/assay")
    with pytest.raises(StorageWriteError, match=r"metric_tables.*boolq.*no-such-bucket"):
        missing.write("metric_tables", PARTITION, pa.table({"x": [1]}))
    assert "no-such-bucket" not in missing.fs.ls("")


def test_metric_tables_as_they_stood_at_an_instant_on_s3(s3):
    endpoint, _, _ = s3
    times = iter(datetime(2026, 11, d, 12, tzinfo=UTC) for d in (10, 12))
    store = _store(endpoint, timeout_s=10, attempts=3, clock=lambda: next(times))
    store.write("metric_tables", PARTITION, pa.table({"mean": [0.25]}))
    store.write("metric_tables", PARTITION, pa.table({"mean": [0.75]}))
    other = _store(endpoint, timeout_s=10, attempts=3)
    then = other.read_all_as_of("metric_tables", datetime(2026, 11, 11, tzinfo=UTC))
    assert then["mean"].to_pylist() == [0.25] and then["scenario"].to_pylist() == ["boolq"]
    now = other.read_all_as_of("metric_tables", datetime(2026, 11, 13, tzinfo=UTC))
    assert now["mean"].to_pylist() == [0.75] == other.read_all("metric_tables")["mean"].to_pylist()
    assert other.read_all_as_of("metric_tables", datetime(2026, 11, 9, tzinfo=UTC)) is None


def test_the_duckdb_read_on_s3_is_the_as_of_read(s3):
    """``rankings`` queries S3 through s3fs registered with DuckDB (assay.storage.query)."""
    endpoint, _, _ = s3
    times = iter(datetime(2026, 11, d, 12, tzinfo=UTC) for d in (10, 10, 12))
    store = _store(endpoint, timeout_s=10, attempts=3, clock=lambda: next(times))
    other_partition = {"model_version": "m@v2", "scenario": "boolq"}
    store.write(
        "instance_scores", PARTITION, pa.table({"metric": ["acc", "f1"], "value": [1.0, 0.5]})
    )
    store.write("instance_scores", other_partition, pa.table({"metric": ["acc"], "value": [0.0]}))
    store.write("instance_scores", PARTITION, pa.table({"metric": ["acc"], "value": [0.0]}))
    other = _store(endpoint, timeout_s=10, attempts=3)
    then = datetime(2026, 11, 11, tzinfo=UTC)
    with TablesAsOf(other, then) as tables:
        rows = tables.read("instance_scores", where="t.metric = ?", params=["acc"])
        assert rows.to_pylist() == [
            {"metric": "acc", "value": 1.0, "model_version": "m@v1", "scenario": "boolq"},
            {"metric": "acc", "value": 0.0, "model_version": "m@v2", "scenario": "boolq"},
        ]
        everything = tables.read("instance_scores")
    assert everything.equals(other.read_all_as_of("instance_scores", then))


def test_a_short_outage_is_ridden_out(s3):
    endpoint, server, _ = s3
    store = _store(endpoint, timeout_s=2, attempts=8)
    server.send_signal(signal.SIGSTOP)
    resume = threading.Timer(3.0, server.send_signal, args=(signal.SIGCONT,))
    resume.start()
    try:
        store.write("metric_tables", PARTITION, pa.table({"x": [42]}))
    finally:
        resume.join()
        server.send_signal(signal.SIGCONT)
    assert store.read("metric_tables", PARTITION).column("x").to_pylist() == [42]


def test_a_long_outage_names_the_partition_and_leaves_the_old_one_whole(s3, monkeypatch):
    import s3fs

    endpoint, server, _ = s3
    # s3fs tries each call 5 times with backoff on top of botocore's attempts; what is tested
    # is what the store says once the filesystem gives up, so one try keeps the outage short.
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    # The client's read timeout does not bound an upload; the store's own limit does.
    store = _store(endpoint, timeout_s=1, attempts=2, put_timeout_s=3)
    old = pa.table({"x": list(range(1000))})
    store.write("instance_scores", PARTITION, old)
    server.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StorageWriteError) as caught:
            store.write("instance_scores", PARTITION, pa.table({"x": [0]}))
    finally:
        server.send_signal(signal.SIGCONT)
    message = str(caught.value)
    assert "instance_scores" in message and "model_version=m@v1" in message
    assert "scenario=boolq" in message and "s3://assay-storage-test/" in message
    assert "no answer from the object store within 3 s" in message
    time.sleep(0.5)  # the thawed server finishes what it had accepted
    assert store.read("instance_scores", PARTITION).equals(old)
