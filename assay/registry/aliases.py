"""Aliases and legacy stages: how versions are promoted (gated targets through the promotion
decision, ``assay.registry.gating``), and which version held an alias on a past date (replayed
from the event log).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.registry.checks import check_version_number
from assay.registry.decisions import DecisionLedger, move_result
from assay.registry.engine import as_utc, event_record
from assay.registry.entities import (
    Event,
    EventKind,
    ModelVersion,
    Stage,
)
from assay.registry.errors import invalid, not_found
from assay.registry.gating import (
    GateTarget,
    MoveResult,
    Outcome,
    Ruling,
    SuiteIdentity,
    TargetKind,
    raise_unless_moved,
)
from assay.registry.names import (
    check_alias,
    check_name,
    version_key,
)
from assay.registry.schema import (
    AliasRow,
    EventRow,
    VersionRow,
)
from assay.registry.versions import ModelRegistry

_ALIAS_KINDS = (EventKind.ALIAS_SET, EventKind.ALIAS_MOVED, EventKind.ALIAS_REMOVED)

# The per-partition regression check's verdicts, as version tags ``gate.<scenario>`` =
# passed/failed (``assay.compare.gate``): shown to users; a gated alias moves only as the
# promotion decision allows (``assay.registry.gating``), which reads verdict events, not tags.
GATE_TAG_PREFIX = "gate."
GATE_PASSED = "passed"
GATE_FAILED = "failed"


class AliasRegistry(ModelRegistry, DecisionLedger):
    """Aliases (the promotion mechanism) and the legacy stages of model versions."""

    # -- aliases

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        actor: str | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        role: str | None = None,
    ) -> ModelVersion:
        """Point ``alias`` at ``version`` (moving it if it points elsewhere).

        A gated alias (``champion`` by default) moves only as the promotion decision allows
        (``assay.registry.gating``): a move waiting for its verdict raises ``PromotionPending``
        (INVALID_STATE) and one a verdict refused raises ``PromotionRefused``, each after
        recording its event. ``request_alias`` answers the same without raising.
        """
        result = self.request_alias(
            model, alias, version, actor, force=force, reason=reason, role=role
        )
        raise_unless_moved(result)
        return result.record

    def request_alias(
        self,
        model: str,
        alias: str,
        version: int,
        actor: str | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        role: str | None = None,
        identity: SuiteIdentity | None = None,
    ) -> MoveResult:
        """Ask for ``alias`` to point at ``version``: moved, unchanged, pending or refused.

        ``force`` skips the verdict of a gated alias; it needs ``reason``, and both go into the
        events with ``role`` (the servers allow it to admins only).
        """
        check_name(model, "model name")
        check_alias(alias)
        check_version_number(version, f"alias {alias!r} of model {model!r}")
        target = GateTarget(TargetKind.ALIAS, model, alias)
        candidate = version_key(model, version)

        def work(session: Session) -> MoveResult:
            now = self._now()
            model_row = self._model_row(session, model)
            row = self._version_row(session, model_row, version)
            current = session.get(AliasRow, (model_row.id, alias))
            if current is not None and current.version_id == row.id:  # already there: no event
                record = self._version_record(session, model, row)
                return MoveResult(
                    Outcome.UNCHANGED, target, candidate, "already there", record=record
                )
            before = None if current is None else session.get_one(VersionRow, current.version_id)
            incumbent = (
                version_key(model, before.version)
                if before is not None
                else self._last_holder(session, target, candidate)
            )
            ruling, recorded = self._rule(
                session,
                target,
                candidate,
                incumbent,
                version,
                actor,
                now,
                force=force,
                reason=reason,
                role=role,
                identity=identity,
            )
            if ruling.outcome is not Outcome.MOVED:
                return move_result(ruling, target, candidate, recorded, None)
            if current is None:
                session.add(AliasRow(model_id=model_row.id, alias=alias, version_id=row.id))
                kind = EventKind.ALIAS_SET
            else:
                current.version_id = row.id
                kind = EventKind.ALIAS_MOVED
            model_row.updated_at = now
            payload: dict[str, Any] = {
                "alias": alias,
                "before": None if before is None else before.version,
                "after": version,
                **_decided_by(ruling, recorded),
            }
            move = self._emit(
                session, kind, actor, now, model=model, version=version, payload=payload
            )
            session.flush()
            record = self._version_record(session, model, row)
            return move_result(ruling, target, candidate, recorded, event_record(move), record)

        return self._write(work)

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
        cutoff = as_utc(as_of, "as_of")

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
        *,
        force: bool = False,
        reason: str | None = None,
        role: str | None = None,
    ) -> ModelVersion:
        """Move a version to a legacy stage; optionally archive the versions already there.

        A gated stage (``Production`` by default) is entered only as the promotion decision
        allows, as ``set_alias``: ``PromotionPending`` or ``PromotionRefused`` otherwise.
        """
        result = self.request_stage(
            model,
            version,
            stage,
            archive_existing_versions,
            actor,
            force=force,
            reason=reason,
            role=role,
        )
        raise_unless_moved(result)
        return result.record

    def request_stage(
        self,
        model: str,
        version: int,
        stage: Stage | str | None,
        archive_existing_versions: bool = False,
        actor: str | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        role: str | None = None,
        identity: SuiteIdentity | None = None,
    ) -> MoveResult:
        """Ask for ``version`` to enter ``stage``: moved, unchanged, pending or refused. The
        incumbent of a gated stage is the newest other version in it."""
        check_name(model, "model name")
        check_version_number(version, f"model {model!r}")
        target_stage = Stage.parse(stage)
        if archive_existing_versions and target_stage not in (Stage.STAGING, Stage.PRODUCTION):
            raise invalid(
                "archive_existing_versions needs stage Staging or Production, not "
                f"{target_stage.value}"
            )
        target = GateTarget(TargetKind.STAGE, model, target_stage.value)
        candidate = version_key(model, version)

        def work(session: Session) -> MoveResult:
            now = self._now()
            model_row = self._model_row(session, model)
            row = self._version_row(session, model_row, version)
            others = session.scalars(
                select(VersionRow)
                .where(
                    VersionRow.model_id == model_row.id,
                    VersionRow.stage == target_stage.value,
                    VersionRow.id != row.id,
                )
                .order_by(VersionRow.version)
            ).all()
            ruling, recorded = Ruling(Outcome.MOVED, "not a gated target"), None
            if row.stage != target_stage.value:
                incumbent = (
                    version_key(model, others[-1].version)
                    if others
                    else self._last_holder(session, target, candidate)
                )
                ruling, recorded = self._rule(
                    session,
                    target,
                    candidate,
                    incumbent,
                    version,
                    actor,
                    now,
                    force=force,
                    reason=reason,
                    role=role,
                    identity=identity,
                    request={"archive_existing_versions": archive_existing_versions},
                )
                if ruling.outcome is not Outcome.MOVED:
                    return move_result(ruling, target, candidate, recorded, None)
            changes: list[tuple[VersionRow, str]] = []
            if row.stage != target_stage.value:
                changes.append((row, row.stage))
                row.stage = target_stage.value
            if archive_existing_versions:
                for other in others:
                    changes.append((other, other.stage))
                    other.stage = Stage.ARCHIVED.value
            if not changes:
                record = self._version_record(session, model, row)
                return MoveResult(
                    Outcome.UNCHANGED, target, candidate, "already there", record=record
                )
            first = None
            for changed, before in changes:
                payload: dict[str, Any] = {"before": before, "after": changed.stage}
                if changed is row:
                    payload.update(_decided_by(ruling, recorded))
                emitted = self._emit(
                    session,
                    EventKind.STAGE_CHANGED,
                    actor,
                    now,
                    model=model,
                    version=changed.version,
                    payload=payload,
                )
                first = first or emitted
            model_row.updated_at = now
            session.flush()
            record = self._version_record(session, model, row)
            return move_result(ruling, target, candidate, recorded, event_record(first), record)

        return self._write(work)


def _decided_by(ruling: Ruling, recorded: Event | None) -> dict[str, Any]:
    """What a move's event says about the decision that allowed it."""
    if ruling.forced and recorded is not None:
        return {"forced": recorded.payload.get("reason"), "decision": recorded.id}
    if ruling.verdict is not None:
        return {"decision": ruling.verdict.id}
    return {}
