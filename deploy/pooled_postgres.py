"""Dagster's Postgres storage, keeping one connection open per storage and process.

``dagster-postgres`` opens a new database connection for every statement outside its
webserver (SQLAlchemy's ``NullPool``): each event a run writes (a range run writes a planned
event per partition and asset, then a materialization per partition) pays a connection's
set-up, and with password authentication (SCRAM) its key derivation on both sides. This
storage is the same storage with a pool, as its webserver has: two connections kept per
storage (runs, event log, schedules), more opened and closed while several threads write at
once.

A process holds at most six idle connections; a Celery worker builds its instance per task,
so a task's connections go with it. A forked child forgets the connections it inherited (they
belong to the parent) and opens its own. Enable in ``dagster.yaml``::

    storage:
      custom:
        module: deploy.pooled_postgres
        class: PooledPostgresStorage
        config:
          postgres_url:
            env: ASSAY_DAGSTER_PG_URL

``config`` takes what ``storage: postgres`` takes. Measured by ``benchmarks/bench_deploy.py``.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

# Connections kept per storage: the event log nests a second connection in the first (an
# event's row, then its asset index), so two keep a run's writes on open connections.
POOL_SIZE = 2
# Connections a storage may open beyond those while threads write at the same time (the
# event watcher, a step's log handlers); they are closed when given back.
MAX_OVERFLOW = 10
# A kept connection older than this is replaced (a proxy or firewall may drop idle ones).
POOL_RECYCLE_S = 3600


class PooledPostgresStorage(DagsterPostgresStorage):
    """:class:`DagsterPostgresStorage` with a connection pool in every process."""

    def __init__(self, postgres_url: str, **kwargs: Any) -> None:
        super().__init__(postgres_url, **kwargs)
        storages = (self._run_storage, self._event_log_storage, self._schedule_storage)
        for storage in storages:
            _pool(storage)
        refs = [weakref.ref(s) for s in storages]
        os.register_at_fork(after_in_child=lambda: _forget_inherited(refs))

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            inst_data=inst_data,
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


def _pool(storage: Any) -> None:
    """Give one of dagster-postgres's storages a pooled engine in place of its own.

    Every connection is checked with a ping when taken from the pool, so a database that
    restarted costs a reconnection, not a failed statement."""
    kwargs: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_recycle": POOL_RECYCLE_S,
        "pool_pre_ping": True,
    }
    options = storage._engine.url.query.get("options")
    if options:  # as dagster-postgres does for its webserver's pool
        kwargs["connect_args"] = {"options": options}
    unpooled = storage._engine
    storage._engine = create_pg_engine(storage.postgres_url, storage._token_provider, **kwargs)
    unpooled.dispose()


def _forget_inherited(refs: list[weakref.ref]) -> None:
    """In a forked child: drop the parent's pooled connections without closing them."""
    for ref in refs:
        storage = ref()
        if storage is not None:
            storage._engine.dispose(close=False)
