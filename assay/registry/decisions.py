"""Promotion decisions in the event log: pending requests, verdicts, and the ruling every gated
move goes through (``assay.registry.gating.decide_move``).

A decision is recorded as events, not in a table of its own: ``gate_pending`` when a move waits
for its verdict, ``gate_approved`` / ``gate_refused`` with the decision record (every
criterion's estimate, interval, threshold, p-value and outcome, the suite digest and code
versions it was judged on) in the payload. The log is append-only and already the history
users read, the sensor's cursor and what webhooks deliver.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from assay.registry.checks import check_text
from assay.registry.engine import RegistryBase, event_record
from assay.registry.entities import Event, EventKind
from assay.registry.errors import invalid
from assay.registry.gating import (
    GateTarget,
    MoveResult,
    Outcome,
    Ruling,
    SuiteIdentity,
    TargetKind,
    decide_move,
)
from assay.registry.schema import (
    AliasRow,
    EventRow,
    ModelRow,
    PromptAliasRow,
    PromptRow,
    PromptVersionRow,
    VersionRow,
)

_VERDICT_KINDS = (EventKind.GATE_APPROVED.value, EventKind.GATE_REFUSED.value)


class DecisionLedger(RegistryBase):
    """The gate's records in the event log, and the ruling on one gated move."""

    def is_gated(self, target: GateTarget) -> bool:
        if target.kind is TargetKind.ALIAS:
            return target.name in self.gated_aliases
        if target.kind is TargetKind.STAGE:
            return target.name in self.gated_stages
        return target.name in self.gated_prompt_aliases

    @staticmethod
    def _owner_filter(target: GateTarget) -> Any:
        if target.kind is TargetKind.PROMPT_ALIAS:
            return EventRow.prompt == target.owner
        return EventRow.model == target.owner

    def _target_events(self, session: Session, target: GateTarget, kinds: tuple[str, ...]):
        rows = session.scalars(
            select(EventRow)
            .where(self._owner_filter(target), EventRow.kind.in_(kinds))
            .order_by(EventRow.id)
        )
        return [e for e in map(event_record, rows) if e.payload.get("target") == target.to_json()]

    def _rule(
        self,
        session: Session,
        target: GateTarget,
        candidate: str,
        incumbent: str | None,
        version: int,
        actor: str | None,
        now: datetime,
        *,
        force: bool,
        reason: str | None,
        role: str | None,
        identity: SuiteIdentity | None = None,
        request: dict[str, Any] | None = None,
    ) -> tuple[Ruling, Event | None]:
        """Rule on a move and record what the ruling needs recorded: the pending request, a
        repeated refusal, or a forced move's justification. Returns the ruling and that event.
        """
        gated = self.is_gated(target)
        if reason is not None:
            check_text(reason, "reason")
        if not gated or force:
            identity = None
        elif identity is None:
            identity = self.suite_identity()
        verdicts = (
            self._target_events(session, target, _VERDICT_KINDS) if identity is not None else []
        )
        ruling = decide_move(
            target=target,
            gated=gated,
            candidate=candidate,
            incumbent=incumbent,
            identity=identity,
            verdicts=verdicts,
            force=force,
            reason=reason,
        )
        where = self._where(target, version)
        base = {"target": target.to_json(), "candidate": candidate, "incumbent": incumbent}
        if ruling.outcome is Outcome.PENDING:
            assert identity is not None
            waiting = self._open_pending_rows(session, target, candidate)
            if waiting:  # asked before and still waiting: the same request, not a new one
                return ruling, waiting[-1]
            payload = {
                **base,
                "suite": identity.to_json(),
                "reason": ruling.reason,
                **(request or {}),
            }
            row = self._emit(session, EventKind.GATE_PENDING, actor, now, **where, payload=payload)
            session.flush()
            return ruling, event_record(row)
        if ruling.outcome is Outcome.REFUSED:
            assert ruling.verdict is not None
            payload = {**ruling.verdict.payload, "verdict_event": ruling.verdict.id}
            row = self._emit(session, EventKind.GATE_REFUSED, actor, now, **where, payload=payload)
            session.flush()
            return ruling, event_record(row)
        if ruling.forced:
            payload = {**base, "forced": True, "reason": reason, "role": role or "local"}
            row = self._emit(session, EventKind.GATE_APPROVED, actor, now, **where, payload=payload)
            session.flush()
            return ruling, event_record(row)
        return ruling, None

    def _last_holder(self, session: Session, target: GateTarget, candidate: str) -> str | None:
        """The version that held ``target`` last, for a target nothing holds now: removing an
        alias (or leaving a stage) does not make the next holder a first holder judged by
        absolute criteria alone. None when nothing other than ``candidate`` ever held it."""
        owner_rows = select(EventRow).where(self._owner_filter(target)).order_by(EventRow.id.desc())
        if target.kind is TargetKind.STAGE:
            kinds = [EventKind.STAGE_CHANGED.value]
        elif target.kind is TargetKind.ALIAS:
            kinds = [
                e.value
                for e in (EventKind.ALIAS_SET, EventKind.ALIAS_MOVED, EventKind.ALIAS_REMOVED)
            ]
        else:
            kinds = [EventKind.PROMPT_ALIAS_SET.value]
        for row in session.scalars(owner_rows.where(EventRow.kind.in_(kinds))):
            event = event_record(row)
            p = event.payload
            if target.kind is TargetKind.STAGE:
                held = p.get("before") == target.name or p.get("after") == target.name
                number = event.version
            else:
                held = p.get("alias") == target.name
                number = p.get("after") if p.get("after") is not None else p.get("before")
            if not held or number is None:
                continue
            key = f"{target.owner}@v{number}"
            if key != candidate:
                return key
        return None

    def incumbent_of(self, target: GateTarget, candidate: str) -> str | None:
        """Who the candidate is judged against: the target's holder now (another version),
        else the last version that held it, else None (a first holder)."""

        def work(session: Session) -> str | None:
            holder: str | None = None
            if target.kind is TargetKind.ALIAS:
                row = session.execute(
                    select(VersionRow.version)
                    .join(AliasRow, AliasRow.version_id == VersionRow.id)
                    .join(ModelRow, ModelRow.id == AliasRow.model_id)
                    .where(ModelRow.name == target.owner, AliasRow.alias == target.name)
                ).first()
                holder = None if row is None else f"{target.owner}@v{row[0]}"
            elif target.kind is TargetKind.STAGE:
                row = session.execute(
                    select(VersionRow.version)
                    .join(ModelRow, ModelRow.id == VersionRow.model_id)
                    .where(ModelRow.name == target.owner, VersionRow.stage == target.name)
                    .order_by(VersionRow.version.desc())
                ).all()
                others = [f"{target.owner}@v{r[0]}" for r in row]
                holder = next((k for k in others if k != candidate), None)
            else:
                row = session.execute(
                    select(PromptVersionRow.version)
                    .join(PromptAliasRow, PromptAliasRow.version_id == PromptVersionRow.id)
                    .join(PromptRow, PromptRow.id == PromptAliasRow.prompt_id)
                    .where(PromptRow.name == target.owner, PromptAliasRow.alias == target.name)
                ).first()
                holder = None if row is None else f"{target.owner}@v{row[0]}"
            if holder is not None and holder != candidate:
                return holder
            return self._last_holder(session, target, candidate)

        return self._read(work)

    @staticmethod
    def _where(target: GateTarget, version: int) -> dict[str, Any]:
        if target.kind is TargetKind.PROMPT_ALIAS:
            return {"prompt": target.owner, "version": version}
        return {"model": target.owner, "version": version}

    def _open_pending_rows(
        self, session: Session, target: GateTarget, candidate: str | None = None
    ) -> list[Event]:
        events = self._target_events(
            session,
            target,
            (EventKind.GATE_PENDING.value, *_VERDICT_KINDS),
        )
        answered = {
            e.payload.get("pending") for e in events if e.kind is not EventKind.GATE_PENDING
        }
        return [
            e
            for e in events
            if e.kind is EventKind.GATE_PENDING
            and e.id not in answered
            and (candidate is None or e.payload.get("candidate") == candidate)
        ]

    # -- what the promotion sensor reads and writes

    def open_pending(self) -> list[Event]:
        """``gate_pending`` events no verdict has answered yet, oldest first."""

        def work(session: Session) -> list[Event]:
            rows = session.scalars(
                select(EventRow)
                .where(EventRow.kind.in_([EventKind.GATE_PENDING.value, *_VERDICT_KINDS]))
                .order_by(EventRow.id)
            )
            events = [event_record(r) for r in rows]
            answered = {
                e.payload.get("pending") for e in events if e.kind is not EventKind.GATE_PENDING
            }
            return [e for e in events if e.kind is EventKind.GATE_PENDING and e.id not in answered]

        return self._read(work)

    def record_verdict(
        self,
        target: GateTarget,
        candidate: str,
        incumbent: str | None,
        identity: SuiteIdentity,
        record: Mapping[str, Any],
        *,
        approved: bool,
        pending: Event | None = None,
        actor: str | None = None,
    ) -> Event:
        """Record a decision: ``gate_approved`` or ``gate_refused`` with ``record`` (the
        criteria and their figures) in the payload, answering ``pending`` when given."""
        if not isinstance(record, Mapping):
            raise invalid("a verdict's record must be a mapping")
        version = int(candidate.rsplit("@v", 1)[1]) if "@v" in candidate else None
        kind = EventKind.GATE_APPROVED if approved else EventKind.GATE_REFUSED
        payload = {
            **dict(record),
            "target": target.to_json(),
            "candidate": candidate,
            "incumbent": incumbent,
            "suite": identity.to_json(),
            "pending": None if pending is None else pending.id,
            "requested_by": None if pending is None else pending.actor,
        }
        if pending is not None and "archive_existing_versions" in pending.payload:
            # What the request asked for beside the move, applied with it.
            payload["archive_existing_versions"] = pending.payload["archive_existing_versions"]
        json.dumps(payload, allow_nan=False)  # a NaN figure is a bug of the caller: say so now

        def work(session: Session) -> Event:
            where = self._where(target, version) if version is not None else {}
            row = self._emit(session, kind, actor, self._now(), **where, payload=payload)
            session.flush()
            return event_record(row)

        return self._write(work)

    def apply_verdict(self, verdict: Event, actor: str | None = None) -> MoveResult:
        """Make the move an approving verdict allows, through the same ruling as any request
        (so the verdict must still match the target's incumbent and its suite)."""
        payload = verdict.payload
        target = GateTarget.from_json(payload["target"])
        identity = SuiteIdentity.from_json(payload.get("suite"))
        owner, _, number = str(payload["candidate"]).rpartition("@v")
        version = int(number)
        if target.kind is TargetKind.STAGE:
            archive = bool(payload.get("archive_existing_versions"))
            return self.request_stage(  # type: ignore[attr-defined]
                owner, version, target.name, archive, actor, identity=identity
            )
        request = (
            self.request_alias  # type: ignore[attr-defined]
            if target.kind is TargetKind.ALIAS
            else self.request_prompt_alias  # type: ignore[attr-defined]
        )
        return request(owner, target.name, version, actor, identity=identity)

    def decisions(self, model: str | None = None, prompt: str | None = None) -> list[Event]:
        """Every gate event (pending, approved, refused) of a model or prompt, oldest first."""

        def work(session: Session) -> list[Event]:
            query = select(EventRow).where(
                EventRow.kind.in_([EventKind.GATE_PENDING.value, *_VERDICT_KINDS])
            )
            if model is not None or prompt is not None:
                query = query.where(
                    or_(
                        *([EventRow.model == model] if model is not None else []),
                        *([EventRow.prompt == prompt] if prompt is not None else []),
                    )
                )
            return [event_record(r) for r in session.scalars(query.order_by(EventRow.id))]

        return self._read(work)


def move_result(
    ruling: Ruling,
    target: GateTarget,
    candidate: str,
    recorded: Event | None,
    move: Event | None,
    record: Any = None,
) -> MoveResult:
    """The answer a caller gets: the move's event when it moved, else the recorded event."""
    return MoveResult(
        outcome=ruling.outcome,
        target=target,
        candidate=candidate,
        reason=ruling.reason,
        event=move or recorded,
        verdict=ruling.verdict,
        record=record,
    )
