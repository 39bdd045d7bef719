"""The deployment's Dagster storage (deploy/pooled_postgres.py) on a real Postgres: the same
runs and events as dagster-postgres's storage, over connections kept open."""

from __future__ import annotations

import multiprocessing

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    instance_for_test,
    materialize,
)
from sqlalchemy import Engine, event

pytest.importorskip("dagster_postgres")

PARTS = StaticPartitionsDefinition([f"p{i}" for i in range(12)])


@asset(partitions_def=PARTS)
def squares(context) -> MaterializeResult:
    return MaterializeResult(metadata={"partitions": len(context.partition_keys)})


@pytest.fixture
def dagster_db(postgres_database: str) -> str:
    # dagster-postgres speaks psycopg2 (the session cluster's URL names psycopg 3).
    return postgres_database.replace("postgresql+psycopg://", "postgresql+psycopg2://")


def _storage(kind: str, url: str) -> dict:
    if kind == "postgres":
        return {"postgres": {"postgres_url": url}}
    return {
        "custom": {
            "module": "deploy.pooled_postgres",
            "class": "PooledPostgresStorage",
            "config": {"postgres_url": url},
        }
    }


class ConnectionCount:
    """New database connections opened by any SQLAlchemy engine in this process."""

    def __init__(self) -> None:
        self.opened = 0

    def __enter__(self) -> ConnectionCount:
        event.listen(Engine, "connect", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "connect", self._count)

    def _count(self, *args: object) -> None:
        self.opened += 1


def _run_range(instance: DagsterInstance) -> None:
    result = materialize(
        [squares],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "p0",
            "dagster/asset_partition_range_end": "p11",
        },
    )
    assert result.success


def _materialized(instance: DagsterInstance) -> set[str]:
    return set(instance.get_materialized_partitions(AssetKey("squares")))


@pytest.mark.parametrize("kind", ["postgres", "pooled"])
def test_a_range_run_is_stored_the_same(kind, dagster_db, tmp_path):
    with instance_for_test(
        overrides={"storage": _storage(kind, dagster_db)}, temp_dir=str(tmp_path)
    ) as instance:
        _run_range(instance)
        assert _materialized(instance) == set(PARTS.get_partition_keys())
        (run,) = instance.get_runs()
        records = instance.fetch_materializations(AssetKey("squares"), limit=100).records
        assert {r.run_id for r in records} == {run.run_id}
        assert len(records) == 12


def test_the_pooled_storage_opens_a_few_connections_where_the_plain_one_opens_one_per_write(
    dagster_db, tmp_path
):
    opened = {}
    for kind in ("postgres", "pooled"):
        (tmp_path / kind).mkdir()
        with instance_for_test(
            overrides={"storage": _storage(kind, dagster_db)}, temp_dir=str(tmp_path / kind)
        ) as instance:
            instance.get_runs()  # tables created and first connections made
            with ConnectionCount() as count:
                _run_range(instance)
            opened[kind] = count.opened
    # A range run of 12 partitions writes at least 12 planned events and 12 materializations.
    assert opened["postgres"] >= 24
    # The pool keeps two connections per storage (the event log nests one in another).
    assert opened["pooled"] <= 4


def _child_writes(instance: DagsterInstance, run_id: str, queue) -> None:
    """In a forked child: write an event through the instance inherited from the parent."""
    with ConnectionCount() as count:
        instance.report_engine_event("written by a forked child", instance.get_run_by_id(run_id))
    queue.put(count.opened)


def test_a_forked_child_opens_its_own_connections(dagster_db, tmp_path):
    with instance_for_test(
        overrides={"storage": _storage("pooled", dagster_db)}, temp_dir=str(tmp_path)
    ) as instance:
        _run_range(instance)
        (run,) = instance.get_runs()
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child_writes, args=(instance, run.run_id, queue))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert queue.get(timeout=5) >= 1
        # The parent's kept connection still answers after the child wrote and exited.
        messages = [e.message for e in instance.all_logs(run.run_id)]
        assert "written by a forked child" in messages
