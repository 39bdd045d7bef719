"""The prompt registry: prompt templates with numbered versions and aliases."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from assay.registry.checks import check_text, check_version_number
from assay.registry.decisions import DecisionLedger, move_result
from assay.registry.engine import event_record, one
from assay.registry.entities import (
    EventKind,
    PromptTemplate,
    PromptVersion,
)
from assay.registry.errors import exists, invalid, not_found
from assay.registry.gating import (
    GateTarget,
    MoveResult,
    Outcome,
    SuiteIdentity,
    TargetKind,
    raise_unless_moved,
)
from assay.registry.names import (
    check_alias,
    check_name,
    parse_reference,
    version_key,
)
from assay.registry.schema import (
    PromptAliasRow,
    PromptRow,
    PromptVersionRow,
)
from assay.registry.templates import check_template


class PromptRegistry(DecisionLedger):
    """Prompt templates, their versions and aliases."""

    # -- prompts

    def create_prompt(
        self, name: str, description: str = "", actor: str | None = None
    ) -> PromptTemplate:
        """Register a prompt name; its text comes with ``create_prompt_version``."""
        check_name(name, "prompt name")
        check_text(description, f"prompt {name!r}: description")

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
        check_text(description, f"prompt {name!r}: description")

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
        self,
        name: str,
        alias: str,
        version: int,
        actor: str | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        role: str | None = None,
    ) -> PromptVersion:
        """Point a prompt alias at one of its versions (moving it if needed).

        A gated prompt alias moves only as the promotion decision allows (the candidate prompt
        version judged against the one the alias holds, on the same model versions):
        ``PromotionPending`` or ``PromotionRefused`` otherwise (``request_prompt_alias``
        answers without raising).
        """
        result = self.request_prompt_alias(
            name, alias, version, actor, force=force, reason=reason, role=role
        )
        raise_unless_moved(result)
        return result.record

    def request_prompt_alias(
        self,
        name: str,
        alias: str,
        version: int,
        actor: str | None = None,
        *,
        force: bool = False,
        reason: str | None = None,
        role: str | None = None,
        identity: SuiteIdentity | None = None,
    ) -> MoveResult:
        """Ask for prompt alias ``alias`` to point at ``version``: moved, unchanged, pending
        or refused (see ``assay.registry.gating``)."""
        check_name(name, "prompt name")
        check_alias(alias)
        check_version_number(version, f"alias {alias!r} of prompt {name!r}")
        target = GateTarget(TargetKind.PROMPT_ALIAS, name, alias)
        candidate = version_key(name, version)

        def work(session: Session) -> MoveResult:
            now = self._now()
            prompt = self._prompt_row(session, name)
            row = self._prompt_version_row(session, prompt, version)
            current = session.get(PromptAliasRow, (prompt.id, alias))
            if current is not None and current.version_id == row.id:
                record = self._prompt_version_record(session, name, row)
                return MoveResult(
                    Outcome.UNCHANGED, target, candidate, "already there", record=record
                )
            before = None
            if current is not None:
                before = session.get_one(PromptVersionRow, current.version_id).version
            incumbent = (
                version_key(name, before)
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
                session.add(PromptAliasRow(prompt_id=prompt.id, alias=alias, version_id=row.id))
            else:
                current.version_id = row.id
            prompt.updated_at = now
            payload: dict[str, Any] = {"alias": alias, "before": before, "after": version}
            if ruling.forced and recorded is not None:
                payload.update(forced=recorded.payload.get("reason"), decision=recorded.id)
            elif ruling.verdict is not None:
                payload["decision"] = ruling.verdict.id
            move = self._emit(
                session,
                EventKind.PROMPT_ALIAS_SET,
                actor,
                now,
                prompt=name,
                version=version,
                payload=payload,
            )
            session.flush()
            record = self._prompt_version_record(session, name, row)
            return move_result(ruling, target, candidate, recorded, event_record(move), record)

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
        return one(session, query, lock, f"prompt {name!r}")

    @staticmethod
    def _prompt_version_row(session: Session, prompt: PromptRow, version: int) -> PromptVersionRow:
        query = select(PromptVersionRow).where(
            PromptVersionRow.prompt_id == prompt.id, PromptVersionRow.version == version
        )
        return one(session, query, False, f"prompt version {version_key(prompt.name, version)!r}")

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
