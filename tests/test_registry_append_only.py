"""The event log refuses every SQL path that would rewrite it, on SQLite and on Postgres, when
the statements come straight to the database (not through the registry's API)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from assay.registry import Registry

_ROW = "(ts, kind, actor, payload) VALUES ('2020-01-01 00:00:00', 'alias_set', 'mallory', '{}')"
_ROW_AT = (
    "(id, ts, kind, actor, payload) "
    "VALUES ({id}, '2020-01-01 00:00:00', 'alias_set', 'mallory', '{{}}')"
)


def _seed(url: str) -> list:
    with Registry.open(url) as registry:
        registry.create_model("m")
        registry.create_version("m", "hf:/a")
        registry.create_version("m", "hf:/b")
        registry.set_alias("m", "champion", 1)
        return registry.events()


SQLITE_ATTACKS = {
    "update": "UPDATE events SET actor = 'mallory' WHERE id = 1",
    "delete": "DELETE FROM events WHERE id = 1",
    "delete-all (sqlite's truncate)": "DELETE FROM events",
    "insert or replace": "INSERT OR REPLACE INTO events " + _ROW_AT.format(id=1),
    "replace the newest": "REPLACE INTO events " + _ROW_AT.format(id=4),
    "upsert": "INSERT INTO events "
    + _ROW_AT.format(id=1)
    + " ON CONFLICT(id) DO UPDATE SET actor = excluded.actor",
    "update or replace": "UPDATE OR REPLACE events SET id = 1 WHERE id = 2",
    "insert behind the cursor": "INSERT INTO events " + _ROW_AT.format(id=0),
}


@pytest.mark.parametrize("attack", list(SQLITE_ATTACKS))
def test_sqlite_event_log_refuses(attack: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    before = _seed(url)
    connection = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute(SQLITE_ATTACKS[attack])
        # An ordinary append still works, and gets the next id.
        connection.execute("INSERT INTO events " + _ROW)
    finally:
        connection.close()
    with Registry.open(url) as registry:
        after = registry.events()
    assert after[: len(before)] == before
    assert [e.id for e in after] == [*[e.id for e in before], before[-1].id + 1]


PG_ATTACKS = {
    "update": "UPDATE events SET actor = 'mallory' WHERE id = 1",
    "delete": "DELETE FROM events WHERE id = 1",
    "truncate": "TRUNCATE events",
    "upsert": "INSERT INTO events "
    + _ROW_AT.format(id=1)
    + " ON CONFLICT (id) DO UPDATE SET actor = excluded.actor",
    "insert behind the cursor": "INSERT INTO events " + _ROW_AT.format(id=0),
}


def test_postgres_event_log_refuses_every_path(postgres_database: str) -> None:
    before = _seed(postgres_database)
    engine = create_engine(postgres_database)
    try:
        for attack, statement in PG_ATTACKS.items():
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
            print("refused:", attack)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO events " + _ROW))
    finally:
        engine.dispose()
    with Registry.open(postgres_database) as registry:
        after = registry.events()
    assert after[: len(before)] == before and len(after) == len(before) + 1
