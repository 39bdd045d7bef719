"""Webhooks, their deliveries and every attempt, in the registry's database.

Deliveries come from the event log, never from the request that changed the registry: each
webhook keeps the id of the last event it has considered (its cursor), and ``fan_out`` turns
the events after it into delivery rows and moves the cursor, in one transaction under the
registry's write lock. Whichever process wrote an event (the server, the CLI, the Dagster
daemon recording an evaluation or a gate decision), it is delivered; a server that was down
delivers what happened meanwhile when it comes back; several servers on one database never
create a delivery twice (one row per webhook and event, and the lock).

A new webhook starts at the newest event: it is sent what happens from then on, not the
history. A disabled webhook's cursor moves on without deliveries (MLflow sends nothing to a
disabled webhook), and deleting a webhook cancels what it had not been sent.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from assay.registry.checks import check_text
from assay.registry.errors import invalid, not_found
from assay.registry.schema import (
    EventRow,
    PromptRow,
    PromptVersionRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookRow,
)
from assay.registry.store import Registry
from assay.webhooks import secret_box
from assay.webhooks.events import (
    ALL_EVENTS,
    RegistryEvent,
    body,
    notification_for,
    split_event,
)
from assay.webhooks.targets import TargetRefused, check_target

ACTIVE, DISABLED = "ACTIVE", "DISABLED"
STATUSES = (ACTIVE, DISABLED)
PENDING, DELIVERED, FAILED, GAVE_UP, CANCELLED = (
    "pending",
    "delivered",
    "failed",
    "gave_up",
    "cancelled",
)
SECRET_MAX_CHARS = 1024
FAN_OUT_BATCH = 500
# MLflow's rule for webhook names (mlflow.utils.validation._WEBHOOK_NAME_REGEX).
_NAME = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9._-]*[a-z0-9])?$", re.IGNORECASE)
# Delivery ids are derived from (webhook, event): the same pair always has the same id.
_DELIVERY_NAMESPACE = uuid.UUID("6f1c7c1e-4b8e-4d57-9a53-2f3d5d1b9c01")
UNSET: Any = object()  # "not given", where None means "remove"


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as listed: never its secret, only whether it signs."""

    id: str
    name: str
    description: str
    url: str
    events: tuple[str, ...]
    status: str
    signed: bool
    created_at: datetime
    created_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    webhook_id: str
    event_id: int | None  # None: a test
    event_name: str
    payload: str
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    number: int
    started_at: datetime
    duration_ms: int
    response_status: int | None
    error: str
    outcome: str


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery claimed for one attempt: where it goes and what it sends."""

    delivery_id: str
    webhook_id: str
    url: str
    sealed_secret: str | None
    payload: str
    attempts: int  # made before this one


def _webhook(row: WebhookRow) -> Webhook:
    return Webhook(
        id=row.id,
        name=row.name,
        description=row.description,
        url=row.url,
        events=tuple(json.loads(row.events)),
        status=row.status,
        signed=row.secret is not None,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
    )


def _delivery(row: WebhookDeliveryRow) -> Delivery:
    return Delivery(
        id=row.id,
        webhook_id=row.webhook_id,
        event_id=row.event_id,
        event_name=row.event_name,
        payload=row.payload,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise invalid(
            f"webhook name {name!r} is invalid: it must start and end with a letter or digit, "
            "be at most 63 characters long, and contain only letters, digits, '.', '_' and '-'"
        )
    return name


def check_events(events: object) -> tuple[str, ...]:
    """Known event names, each once, ordered by entity and action as MLflow answers them;
    at least one."""
    if isinstance(events, str) or not isinstance(events, Iterable):
        raise invalid("webhook events must be a non-empty list of event names")
    names = list(events)
    if not names:
        raise invalid("webhook events must be a non-empty list of event names")
    for name in names:
        if name not in ALL_EVENTS:
            raise invalid(f"unknown webhook event {name!r}; known: {', '.join(ALL_EVENTS)}")
    return tuple(sorted(set(names), key=split_event))


def check_status(status: object) -> str:
    if not isinstance(status, str) or status.upper() not in STATUSES:
        raise invalid(f"webhook status {status!r} is not ACTIVE or DISABLED")
    return status.upper()


def check_secret(secret: object) -> str:
    if not isinstance(secret, str):
        raise invalid("webhook secret must be a string")
    if len(secret) > SECRET_MAX_CHARS or not secret.isprintable():
        # The message never repeats the value.
        raise invalid(
            f"webhook secret must be printable text of at most {SECRET_MAX_CHARS} characters"
        )
    return secret


def _url(url: object) -> str:
    try:
        return check_target(url)
    except TargetRefused as exc:
        raise invalid(str(exc)) from None


def delivery_id(webhook_id: str, event_id: int) -> str:
    """The ``X-MLflow-Delivery-Id`` of an event's delivery to a webhook (every attempt)."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{webhook_id}/{event_id}"))


