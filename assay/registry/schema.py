"""SQLAlchemy tables of the registry store.

The tables are the storage form only; callers see the dataclasses in ``records.py``. Any change
here needs a matching Alembic revision under ``migrations/versions/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_LEN = 128
TAG_VALUE_LEN = 5000


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out.

    SQLite has no time zones, so values are stored as naive UTC and tagged on the way back.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; pass an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Highest version number ever handed out: numbers are never reused, even if a version row
    # were ever removed, and the row doubles as the lock that serializes numbering.
    last_version: Mapped[int] = mapped_column(Integer, default=0)


class ModelTagRow(Base):
    __tablename__ = "registered_model_tags"

    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    serving: Mapped[str] = mapped_column(Text)  # JSON object, normalized ServingConfig
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(32), default="READY")
    stage: Mapped[str] = mapped_column(String(32), default="None")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    price_prompt_per_1k: Mapped[float | None] = mapped_column(Float, nullable=True)
    price_completion_per_1k: Mapped[float | None] = mapped_column(Float, nullable=True)
    # JSON list of declared training corpora (assay.registry.training_data); migration 0005.
    training_data: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")


class VersionTagRow(Base):
    __tablename__ = "model_version_tags"

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AliasRow(Base):
    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))


class PromptRow(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_version: Mapped[int] = mapped_column(Integer, default=0)


class PromptVersionRow(Base):
    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(Text)
    variables: Mapped[str] = mapped_column(Text)  # JSON list of declared variable names
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PromptAliasRow(Base):
    __tablename__ = "prompt_aliases"

    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("prompt_versions.id"))


class EventRow(Base):
    """Append-only history. Triggers created by the migration refuse UPDATE and DELETE."""

    __tablename__ = "events"
    # AUTOINCREMENT on SQLite: ids are never reused, even after the highest row is gone.
    __table_args__: ClassVar[dict[str, object]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True, index=True)
    prompt: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True, index=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    payload: Mapped[str] = mapped_column(Text)  # JSON object


class TokenRow(Base):
    """An API token of ``assay server``: only the SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell tokens apart
    principal: Mapped[str] = mapped_column(String(256), index=True)
    role: Mapped[str] = mapped_column(String(16))
    grants: Mapped[str] = mapped_column(Text)  # JSON list of model names; [] means every model
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(256))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # Stamped on authentication at most every ``tokens.LAST_USED_RESOLUTION`` (migration 0003).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookRow(Base):
    """A webhook of ``assay server`` (MLflow's webhook API). Deleting one stamps
    ``deleted_at``: its deliveries stay in the log and still name it."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID, as MLflow's
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    description: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(Text)  # JSON list of "entity.action" names
    status: Mapped[str] = mapped_column(String(16))  # ACTIVE or DISABLED
    # The signing secret, sealed (``assay.webhooks.secret_box``); NULL signs nothing.
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Events with ids up to this one have been considered for this webhook: it starts at the
    # newest event when the webhook is created, so a new webhook is not sent old history.
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookDeliveryRow(Base):
    """One event (or one test) to send to one webhook, until it is delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # X-MLflow-Delivery-Id
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), index=True)
    event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # NULL: a test
    event_name: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, byte for byte as sent
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttemptRow(Base):
    """One HTTP attempt of a delivery: when, the answer's status or the error, the outcome."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")  # scrubbed of the secret, cut short
    outcome: Mapped[str] = mapped_column(String(16))  # delivered, retry, failed, gave_up
