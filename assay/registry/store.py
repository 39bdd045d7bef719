"""The registry store: registered models, versions, aliases, stages, tags, prompt templates
and an append-only event log, behind one small API over SQLAlchemy.

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
import math
import os
import random
import re
import time
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Select, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from assay.models.base import ServingConfig
from assay.registry.errors import RegistryError, exists, invalid, not_found
from assay.registry.names import (
    Reference,
    check_alias,
    check_name,
    parse_reference,
    version_key,
)
from assay.registry.records import (
    Event,
    EventKind,
    ModelVersion,
    Prices,
    PromptTemplate,
    PromptVersion,
    RegisteredModel,
    Stage,
)
from assay.registry.schema import (
    TAG_VALUE_LEN,
    AliasRow,
    EventRow,
    ModelRow,
    ModelTagRow,
    PromptAliasRow,
    PromptRow,
    PromptVersionRow,
    VersionRow,
    VersionTagRow,
)
from assay.registry.templates import check_template

T = TypeVar("T")
R = TypeVar("R")
Clock = Callable[[], datetime]

_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x61737361  # "assa": the advisory lock id shared by all registry writers
_MAX_ATTEMPTS = 60
_INTEGRITY_ATTEMPTS = 3
_SOURCE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S")
_ALIAS_KINDS = (EventKind.ALIAS_SET, EventKind.ALIAS_MOVED, EventKind.ALIAS_REMOVED)

# Regression gate verdicts live in version tags ``gate.<scenario>`` = passed/failed (written by
# ``assay.gate`` callers); a version with a failed gate may not take a gated alias unforced.
GATE_TAG_PREFIX = "gate."
GATE_PASSED = "passed"
GATE_FAILED = "failed"
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


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(moment: datetime, what: str) -> datetime:
    """Naive datetimes are read as UTC, the registry's only time zone."""
    if not isinstance(moment, datetime):
        raise invalid(f"{what} must be a datetime, got {moment!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- engines


def _make_engines(url: str) -> tuple[Engine, Engine]:
    """(write engine, read engine). They differ only on SQLite, in how transactions begin."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise invalid(f"registry URL is not a SQLAlchemy URL: {exc}") from exc
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed, pool_pre_ping=True)
        return engine, engine
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if in_memory:
        # One shared connection, or every connection would see its own empty database.
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        _sqlite_hooks(engine, "BEGIN IMMEDIATE", wal=False)
        return engine, engine
    if not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # The driver's busy timeout makes a blocked BEGIN wait instead of failing at once.
    # check_same_thread off: the pool hands a connection to one thread at a time, and a
    # Registry may be shared by threads (e.g. a sensor daemon's).
    connect_args = {"timeout": 30, "check_same_thread": False}
    write = create_engine(parsed, connect_args=connect_args)
    read = create_engine(parsed, connect_args=connect_args)
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


# --------------------------------------------------------------------------- validation


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{what} must be a string, got {type(value).__name__}")
    return value


def _check_tags(tags: Mapping[str, object] | None, where: str) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise invalid(f"{where}: tags must be a mapping, got {type(tags).__name__}")
    out = {}
    for key, value in tags.items():
        check_name(key, f"{where}: tag key", allow_at=True)
        out[key] = _check_tag_value(value, f"{where}: tag {key!r}")
    return out


def _check_tag_value(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{what} value must be a string, got {type(value).__name__}")
    if len(value) > TAG_VALUE_LEN:
        raise invalid(f"{what} value is longer than {TAG_VALUE_LEN} characters")
    return value


def _check_version_number(version: object, where: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise invalid(f"{where}: version must be a positive integer, got {version!r}")
    return version


_SERVING_HINTS = typing.get_type_hints(ServingConfig)
_POSITIVE_SERVING = {"batch_size", "max_context"}


def _carries_credentials(source: str) -> bool:
    """True when a source URI embeds a user/password (``scheme:http://user:pw@host/...``)."""
    _, _, rest = source.partition(":")
    netloc = urllib.parse.urlsplit(rest).netloc
    return "@" in netloc


def normalize_serving(serving: Mapping[str, Any] | None, where: str = "serving") -> dict[str, Any]:
    """Validate a serving config and return it with every field filled in (the stored form).

    Two configs that differ only by spelled-out defaults normalize to the same dict, so
    ``find_version`` matches them.
    """
    if serving is None:
        return ServingConfig().to_dict()
    if not isinstance(serving, Mapping):
        raise invalid(f"{where}: serving config must be a JSON object, got {serving!r}")
    for key, value in serving.items():
        hint = _SERVING_HINTS.get(key)
        if hint is None:
            continue  # ServingConfig.from_dict names every unknown key below
        bool_for_int = isinstance(value, bool) and hint is int
        if bool_for_int or not isinstance(value, _runtime_type(hint)):
            raise invalid(f"{where}: serving key {key!r} must be {hint}, got {value!r}")
        if key in _POSITIVE_SERVING and value < 1:
            raise invalid(f"{where}: serving key {key!r} must be positive, got {value!r}")
    try:
        return ServingConfig.from_dict(dict(serving)).to_dict()
    except (TypeError, ValueError) as exc:
        raise invalid(f"{where}: {exc}") from exc


def _runtime_type(hint: Any) -> Any:
    # ``str | None`` works with isinstance once None is spelled as its type.
    if isinstance(hint, types.UnionType):
        return tuple(type(None) if arg is None else arg for arg in typing.get_args(hint))
    return hint


# --------------------------------------------------------------------------- the store


def _one(session: Session, query: Select[tuple[R]], lock: bool, what: str) -> R:
    """The single row ``query`` selects (row-locked when ``lock``), or RESOURCE_DOES_NOT_EXIST."""
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise not_found(f"{what} does not exist")
    return row


class Registry:
    """Model and prompt registry over a SQLAlchemy URL. Open it with ``Registry.open(url)``."""

    def __init__(
        self,
        url: str,
        write: Engine,
        read: Engine,
        clock: Clock,
        gated_aliases: Iterable[str] | None = None,
    ) -> None:
        self.url = url
        self._write_engine = write
        self._read_engine = read
        self._clock = clock
        self._postgres = write.dialect.name == "postgresql"
        self.gated_aliases = frozenset(
            gated_aliases_from_env() if gated_aliases is None else gated_aliases
        )

    # -- lifecycle

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        gated_aliases: Iterable[str] | None = None,
    ) -> Registry:
        """Connect and upgrade the schema to the newest migration.

        ``url`` defaults to ``default_registry_url()``. ``clock`` (returning aware datetimes)
        stamps every row and event; tests inject one to control "as of" answers.
        ``gated_aliases`` are the aliases a version with a failed regression gate may not take
        without ``force`` (default ``$ASSAY_GATED_ALIASES`` or ``champion``).
        """
        url = url or default_registry_url()
        write, read = _make_engines(url)
        registry = cls(url, write, read, clock or _utc_now, gated_aliases)
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

    def __enter__(self) -> Registry:
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
        return _as_utc(self._clock(), "clock()")

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
        if not isinstance(who, str) or not who or len(who) > 256:
            raise invalid(f"actor must be a non-empty string of at most 256 characters: {who!r}")
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

    # -- lookups inside a transaction

    @staticmethod
    def _model_row(session: Session, name: str, *, lock: bool = False) -> ModelRow:
        query = select(ModelRow).where(ModelRow.name == name)
        return _one(session, query, lock, f"registered model {name!r}")

    @staticmethod
    def _version_row(session: Session, model: ModelRow, version: int) -> VersionRow:
        query = select(VersionRow).where(
            VersionRow.model_id == model.id, VersionRow.version == version
        )
        return _one(session, query, False, f"model version {version_key(model.name, version)!r}")

    def _resolve_row(self, session: Session, ref: Reference) -> tuple[ModelRow, VersionRow]:
        model = self._model_row(session, ref.name)
        if ref.alias is not None:
            alias = session.get(AliasRow, (model.id, ref.alias))
            if alias is None:
                raise not_found(f"alias {ref.alias!r} of model {ref.name!r} does not exist")
            return model, session.get_one(VersionRow, alias.version_id)
        if ref.version is not None:
            return model, self._version_row(session, model, ref.version)
        if model.last_version == 0:
            raise not_found(f"registered model {ref.name!r} has no versions")
        row = session.scalars(
            select(VersionRow)
            .where(VersionRow.model_id == model.id)
            .order_by(VersionRow.version.desc())
            .limit(1)
        ).one()
        return model, row

    @staticmethod
    def _model_record(session: Session, row: ModelRow) -> RegisteredModel:
        tags = session.scalars(select(ModelTagRow).where(ModelTagRow.model_id == row.id)).all()
        aliases = session.execute(
            select(AliasRow.alias, VersionRow.version)
            .join(VersionRow, VersionRow.id == AliasRow.version_id)
            .where(AliasRow.model_id == row.id)
        ).all()
        return RegisteredModel(
            name=row.name,
            description=row.description,
            tags={t.key: t.value for t in tags},
            created_at=row.created_at,
            updated_at=row.updated_at,
            latest_version=row.last_version or None,
            aliases=dict(sorted((a, v) for a, v in aliases)),
        )

    @staticmethod
    def _version_records(
        session: Session, rows: Iterable[tuple[str, VersionRow]]
    ) -> list[ModelVersion]:
        rows = list(rows)
        ids = [row.id for _, row in rows]
        tags: dict[int, dict[str, str]] = {i: {} for i in ids}
        aliases: dict[int, list[str]] = {i: [] for i in ids}
        # Batched in chunks: one query per table instead of one per version.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for tag in session.scalars(
                select(VersionTagRow).where(VersionTagRow.version_id.in_(chunk))
            ):
                tags[tag.version_id][tag.key] = tag.value
            for alias in session.scalars(select(AliasRow).where(AliasRow.version_id.in_(chunk))):
                aliases[alias.version_id].append(alias.alias)
        return [
            ModelVersion(
                model=name,
                version=row.version,
                source=row.source,
                serving=json.loads(row.serving),
                description=row.description,
                tags=tags[row.id],
                aliases=tuple(sorted(aliases[row.id])),
                stage=Stage(row.stage),
                status=row.status,
                created_at=row.created_at,
                prices=Prices(row.price_prompt_per_1k, row.price_completion_per_1k),
            )
            for name, row in rows
        ]

    def _version_record(self, session: Session, name: str, row: VersionRow) -> ModelVersion:
        return self._version_records(session, [(name, row)])[0]

    # -- registered models

    def create_model(
        self,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        actor: str | None = None,
    ) -> RegisteredModel:
        """Register a new model name; RESOURCE_ALREADY_EXISTS if it is taken."""
        check_name(name, "model name")
        _check_text(description, f"model {name!r}: description")
        tags = _check_tags(tags, f"model {name!r}")

        def work(session: Session) -> RegisteredModel:
            if session.scalars(select(ModelRow.id).where(ModelRow.name == name)).first():
                raise exists(f"registered model {name!r} already exists")
            return self._insert_model(session, name, description, tags, actor)

        return self._write(work)

    def _insert_model(
        self,
        session: Session,
        name: str,
        description: str,
        tags: dict[str, str],
        actor: str | None,
    ) -> RegisteredModel:
        now = self._now()
        row = ModelRow(
            name=name, description=description, created_at=now, updated_at=now, last_version=0
        )
        session.add(row)
        session.flush()
        session.add_all(ModelTagRow(model_id=row.id, key=k, value=v) for k, v in tags.items())
        self._emit(
            session,
            EventKind.MODEL_CREATED,
            actor,
            now,
            model=name,
            payload={"description": description, "tags": tags},
        )
        session.flush()
        return self._model_record(session, row)

    def get_or_create_model(
        self,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        actor: str | None = None,
    ) -> RegisteredModel:
        """The model called ``name``, created (with this description and tags) if absent."""
        check_name(name, "model name")
        _check_text(description, f"model {name!r}: description")
        tags = _check_tags(tags, f"model {name!r}")

        def work(session: Session) -> RegisteredModel:
            row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
            if row is not None:
                return self._model_record(session, row)
            return self._insert_model(session, name, description, tags, actor)

        return self._write(work)

    def get_model(self, name: str) -> RegisteredModel:
        return self._read(lambda s: self._model_record(s, self._model_row(s, name)))

    def list_models(self) -> list[RegisteredModel]:
        """All registered models, by name."""

        def work(session: Session) -> list[RegisteredModel]:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._model_record(session, row) for row in rows]

        return self._read(work)

    # -- versions

    def create_version(
        self,
        model: str,
        source: str,
        serving: Mapping[str, Any] | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        prices: Prices | Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Register the next version of ``model`` (which must exist): 1, 2, 3, ... per model.

        ``serving`` is validated as a ``ServingConfig`` and stored with defaults filled in.
        """
        check_name(model, "model name")
        where = f"new version of model {model!r}"
        if not isinstance(source, str) or not _SOURCE.match(source) or not source.isprintable():
            raise invalid(f"{where}: source {source!r} is not a URI like 'hf:/path/to/model'")
        if _carries_credentials(source):
            # Sources are stored, logged and shown in the UI: secrets never go in them.
            raise invalid(
                f"{where}: the source URI carries credentials; pass them through an "
                "environment variable (e.g. OPENAI_API_KEY) instead"
            )
        normalized = normalize_serving(serving, where)
        _check_text(description, f"{where}: description")
        tags = _check_tags(tags, where)
        price = Prices.coerce(prices)

        def work(session: Session) -> ModelVersion:
            now = self._now()
            model_row = self._model_row(session, model, lock=True)
            model_row.last_version += 1
            model_row.updated_at = now
            row = VersionRow(
                model_id=model_row.id,
                version=model_row.last_version,
                source=source,
                serving=json.dumps(normalized, sort_keys=True),
                description=description,
                status="READY",
                stage=Stage.NONE.value,
                created_at=now,
                price_prompt_per_1k=price.prompt_per_1k,
                price_completion_per_1k=price.completion_per_1k,
            )
            session.add(row)
            session.flush()
            session.add_all(
                VersionTagRow(version_id=row.id, key=k, value=v) for k, v in tags.items()
            )
            self._emit(
                session,
                EventKind.VERSION_CREATED,
                actor,
                now,
                model=model,
                version=row.version,
                payload={
                    "source": source,
                    "serving": normalized,
                    "description": description,
                    "tags": tags,
                    "prices": {
                        "prompt_per_1k": price.prompt_per_1k,
                        "completion_per_1k": price.completion_per_1k,
                    },
                },
            )
            session.flush()
            return self._version_record(session, model, row)

        return self._write(work)

    def get_version(self, key: str) -> ModelVersion:
        """The version with partition key ``<model>@v<n>``."""
        ref = parse_reference(key, "models")
        if ref.version is None or key.startswith("models:/"):
            raise invalid(f"{key!r} is not a version key like 'name@v3'")
        return self.resolve(key)

    def resolve(self, uri_or_key: str) -> ModelVersion:
        """Resolve ``name@v3``, ``name@champion``, ``name@latest``, ``models:/name@champion``,
        ``models:/name/3`` or ``models:/name`` (latest) to a version."""
        ref = parse_reference(uri_or_key, "models")

        def work(session: Session) -> ModelVersion:
            model, row = self._resolve_row(session, ref)
            return self._version_record(session, model.name, row)

        return self._read(work)

    def find_version(
        self, model: str, source: str, serving: Mapping[str, Any] | None = None
    ) -> ModelVersion | None:
        """The earliest version of ``model`` with this source and (normalized) serving config,
        or None; lets a caller register idempotently."""
        normalized = json.dumps(normalize_serving(serving), sort_keys=True)

        def work(session: Session) -> ModelVersion | None:
            row = session.scalars(
                select(VersionRow)
                .join(ModelRow, ModelRow.id == VersionRow.model_id)
                .where(
                    ModelRow.name == model,
                    VersionRow.source == source,
                    VersionRow.serving == normalized,
                )
                .order_by(VersionRow.version)
                .limit(1)
            ).one_or_none()
            return None if row is None else self._version_record(session, model, row)

        return self._read(work)

    def list_versions(
        self, model: str | None = None, as_of: datetime | None = None
    ) -> list[ModelVersion]:
        """Versions (of one model, or all), ordered by model and number.

        With ``as_of``, only versions registered by then according to the event log; the
        records themselves show current tags, aliases and stage.
        """
        cutoff = None if as_of is None else _as_utc(as_of, "as_of")

        def work(session: Session) -> list[ModelVersion]:
            if model is not None:
                self._model_row(session, model)
            query = select(ModelRow.name, VersionRow).join(
                ModelRow, ModelRow.id == VersionRow.model_id
            )
            if model is not None:
                query = query.where(ModelRow.name == model)
            if cutoff is not None:
                registered = select(EventRow.model, EventRow.version).where(
                    EventRow.kind == EventKind.VERSION_CREATED.value, EventRow.ts <= cutoff
                )
                if model is not None:
                    registered = registered.where(EventRow.model == model)
                wanted = {(m, v) for m, v in session.execute(registered)}
            rows = [
                (name, row)
                for name, row in session.execute(query.order_by(ModelRow.name, VersionRow.version))
                if cutoff is None or (name, row.version) in wanted
            ]
            return self._version_records(session, rows)

        return self._read(work)

    def versions(self, as_of: datetime | None = None) -> list[ModelVersion]:
        """Every version registered by ``as_of`` (all versions when None)."""
        return self.list_versions(None, as_of)

    # -- aliases

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        actor: str | None = None,
        *,
        force: bool = False,
    ) -> ModelVersion:
        """Point ``alias`` at ``version`` (moving it if it points elsewhere).

        A gated alias (``champion`` by default) is refused to a version with a failed
        regression gate (a ``gate.<scenario>`` tag equal to ``failed``) unless ``force``; the
        refusal is recorded as an ``alias_refused`` event and raised as INVALID_PARAMETER_VALUE.
        """
        check_name(model, "model name")
        check_alias(alias)
        _check_version_number(version, f"alias {alias!r} of model {model!r}")
        refused: list[str] = []

        def work(session: Session) -> ModelVersion:
            now = self._now()
            model_row = self._model_row(session, model)
            row = self._version_row(session, model_row, version)
            current = session.get(AliasRow, (model_row.id, alias))
            if current is not None and current.version_id == row.id:
                return self._version_record(session, model, row)  # already there: no event
            failed = self._failed_gates(session, row) if alias in self.gated_aliases else []
            if failed and not force:
                # Recorded and committed: the refusal is part of the alias's history.
                refused[:] = failed
                self._emit(
                    session,
                    EventKind.ALIAS_REFUSED,
                    actor,
                    now,
                    model=model,
                    version=version,
                    payload={"alias": alias, "refused": version, "failed_gates": failed},
                )
                return self._version_record(session, model, row)
            before = None
            if current is None:
                session.add(AliasRow(model_id=model_row.id, alias=alias, version_id=row.id))
                kind = EventKind.ALIAS_SET
            else:
                before = session.get_one(VersionRow, current.version_id).version
                current.version_id = row.id
                kind = EventKind.ALIAS_MOVED
            model_row.updated_at = now
            payload: dict[str, Any] = {"alias": alias, "before": before, "after": version}
            if failed:
                payload["forced_past_gates"] = failed
            self._emit(session, kind, actor, now, model=model, version=version, payload=payload)
            session.flush()
            return self._version_record(session, model, row)

        result = self._write(work)
        if refused:
            raise invalid(
                f"alias {alias!r} of model {model!r} refused for version "
                f"{version_key(model, version)!r}: regression gate failed on "
                f"{', '.join(refused)} (tags {', '.join(GATE_TAG_PREFIX + s for s in refused)}); "
                "pass force to override"
            )
        return result

    @staticmethod
    def _failed_gates(session: Session, row: VersionRow) -> list[str]:
        """Scenarios whose ``gate.<scenario>`` tag on this version says ``failed``."""
        tags = session.scalars(
            select(VersionTagRow).where(
                VersionTagRow.version_id == row.id,
                VersionTagRow.key.startswith(GATE_TAG_PREFIX, autoescape=True),
            )
        )
        return sorted(t.key[len(GATE_TAG_PREFIX) :] for t in tags if t.value == GATE_FAILED)

    def delete_alias(self, model: str, alias: str, actor: str | None = None) -> None:
        """Remove ``alias`` from ``model``; RESOURCE_DOES_NOT_EXIST if it is not set."""
        check_name(model, "model name")
        check_name(alias, "alias")

        def work(session: Session) -> None:
            now = self._now()
            model_row = self._model_row(session, model)
            current = session.get(AliasRow, (model_row.id, alias))
            if current is None:
                raise not_found(f"alias {alias!r} of model {model!r} does not exist")
            before = session.get_one(VersionRow, current.version_id).version
            session.delete(current)
            model_row.updated_at = now
            self._emit(
                session,
                EventKind.ALIAS_REMOVED,
                actor,
                now,
                model=model,
                version=before,
                payload={"alias": alias, "before": before, "after": None},
            )

        self._write(work)

    def alias_holder(self, model: str, alias: str, as_of: datetime) -> ModelVersion | None:
        """The version ``alias`` pointed at, at ``as_of``, replayed from the event log
        (None if it was unset then)."""
        cutoff = _as_utc(as_of, "as_of")

        def work(session: Session) -> ModelVersion | None:
            model_row = self._model_row(session, model)
            events = session.scalars(
                select(EventRow)
                .where(
                    EventRow.model == model,
                    EventRow.kind.in_([k.value for k in _ALIAS_KINDS]),
                    EventRow.ts <= cutoff,
                )
                .order_by(EventRow.id)
            )
            holder: int | None = None
            for ev in events:
                payload = json.loads(ev.payload)
                if payload.get("alias") == alias:
                    holder = payload.get("after")
            if holder is None:
                return None
            return self._version_record(
                session, model, self._version_row(session, model_row, holder)
            )

        return self._read(work)

    # -- stages and tags

    def transition_stage(
        self,
        model: str,
        version: int,
        stage: Stage | str | None,
        archive_existing_versions: bool = False,
        actor: str | None = None,
    ) -> ModelVersion:
        """Move a version to a legacy stage; optionally archive the versions already there."""
        check_name(model, "model name")
        _check_version_number(version, f"model {model!r}")
        target = Stage.parse(stage)
        if archive_existing_versions and target not in (Stage.STAGING, Stage.PRODUCTION):
            raise invalid(
                f"archive_existing_versions needs stage Staging or Production, not {target.value}"
            )

        def work(session: Session) -> ModelVersion:
            now = self._now()
            model_row = self._model_row(session, model)
            row = self._version_row(session, model_row, version)
            changes: list[tuple[VersionRow, str]] = []
            if row.stage != target.value:
                changes.append((row, row.stage))
                row.stage = target.value
            if archive_existing_versions:
                others = session.scalars(
                    select(VersionRow).where(
                        VersionRow.model_id == model_row.id,
                        VersionRow.stage == target.value,
                        VersionRow.id != row.id,
                    )
                ).all()
                for other in others:
                    changes.append((other, other.stage))
                    other.stage = Stage.ARCHIVED.value
            for changed, before in changes:
                self._emit(
                    session,
                    EventKind.STAGE_CHANGED,
                    actor,
                    now,
                    model=model,
                    version=changed.version,
                    payload={"before": before, "after": changed.stage},
                )
            if changes:
                model_row.updated_at = now
            session.flush()
            return self._version_record(session, model, row)

        return self._write(work)

    def set_tag(
        self,
        model: str,
        key: str,
        value: str,
        version: int | None = None,
        actor: str | None = None,
    ) -> None:
        """Set a tag on a model, or on one of its versions when ``version`` is given."""
        check_name(model, "model name")
        check_name(key, "tag key", allow_at=True)
        _check_tag_value(value, f"tag {key!r}")
        if version is not None:
            _check_version_number(version, f"tag {key!r} of model {model!r}")

        def work(session: Session) -> None:
            now = self._now()
            model_row = self._model_row(session, model)
            self._put_tag(session, model_row, version, key, value, actor, now, emit=True)

        self._write(work)

    def _put_tag(
        self,
        session: Session,
        model_row: ModelRow,
        version: int | None,
        key: str,
        value: str,
        actor: str | None,
        now: datetime,
        *,
        emit: bool,
    ) -> None:
        tag: ModelTagRow | VersionTagRow | None
        if version is None:
            tag = session.get(ModelTagRow, (model_row.id, key))
            new: ModelTagRow | VersionTagRow = ModelTagRow(
                model_id=model_row.id, key=key, value=value
            )
        else:
            version_row = self._version_row(session, model_row, version)
            tag = session.get(VersionTagRow, (version_row.id, key))
            new = VersionTagRow(version_id=version_row.id, key=key, value=value)
        before = None if tag is None else tag.value
        if before == value:
            return
        if tag is None:
            session.add(new)
        else:
            tag.value = value
        model_row.updated_at = now
        if emit:
            self._emit(
                session,
                EventKind.TAG_SET,
                actor,
                now,
                model=model_row.name,
                version=version,
                payload={"key": key, "value": value, "before": before},
            )

    # -- evaluations and the event log

    def record_evaluation(
        self,
        key: str,
        scenario: str,
        metrics: Mapping[str, float],
        run_id: str | None = None,
        actor: str | None = None,
    ) -> Event:
        """Log an evaluation of version ``key`` and tag it ``eval.<scenario>.<metric>=value``.

        Metric values must be finite numbers (the log is JSON, which has no NaN).
        """
        ref = parse_reference(key, "models")
        check_name(scenario, "scenario", allow_at=True)
        if not isinstance(metrics, Mapping) or not metrics:
            raise invalid(
                f"evaluation of {key!r} on {scenario!r}: metrics must be a non-empty mapping"
            )
        values: dict[str, float] = {}
        for name, value in metrics.items():
            check_name(name, f"evaluation of {key!r} on {scenario!r}: metric name", allow_at=True)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid(f"evaluation of {key!r}: metric {name!r} is not a number: {value!r}")
            if not math.isfinite(value):
                raise invalid(f"evaluation of {key!r}: metric {name!r} is not finite: {value!r}")
            check_name(f"eval.{scenario}.{name}", "tag key", allow_at=True)
            values[name] = float(value)
        if run_id is not None:
            _check_text(run_id, "run_id")

        def work(session: Session) -> Event:
            now = self._now()
            model_row, row = self._resolve_row(session, ref)
            for name, value in values.items():
                tag_key = f"eval.{scenario}.{name}"
                # The evaluation event carries every value; per-tag events would only repeat it.
                self._put_tag(
                    session, model_row, row.version, tag_key, repr(value), actor, now, emit=False
                )
            event_row = self._emit(
                session,
                EventKind.EVALUATION_RECORDED,
                actor,
                now,
                model=model_row.name,
                version=row.version,
                payload={"scenario": scenario, "metrics": values, "run_id": run_id},
            )
            session.flush()
            return _event_record(event_row)

        return self._write(work)

    def refuse_promotion(self, event: Event, reason: str, actor: str | None = None) -> Event:
        """Log that ``event`` could not be acted on (a ``promotion_refused`` event).

        The model name is copied from ``event`` unchecked: the refusal of a version whose name
        later rules refuse must still be recordable. ``reason`` is cut to 1000 characters.
        """
        _check_text(reason, "reason")

        def work(session: Session) -> Event:
            row = self._emit(
                session,
                EventKind.PROMOTION_REFUSED,
                actor,
                self._now(),
                model=event.model,
                prompt=event.prompt,
                version=event.version,
                payload={
                    "event_id": event.id,
                    "event_kind": event.kind.value,
                    "reason": reason[:1000],
                },
            )
            session.flush()
            return _event_record(row)

        return self._write(work)

    def events(
        self,
        after_id: int = 0,
        limit: int | None = None,
        *,
        model: str | None = None,
        prompt: str | None = None,
    ) -> list[Event]:
        """Events with id greater than ``after_id``, oldest first (at most ``limit``)."""
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            raise invalid(f"limit must be a non-negative integer, got {limit!r}")

        def work(session: Session) -> list[Event]:
            query = select(EventRow).where(EventRow.id > after_id).order_by(EventRow.id)
            if model is not None:
                query = query.where(EventRow.model == model)
            if prompt is not None:
                query = query.where(EventRow.prompt == prompt)
            if limit is not None:
                query = query.limit(limit)
            return [_event_record(row) for row in session.scalars(query)]

        return self._read(work)

    # -- prompts

    def create_prompt(
        self, name: str, description: str = "", actor: str | None = None
    ) -> PromptTemplate:
        """Register a prompt name; its text comes with ``create_prompt_version``."""
        check_name(name, "prompt name")
        _check_text(description, f"prompt {name!r}: description")

        def work(session: Session) -> PromptTemplate:
            if session.scalars(select(PromptRow.id).where(PromptRow.name == name)).first():
                raise exists(f"prompt {name!r} already exists")
            now = self._now()
            row = PromptRow(
                name=name, description=description, created_at=now, updated_at=now, last_version=0
            )
            session.add(row)
            self._emit(
                session,
                EventKind.PROMPT_CREATED,
                actor,
                now,
                prompt=name,
                payload={"description": description},
            )
            session.flush()
            return self._prompt_record(session, row)

        return self._write(work)

    def create_prompt_version(
        self,
        name: str,
        template: str,
        variables: Iterable[str],
        description: str = "",
        actor: str | None = None,
    ) -> PromptVersion:
        """Register the next version of prompt ``name``.

        Every ``{{placeholder}}`` must be among ``variables``; a malformed template or an
        undeclared placeholder is INVALID_PARAMETER_VALUE naming it, and nothing is written.
        """
        check_name(name, "prompt name")
        if isinstance(variables, str):
            raise invalid(f"prompt {name!r}: variables must be a list of names, not a string")
        declared = check_template(template, variables, f"prompt {name!r}")
        _check_text(description, f"prompt {name!r}: description")

        def work(session: Session) -> PromptVersion:
            now = self._now()
            prompt = self._prompt_row(session, name, lock=True)
            prompt.last_version += 1
            prompt.updated_at = now
            row = PromptVersionRow(
                prompt_id=prompt.id,
                version=prompt.last_version,
                template=template,
                variables=json.dumps(list(declared)),
                description=description,
                created_at=now,
            )
            session.add(row)
            self._emit(
                session,
                EventKind.PROMPT_VERSION_CREATED,
                actor,
                now,
                prompt=name,
                version=row.version,
                payload={"variables": list(declared), "description": description},
            )
            session.flush()
            return self._prompt_version_record(session, name, row)

        return self._write(work)

    def set_prompt_alias(
        self, name: str, alias: str, version: int, actor: str | None = None
    ) -> PromptVersion:
        """Point a prompt alias at one of its versions (moving it if needed)."""
        check_name(name, "prompt name")
        check_alias(alias)
        _check_version_number(version, f"alias {alias!r} of prompt {name!r}")

        def work(session: Session) -> PromptVersion:
            now = self._now()
            prompt = self._prompt_row(session, name)
            row = self._prompt_version_row(session, prompt, version)
            current = session.get(PromptAliasRow, (prompt.id, alias))
            if current is not None and current.version_id == row.id:
                return self._prompt_version_record(session, name, row)
            before = None
            if current is None:
                session.add(PromptAliasRow(prompt_id=prompt.id, alias=alias, version_id=row.id))
            else:
                before = session.get_one(PromptVersionRow, current.version_id).version
                current.version_id = row.id
            prompt.updated_at = now
            self._emit(
                session,
                EventKind.PROMPT_ALIAS_SET,
                actor,
                now,
                prompt=name,
                version=version,
                payload={"alias": alias, "before": before, "after": version},
            )
            session.flush()
            return self._prompt_version_record(session, name, row)

        return self._write(work)

    def get_prompt(self, uri: str) -> PromptVersion:
        """Resolve ``prompts:/name@alias``, ``prompts:/name/3``, ``prompts:/name`` (latest),
        ``name@v3`` or ``name@alias``."""
        ref = parse_reference(uri, "prompts")

        def work(session: Session) -> PromptVersion:
            prompt = self._prompt_row(session, ref.name)
            if ref.alias is not None:
                alias = session.get(PromptAliasRow, (prompt.id, ref.alias))
                if alias is None:
                    raise not_found(f"alias {ref.alias!r} of prompt {ref.name!r} does not exist")
                row = session.get_one(PromptVersionRow, alias.version_id)
            else:
                number = ref.version if ref.version is not None else prompt.last_version
                if number == 0:
                    raise not_found(f"prompt {ref.name!r} has no versions")
                row = self._prompt_version_row(session, prompt, number)
            return self._prompt_version_record(session, prompt.name, row)

        return self._read(work)

    def list_prompts(self) -> list[PromptTemplate]:
        def work(session: Session) -> list[PromptTemplate]:
            rows = session.scalars(select(PromptRow).order_by(PromptRow.name)).all()
            return [self._prompt_record(session, row) for row in rows]

        return self._read(work)

    def list_prompt_versions(self, name: str) -> list[PromptVersion]:
        def work(session: Session) -> list[PromptVersion]:
            prompt = self._prompt_row(session, name)
            rows = session.scalars(
                select(PromptVersionRow)
                .where(PromptVersionRow.prompt_id == prompt.id)
                .order_by(PromptVersionRow.version)
            ).all()
            return [self._prompt_version_record(session, name, row) for row in rows]

        return self._read(work)

    @staticmethod
    def _prompt_row(session: Session, name: str, *, lock: bool = False) -> PromptRow:
        query = select(PromptRow).where(PromptRow.name == name)
        return _one(session, query, lock, f"prompt {name!r}")

    @staticmethod
    def _prompt_version_row(session: Session, prompt: PromptRow, version: int) -> PromptVersionRow:
        query = select(PromptVersionRow).where(
            PromptVersionRow.prompt_id == prompt.id, PromptVersionRow.version == version
        )
        return _one(session, query, False, f"prompt version {version_key(prompt.name, version)!r}")

    @staticmethod
    def _prompt_record(session: Session, row: PromptRow) -> PromptTemplate:
        aliases = session.execute(
            select(PromptAliasRow.alias, PromptVersionRow.version)
            .join(PromptVersionRow, PromptVersionRow.id == PromptAliasRow.version_id)
            .where(PromptAliasRow.prompt_id == row.id)
        ).all()
        return PromptTemplate(
            name=row.name,
            description=row.description,
            created_at=row.created_at,
            updated_at=row.updated_at,
            latest_version=row.last_version or None,
            aliases=dict(sorted((a, v) for a, v in aliases)),
        )

    @staticmethod
    def _prompt_version_record(session: Session, name: str, row: PromptVersionRow) -> PromptVersion:
        aliases = session.scalars(
            select(PromptAliasRow.alias).where(PromptAliasRow.version_id == row.id)
        ).all()
        return PromptVersion(
            name=name,
            version=row.version,
            template=row.template,
            variables=tuple(json.loads(row.variables)),
            description=row.description,
            created_at=row.created_at,
            aliases=tuple(sorted(aliases)),
        )


def _event_record(row: EventRow) -> Event:
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


__all__ = [
    "DEFAULT_GATED_ALIASES",
    "GATE_FAILED",
    "GATE_PASSED",
    "GATE_TAG_PREFIX",
    "Registry",
    "RegistryError",
    "default_actor",
    "default_registry_url",
    "normalize_serving",
]
