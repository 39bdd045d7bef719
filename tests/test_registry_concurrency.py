"""Concurrent writers in separate processes: version numbers and event ids stay gap-free and
in commit order, and a fresh store is migrated once even when every process opens it at once.

Runs on SQLite always, and on a throwaway PostgreSQL cluster (initdb + pg_ctl on loopback)
when the server binaries are installed.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from assay.registry import EventKind, Registry

WORKERS = 8
PER_WORKER = 10


def _writer(url: str, worker: int, barrier, results) -> None:
    """One process: open (maybe migrating), ensure the model, wait for all, register."""
    try:
        with Registry.open(url) as registry:
            registry.get_or_create_model("shared", actor=f"w{worker}")
            barrier.wait(timeout=120)
            versions = [
                registry.create_version("shared", f"hf:/w{worker}/{i}", actor=f"w{worker}").version
                for i in range(PER_WORKER)
            ]
        results.put((worker, versions, None))
    except BaseException as exc:  # report to the parent instead of dying silently
        results.put((worker, [], repr(exc)))


def _run_writers(url: str) -> dict[int, list[int]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, w, barrier, results)) for w in range(WORKERS)]
    for proc in procs:
        proc.start()
    out = {}
    try:
        for _ in procs:
            worker, versions, error = results.get(timeout=300)
            assert error is None, f"worker {worker} failed: {error}"
            out[worker] = versions
    finally:
        for proc in procs:
            proc.join(timeout=60)
    assert all(proc.exitcode == 0 for proc in procs)
    return out


def _check_store(url: str, per_worker: dict[int, list[int]]) -> None:
    total = WORKERS * PER_WORKER
    all_versions = sorted(v for versions in per_worker.values() for v in versions)
    assert all_versions == list(range(1, total + 1))  # no gap, no duplicate
    for versions in per_worker.values():
        assert versions == sorted(versions)
    with Registry.open(url) as registry:
        assert [v.version for v in registry.list_versions("shared")] == list(range(1, total + 1))
        events = registry.events()
        assert [e.kind for e in events].count(EventKind.MODEL_CREATED) == 1
        created = [e for e in events if e.kind is EventKind.VERSION_CREATED]
        ids = [e.id for e in events]
        assert ids == sorted(set(ids))
        # Event ids follow commit order, so version numbers come out in id order too.
        assert [e.version for e in created] == list(range(1, total + 1))
        assert [e.ts for e in events] == sorted(e.ts for e in events)
        by_source = {v.source: v.version for v in registry.list_versions("shared")}
        for worker, versions in per_worker.items():
            assert [by_source[f"hf:/w{worker}/{i}"] for i in range(PER_WORKER)] == versions


def test_concurrent_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    # Nobody opens the file first: the processes also race to create the schema.
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    _check_store(url, _run_writers(url))


# --------------------------------------------------------------------------- PostgreSQL


def test_concurrent_processes_on_postgres(postgres_url: str) -> None:
    _check_store(postgres_url, _run_writers(postgres_url))


def test_postgres_schema_matches_models_and_log_is_append_only(postgres_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    from assay.registry.schema import Base

    with Registry.open(postgres_url) as registry:
        registry.get_or_create_model("append-only-check")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        for statement in ("UPDATE events SET actor = 'mallory'", "DELETE FROM events"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def test_threads_sharing_one_registry(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}") as registry:
        registry.create_model("threaded")

        def register(worker: int) -> list[int]:
            return [
                registry.create_version("threaded", f"hf:/t{worker}/{i}").version for i in range(5)
            ]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(register, range(4)))
        assert sorted(v for versions in results for v in versions) == list(range(1, 21))
