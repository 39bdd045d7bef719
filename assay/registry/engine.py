"""Opening the registry store: engines for a SQLAlchemy URL (SQLite or Postgres), the
schema migration, transactions under the write lock with retries, the event log's writer, and
the defaults read from the environment.

Concurrency: every mutation is one transaction that first takes the store's write lock —
``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on Postgres — and is retried
when the database reports it busy. Serializing writers keeps version numbers gap-free per
model and, just as important, makes event ids grow in commit order, so a reader that
remembers the last id it saw (the promotion sensor's cursor) never skips an event committed
later with a smaller id. The unique constraint on (model, version) backs this up on other
databases, where a clash is retried.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Select, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from assay.registry.entities import (
    Event,
    EventKind,
    Stage,
)
from assay.registry.errors import invalid, not_found
from assay.registry.gating import (
    SuiteIdentity,
    current_suite_identity,
    gated_prompt_aliases_from_env,
    gated_stages_from_env,
)
from assay.registry.like import ILIKE_FUNCTION, ilike_function
from assay.registry.limits import ACTOR_MAX_CHARS, check_line
from assay.registry.schema import EventRow

T = TypeVar("T")
R = TypeVar("R")
Clock = Callable[[], datetime]

_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x61737361  # "assa": the advisory lock id shared by all registry writers
_MAX_ATTEMPTS = 60
_INTEGRITY_ATTEMPTS = 3
DEFAULT_GATED_ALIASES = ("champion",)


def gated_aliases_from_env() -> tuple[str, ...]:
    """``$ASSAY_GATED_ALIASES`` (comma-separated; empty guards none) or ``champion``."""
    raw = os.environ.get("ASSAY_GATED_ALIASES")
    if raw is None:
        return DEFAULT_GATED_ALIASES
    return tuple(a.strip() for a in raw.split(",") if a.strip())


def default_registry_url(base: str | Path | None = None) -> str:
    """``$ASSAY_REGISTRY_URL`` if set, else a SQLite file ``<base>/registry.db``.

    ``base`` defaults to ``.assay`` in the current directory; the path is made absolute so
    the URL means the same file whichever directory later opens it.
    """
    env = os.environ.get("ASSAY_REGISTRY_URL")
    if env and base is None:
        return env
    root = Path(base if base is not None else ".assay").resolve()
    return f"sqlite:///{root / 'registry.db'}"


def default_actor() -> str:
    """``$ASSAY_ACTOR``, else the OS user name."""
    env = os.environ.get("ASSAY_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary uid in a container
        return "unknown"


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime, what: str) -> datetime:
    """Naive datetimes are read as UTC, the registry's only time zone."""
    if not isinstance(moment, datetime):
        raise invalid(f"{what} must be a datetime, got {moment!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- engines


def make_engines(url: str) -> tuple[Engine, Engine]:
    """(write engine, read engine). They differ only on SQLite, in how transactions begin.

    ``hide_parameters``: a database error's text leaves out the statement's values, so a
    failed write (a lock timeout, say) logs no webhook secret or other stored value."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise invalid(f"registry URL is not a SQLAlchemy URL: {exc}") from exc
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
        return engine, engine
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if in_memory:
        # One shared connection, or every connection would see its own empty database.
        engine = create_engine(
            parsed,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
        )
        _sqlite_hooks(engine, "BEGIN IMMEDIATE", wal=False)
        return engine, engine
    if not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's busy timeout makes a blocked BEGIN wait instead of failing at once.
    # check_same_thread off: the pool hands a connection to one thread at a time, and a
    # Registry may be shared by threads (e.g. a sensor daemon's).
    connect_args = {"timeout": 30, "check_same_thread": False}
    write = create_engine(parsed, connect_args=connect_args, hide_parameters=True)
    read = create_engine(parsed, connect_args=connect_args, hide_parameters=True)
    _sqlite_hooks(write, "BEGIN IMMEDIATE", wal=True)
    _sqlite_hooks(read, "BEGIN", wal=True)
    return write, read


def _sqlite_hooks(engine: Engine, begin: str, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that BEGIN IMMEDIATE is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # ILIKE for searches: SQLite's lower() folds ASCII only (assay.registry.like).
        dbapi_connection.create_function(ILIKE_FUNCTION, 2, ilike_function, deterministic=True)
        if wal:  # readers do not block the writer, nor it them
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # a race on a unique key; the retry sees the winner and decides cleanly
    message = str(exc.orig).lower()
    if "database is locked" in message or "database is busy" in message:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return sqlstate in {"40001", "40P01", "55P03"}  # serialization, deadlock, lock timeout


def one(session: Session, query: Select[tuple[R]], lock: bool, what: str) -> R:
    """The single row ``query`` selects (row-locked when ``lock``), or RESOURCE_DOES_NOT_EXIST."""
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise not_found(f"{what} does not exist")
    return row


class RegistryBase:
    """The store's connection and transactions; the registries build on it."""

    def __init__(
        self,
        url: str,
        write: Engine,
        read: Engine,
        clock: Clock,
        gated_aliases: Iterable[str] | None = None,
        gated_stages: Iterable[str] | None = None,
        gated_prompt_aliases: Iterable[str] | None = None,
        suite_identity: Callable[[], SuiteIdentity] | None = None,
    ) -> None:
        self.url = url
        self._write_engine = write
        self._read_engine = read
        self._clock = clock
        self._postgres = write.dialect.name == "postgresql"
        self.gated_aliases = frozenset(
            gated_aliases_from_env() if gated_aliases is None else gated_aliases
        )
        self.gated_stages = frozenset(
            gated_stages_from_env()
            if gated_stages is None
            else (Stage.parse(s).value for s in gated_stages)
        )
        self.gated_prompt_aliases = frozenset(
            gated_prompt_aliases_from_env(self.gated_aliases)
            if gated_prompt_aliases is None
            else gated_prompt_aliases
        )
        # The suite verdicts must have been judged on; read at each gated move, so a changed
        # suite file or code makes older verdicts stale without reopening the registry.
        self.suite_identity = suite_identity or current_suite_identity

    # -- lifecycle

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        gated_aliases: Iterable[str] | None = None,
        gated_stages: Iterable[str] | None = None,
        gated_prompt_aliases: Iterable[str] | None = None,
        suite_identity: Callable[[], SuiteIdentity] | None = None,
    ) -> Self:
        """Connect and upgrade the schema to the newest migration.

        ``url`` defaults to ``default_registry_url()``. ``clock`` (returning aware datetimes)
        stamps every row and event; tests inject one to control "as of" answers.
        ``gated_aliases``, ``gated_stages`` and ``gated_prompt_aliases`` are the targets that
        move only through a promotion decision (``assay.registry.gating``; defaults from
        ``$ASSAY_GATED_ALIASES`` or ``champion``, ``$ASSAY_GATED_STAGES`` or ``Production``,
        ``$ASSAY_GATED_PROMPT_ALIASES`` or the gated model aliases). ``suite_identity`` says
        which suite and code a verdict must have been judged on (default: ``$ASSAY_SUITE`` or
        the shipped suite, and this process's code versions).
        """
        url = url or default_registry_url()
        write, read = make_engines(url)
        registry = cls(
            url,
            write,
            read,
            clock or utc_now,
            gated_aliases,
            gated_stages,
            gated_prompt_aliases,
            suite_identity,
        )
        try:
            registry._retry(write, registry._upgrade)
        except Exception:
            registry.close()
            raise
        return registry

    def _upgrade(self, session: Session) -> None:
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        # Runs inside the write lock, so processes opening a fresh store at once migrate it
        # one after the other; the later ones find it at head and do nothing.
        config.attributes["connection"] = session.connection()
        command.upgrade(config, "head")

    def close(self) -> None:
        self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            self._read_engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions

    def _retry(self, engine: Engine, work: Callable[[Session], T]) -> T:
        for attempt in range(_MAX_ATTEMPTS):
            try:
                with Session(engine, expire_on_commit=False) as session, session.begin():
                    session.connection()  # begin now: on SQLite this takes the write lock
                    if self._postgres and engine is self._write_engine:
                        session.execute(
                            text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY}
                        )
                    return work(session)
            except DBAPIError as exc:
                # A unique-key race resolves on the next try; more clashes mean a real fault.
                gave_up = isinstance(exc, IntegrityError) and attempt >= _INTEGRITY_ATTEMPTS
                if gave_up or attempt + 1 == _MAX_ATTEMPTS or not _retryable(exc):
                    raise
                time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` as one all-or-nothing transaction holding the write lock."""
        return self._retry(self._write_engine, work)

    def _read(self, work: Callable[[Session], T]) -> T:
        return self._retry(self._read_engine, work)

    def _now(self) -> datetime:
        return as_utc(self._clock(), "clock()")

    def _emit(
        self,
        session: Session,
        kind: EventKind,
        actor: str | None,
        now: datetime,
        *,
        model: str | None = None,
        prompt: str | None = None,
        version: int | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> EventRow:
        who = actor if actor is not None else default_actor()
        if not isinstance(who, str) or not who or len(who) > ACTOR_MAX_CHARS:
            raise invalid(f"actor must be a non-empty string of at most 256 characters: {who!r}")
        check_line(who, f"actor {who!r}")
        row = EventRow(
            ts=now,
            kind=kind.value,
            actor=who,
            model=model,
            prompt=prompt,
            version=version,
            payload=json.dumps(dict(payload or {}), sort_keys=True, allow_nan=False),
        )
        session.add(row)
        return row


def event_record(row: EventRow) -> Event:
    return Event(
        id=row.id,
        ts=row.ts,
        kind=EventKind(row.kind),
        actor=row.actor,
        model=row.model,
        prompt=row.prompt,
        version=row.version,
        payload=json.loads(row.payload),
    )