class WebhookStore:
    """Webhooks over an open registry (the same database, the same write lock)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- the webhooks

    def create(
        self,
        name: str,
        url: str,
        events: Iterable[str],
        *,
        description: str = "",
        secret: str | None = None,
        status: str = ACTIVE,
        actor: str,
    ) -> Webhook:
        """A new webhook, sent the events that happen from now on."""
        check_name(name)
        target = _url(url)
        names = check_events(events)
        check_text(description, "webhook description")
        state = check_status(status)
        sealed = secret_box.seal(check_secret(secret)) if secret else None
        now = self.registry._now()

        def work(session: Session) -> Webhook:
            newest = session.scalar(select(func.max(EventRow.id))) or 0
            row = WebhookRow(
                id=str(uuid.uuid4()),
                name=name,
                description=description,
                url=target,
                events=json.dumps(list(names)),
                status=state,
                secret=sealed,
                cursor=newest,
                created_at=now,
                created_by=actor,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return _webhook(row)

        return self.registry._write(work)

    @staticmethod
    def _row(session: Session, webhook_id: str) -> WebhookRow:
        row = session.get(WebhookRow, webhook_id) if isinstance(webhook_id, str) else None
        if row is None or row.deleted_at is not None:
            raise not_found(f"Webhook with ID {webhook_id} not found.")
        return row

    def get(self, webhook_id: str) -> Webhook:
        return self.registry._read(lambda s: _webhook(self._row(s, webhook_id)))

    def page(self, offset: int, limit: int) -> tuple[list[Webhook], int]:
        """Live webhooks, newest first (MLflow's order), and how many there are."""

        def work(session: Session) -> tuple[list[Webhook], int]:
            live = WebhookRow.deleted_at.is_(None)
            total = session.scalar(select(func.count()).select_from(WebhookRow).where(live))
            rows = session.scalars(
                select(WebhookRow)
                .where(live)
                .order_by(WebhookRow.created_at.desc(), WebhookRow.id)
                .offset(offset)
                .limit(limit)
            )
            return [_webhook(r) for r in rows], int(total or 0)

        return self.registry._read(work)

    def update(
        self,
        webhook_id: str,
        *,
        name: str | None = None,
        url: str | None = None,
        events: Iterable[str] | None = None,
        description: str | None = None,
        secret: str | None = UNSET,
        status: str | None = None,
    ) -> Webhook:
        """Change what is given; ``secret=""`` or None removes the secret (no signature)."""
        if name is not None:
            check_name(name)
        target = _url(url) if url is not None else None
        names = check_events(events) if events is not None else None
        if description is not None:
            check_text(description, "webhook description")
        state = check_status(status) if status is not None else None
        sealed: str | None = UNSET
        if secret is not UNSET:
            sealed = secret_box.seal(check_secret(secret)) if secret else None
        now = self.registry._now()

        def work(session: Session) -> Webhook:
            row = self._row(session, webhook_id)
            if name is not None:
                row.name = name
            if target is not None:
                row.url = target
            if names is not None:
                row.events = json.dumps(list(names))
            if description is not None:
                row.description = description
            if sealed is not UNSET:
                row.secret = sealed
            if state is not None:
                row.status = state
            row.updated_at = now
            session.flush()
            return _webhook(row)

        return self.registry._write(work)

    def delete(self, webhook_id: str) -> None:
        """Delete a webhook; what it had not been sent is cancelled, the log stays."""
        now = self.registry._now()

        def work(session: Session) -> None:
            row = self._row(session, webhook_id)
            row.deleted_at = now
            row.updated_at = now
            pending = session.scalars(
                select(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.webhook_id == webhook_id,
                    WebhookDeliveryRow.state == PENDING,
                )
            )
            for delivery in pending:
                delivery.state = CANCELLED
                delivery.finished_at = now

        self.registry._write(work)

    def sealed_secret(self, webhook_id: str) -> str | None:
        """The stored form of a webhook's secret, for the sender only."""
        return self.registry._read(lambda s: self._row(s, webhook_id).secret)

    # -- deliveries

    def fan_out(self) -> int:
        """Turn the events after each webhook's cursor into deliveries; how many were made."""
        if not self.registry._read(self._has_new_events):
            return 0  # the common case, answered without the write lock
        made = 0
        while True:
            batch, more = self.registry._write(self._fan_out_batch)
            made += batch
            if not more:
                return made

    @staticmethod
    def _has_new_events(session: Session) -> bool:
        low = session.scalar(
            select(func.min(WebhookRow.cursor)).where(WebhookRow.deleted_at.is_(None))
        )
        if low is None:
            return False
        return session.scalar(select(EventRow.id).where(EventRow.id > low).limit(1)) is not None

    def _fan_out_batch(self, session: Session) -> tuple[int, bool]:
        hooks = session.scalars(select(WebhookRow).where(WebhookRow.deleted_at.is_(None))).all()
        if not hooks:
            return 0, False
        low = min(h.cursor for h in hooks)
        rows = session.scalars(
            select(EventRow).where(EventRow.id > low).order_by(EventRow.id).limit(FAN_OUT_BATCH)
        ).all()
        if not rows:
            return 0, False
        now = self.registry._now()

        def template_of(prompt: str, version: int) -> str | None:
            return session.scalar(
                select(PromptVersionRow.template)
                .join(PromptRow, PromptRow.id == PromptVersionRow.prompt_id)
                .where(PromptRow.name == prompt, PromptVersionRow.version == version)
            )

        subscribed = {h.id: set(json.loads(h.events)) for h in hooks}
        made = 0
        for row in rows:
            wanting = [
                h for h in hooks if row.id > h.cursor and h.status == ACTIVE and subscribed[h.id]
            ]
            if not wanting:
                continue
            note = notification_for(
                RegistryEvent(
                    id=row.id,
                    ts=row.ts,
                    kind=row.kind,
                    actor=row.actor,
                    model=row.model,
                    prompt=row.prompt,
                    version=row.version,
                    payload=json.loads(row.payload),
                ),
                template_of,
            )
            if note is None:
                continue
            payload = body(note, row.ts)
            for hook in wanting:
                if note.event not in subscribed[hook.id]:
                    continue
                session.add(
                    WebhookDeliveryRow(
                        id=delivery_id(hook.id, row.id),
                        webhook_id=hook.id,
                        event_id=row.id,
                        event_name=note.event,
                        payload=payload,
                        state=PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                made += 1
        last = rows[-1].id
        for hook in hooks:
            hook.cursor = max(hook.cursor, last)
        return made, len(rows) == FAN_OUT_BATCH

    def claim(self, limit: int, lease: timedelta) -> list[Due]:
        """Up to ``limit`` deliveries due now, each held for ``lease`` so that no other worker
        attempts it meanwhile (a worker that dies mid-attempt frees it when the lease ends)."""
        now = self.registry._now()
        query = (
            select(WebhookDeliveryRow, WebhookRow)
            .join(WebhookRow, WebhookRow.id == WebhookDeliveryRow.webhook_id)
            .where(
                WebhookDeliveryRow.state == PENDING,
                WebhookDeliveryRow.next_attempt_at <= now,
                (WebhookDeliveryRow.claimed_until.is_(None))
                | (WebhookDeliveryRow.claimed_until < now),
                WebhookRow.status == ACTIVE,
                WebhookRow.deleted_at.is_(None),
            )
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.event_id)
        )
        if self.registry._read(lambda s: s.execute(query.limit(1)).first()) is None:
            return []  # nothing due: no write lock taken

        def work(session: Session) -> list[Due]:
            rows = session.execute(query.limit(limit)).all()
            due = []
            for delivery, hook in rows:
                delivery.claimed_until = now + lease
                due.append(
                    Due(
                        delivery_id=delivery.id,
                        webhook_id=hook.id,
                        url=hook.url,
                        sealed_secret=hook.secret,
                        payload=delivery.payload,
                        attempts=delivery.attempts,
                    )
                )
            return due

        return self.registry._write(work)

    def record_attempt(
        self,
        delivery: str,
        attempt: Attempt,
        state: str,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Log one attempt and move the delivery to ``state`` (PENDING: again at
        ``next_attempt_at``)."""

        def work(session: Session) -> None:
            row = session.get(WebhookDeliveryRow, delivery)
            if row is None:
                raise not_found(f"delivery {delivery} does not exist")
            session.add(_attempt_row(delivery, attempt))
            row.attempts = attempt.number
            row.claimed_until = None
            if row.state == PENDING:  # a delete may have cancelled it meanwhile
                row.state = state
                if state == PENDING and next_attempt_at is not None:
                    row.next_attempt_at = next_attempt_at
            if row.state != PENDING:
                row.finished_at = row.finished_at or self.registry._now()

        self.registry._write(work)

    def record_test(
        self, webhook_id: str, test_id: str, event_name: str, payload: str, attempt: Attempt
    ) -> None:
        """Log a test delivery (one attempt, not retried) beside the real ones."""
        now = self.registry._now()

        def work(session: Session) -> None:
            session.add(
                WebhookDeliveryRow(
                    id=test_id,
                    webhook_id=webhook_id,
                    event_id=None,
                    event_name=event_name,
                    payload=payload,
                    state=DELIVERED if attempt.outcome == DELIVERED else FAILED,
                    attempts=1,
                    next_attempt_at=now,
                    created_at=now,
                    finished_at=now,
                )
            )
            session.flush()
            session.add(_attempt_row(test_id, attempt))

        self.registry._write(work)

    def deliveries(self, webhook_id: str | None = None) -> list[Delivery]:
        """Deliveries, oldest first (of one webhook, when given)."""

        def work(session: Session) -> list[Delivery]:
            query = select(WebhookDeliveryRow).order_by(
                WebhookDeliveryRow.created_at, WebhookDeliveryRow.event_id
            )
            if webhook_id is not None:
                query = query.where(WebhookDeliveryRow.webhook_id == webhook_id)
            return [_delivery(r) for r in session.scalars(query)]

        return self.registry._read(work)

    def attempts(self, delivery: str | Iterable[str] | None = None) -> list[Attempt]:
        """Attempts in the order they were logged (of one delivery or several, when given)."""
        wanted = [delivery] if isinstance(delivery, str) else delivery

        def work(session: Session) -> list[Attempt]:
            query = select(WebhookAttemptRow).order_by(WebhookAttemptRow.id)
            if wanted is not None:
                query = query.where(WebhookAttemptRow.delivery_id.in_(list(wanted)))
            return [
                Attempt(
                    delivery_id=r.delivery_id,
                    number=r.number,
                    started_at=r.started_at,
                    duration_ms=r.duration_ms,
                    response_status=r.response_status,
                    error=r.error,
                    outcome=r.outcome,
                )
                for r in session.scalars(query)
            ]

        return self.registry._read(work)


def _attempt_row(delivery_id: str, attempt: Attempt) -> WebhookAttemptRow:
    """The log row of one delivery attempt."""
    return WebhookAttemptRow(
        delivery_id=delivery_id,
        number=attempt.number,
        started_at=attempt.started_at,
        duration_ms=attempt.duration_ms,
        response_status=attempt.response_status,
        error=attempt.error,
        outcome=attempt.outcome,
    )
