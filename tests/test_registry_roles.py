"""The deployment's registry database roles (deploy/postgres/registry_roles.sql), on a real
PostgreSQL server: the service role every process connects as runs the registry and appends
events, and cannot switch off, drop or replace the event log's append-only triggers, nor
rewrite the log; the owner role, which ran the migrations, could."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from assay.models.cache import RequestCache
from assay.registry import Registry
from deploy.registry_roles import OWNER, SERVICE, prepare_registry_database

_EVENT = "(ts, kind, actor, payload) VALUES ('2020-01-01 00:00:00', 'alias_set', 'mallory', '{}')"

# What a compromised service process might try, straight in SQL.
ATTACKS = {
    "disable the trigger": "ALTER TABLE events DISABLE TRIGGER events_append_only",
    "disable every trigger": "ALTER TABLE events DISABLE TRIGGER ALL",
    "drop the trigger": "DROP TRIGGER events_append_only ON events",
    "drop the insert trigger": "DROP TRIGGER events_only_at_end ON events",
    "drop the trigger's function": "DROP FUNCTION assay_events_append_only() CASCADE",
    "replace the trigger's function": (
        "CREATE OR REPLACE FUNCTION assay_events_append_only() RETURNS trigger AS "
        "$$ BEGIN RETURN OLD; END $$ LANGUAGE plpgsql"
    ),
    "skip triggers for the session": "SET session_replication_role = replica",
    "become the owner": f"SET ROLE {OWNER}",
    "take the table": f"ALTER TABLE events OWNER TO {SERVICE}",
    "drop the log": "DROP TABLE events",
    "rename the log": "ALTER TABLE events RENAME TO old_events",
    "a trigger of its own": (
        "CREATE TRIGGER t BEFORE INSERT ON events FOR EACH ROW "
        "EXECUTE FUNCTION assay_events_append_only()"
    ),
    "a table of its own": "CREATE TABLE public.events_copy (id int)",
    "update": "UPDATE events SET actor = 'mallory' WHERE id = 1",
    "delete": "DELETE FROM events WHERE id = 1",
    "truncate": "TRUNCATE events",
    "move the schema back": "DELETE FROM alembic_version",
}


def _as(url: str, user: str) -> str:
    return make_url(url).set(username=user).render_as_string(hide_password=False)


@pytest.fixture
def roles(postgres_database: str) -> tuple[str, str]:
    """The registry database prepared as the deployment does: (owner URL, service URL)."""
    owner = _as(postgres_database, OWNER)
    prepare_registry_database(postgres_database, owner)
    return owner, _as(postgres_database, SERVICE)


def _triggers_in(conn) -> dict[str, str]:
    """The event log's triggers: name -> pg_trigger.tgenabled ('O' enabled, 'D' disabled)."""
    rows = conn.execute(
        text(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
        )
    )
    return dict(rows.all())


def _triggers_enabled(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return _triggers_in(conn)
    finally:
        engine.dispose()


def test_the_service_role_runs_the_registry_and_cannot_touch_the_triggers(roles) -> None:
    owner, service = roles
    # The registry works as the service role: writes, the log, the request cache.
    with Registry.open(service) as registry:
        registry.create_model("m", actor="ci")
        registry.create_version("m", "hf:/a", actor="ci")
        registry.create_version("m", "hf:/b", actor="ci")
        registry.set_alias("m", "champion", 2, actor="ci")
        before = registry.events()
    assert [e.kind.value for e in before][-1] == "alias_set"
    cache = RequestCache(service)
    cache.close()
    triggers = _triggers_enabled(owner)
    assert triggers and set(triggers.values()) == {"O"}  # every trigger enabled

    engine = create_engine(service)
    try:
        for attack, statement in ATTACKS.items():
            with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
                conn.execute(text(statement))
            message = str(refused.value.orig)
            assert "append-only" not in message, f"{attack}: reached the trigger: {message}"
            assert (
                "must be owner" in message
                or "permission denied" in message
                or "not a member" in message
            ), f"{attack}: {message}"
        with engine.begin() as conn:  # appending is still the service's right
            conn.execute(text("INSERT INTO events " + _EVENT))
    finally:
        engine.dispose()

    assert _triggers_enabled(owner) == triggers
    with Registry.open(service) as registry:
        after = registry.events()
    assert after[: len(before)] == before and len(after) == len(before) + 1


def test_the_owner_could_disable_the_trigger(roles) -> None:
    """The attacks above are refused for the role, not because the statements are wrong."""
    owner, _ = roles
    engine = create_engine(owner)
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            conn.execute(text(ATTACKS["disable the trigger"]))
            assert _triggers_in(conn)["events_append_only"] == "D"
            transaction.rollback()
    finally:
        engine.dispose()
    assert _triggers_enabled(owner)["events_append_only"] == "O"
