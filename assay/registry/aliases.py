"""Aliases and legacy stages: how versions are promoted, the regression gate's veto on gated
aliases, and which version held an alias on a past date (replayed from the event log).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.registry.checks import check_version_number
from assay.registry.engine import as_utc
from assay.registry.entities import (
    EventKind,
    ModelVersion,
    Stage,
)
from assay.registry.errors import invalid, not_found
from assay.registry.names import (
    check_alias,
    check_name,
    version_key,
)
from assay.registry.schema import (
    AliasRow,
    EventRow,
    VersionRow,
    VersionTagRow,
)
from assay.registry.versions import ModelRegistry

_ALIAS_KINDS = (EventKind.ALIAS_SET, EventKind.ALIAS_MOVED, EventKind.ALIAS_REMOVED)

# Regression gate verdicts live in version tags ``gate.<scenario>`` = passed/failed (written by
# ``assay.compare.gate`` callers); a version with a failed gate may not take a gated alias unforced.
GATE_TAG_PREFIX = "gate."
GATE_PASSED = "passed"
GATE_FAILED = "failed"


class AliasRegistry(ModelRegistry):
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
    ) -> ModelVersion:
        """Point ``alias`` at ``version`` (moving it if it points elsewhere).

        A gated alias (``champion`` by default) is refused to a version with a failed
        regression gate (a ``gate.<scenario>`` tag equal to ``failed``) unless ``force``; the
        refusal is recorded as an ``alias_refused`` event and raised as INVALID_PARAMETER_VALUE.
        """
        check_name(model, "model name")
        check_alias(alias)
        check_version_number(version, f"alias {alias!r} of model {model!r}")
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
        # LIKE ignores case on SQLite: only the gate's own spelling of the key counts.
        return sorted(
            t.key[len(GATE_TAG_PREFIX) :]
            for t in tags
            if t.key.startswith(GATE_TAG_PREFIX) and t.value == GATE_FAILED
        )

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
    ) -> ModelVersion:
        """Move a version to a legacy stage; optionally archive the versions already there."""
        check_name(model, "model name")
        check_version_number(version, f"model {model!r}")
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
