"""The promotion gate's one decision: may a gated target move to a version now?

A gated target is a gated alias of a model (``champion`` by default, ``$ASSAY_GATED_ALIASES``),
the ``Production`` stage (``$ASSAY_GATED_STAGES``), or a gated prompt alias
(``$ASSAY_GATED_PROMPT_ALIASES``, by default the same names as the model aliases). Every path
that moves one (the library, the CLI, the assay API, the MLflow API, the MLflow alias sync, the
promotion sensor applying an approval) goes through :func:`decide_move`, inside the registry's
write transaction.

Deny by default. A move is allowed only when a recorded verdict (a ``gate_approved`` event)
judged this candidate against the target's current incumbent on the **current** suite: the
same suite file (entries and ``promotion:`` criteria, by digest) and the same code versions of
the evaluation assets. A recorded refusal on the same terms refuses the move with its reasons.
Anything else (no verdict, a verdict on an older suite or older code, or against another
incumbent) makes the move **pending**: a ``gate_pending`` event that the promotion sensor
turns into an evaluation and a verdict, after which it applies the move or records the refusal.

Forcing skips the verdict; it needs a reason, and the servers allow it only to the admin role.
Both go into the event.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from assay.registry.entities import Event, EventKind, Stage
from assay.registry.errors import ErrorCode, RegistryError

DEFAULT_GATED_STAGES = (Stage.PRODUCTION.value,)
GATE_EVENT_KINDS = (EventKind.GATE_PENDING, EventKind.GATE_APPROVED, EventKind.GATE_REFUSED)


class TargetKind(enum.StrEnum):
    ALIAS = "alias"
    STAGE = "stage"
    PROMPT_ALIAS = "prompt_alias"


@dataclass(frozen=True, slots=True)
class GateTarget:
    """What a move changes: an alias or stage of a model, or an alias of a prompt."""

    kind: TargetKind
    owner: str  # the model's or the prompt's name
    name: str  # the alias, or the stage

    @property
    def label(self) -> str:
        if self.kind is TargetKind.STAGE:
            return f"stage {self.name} of model {self.owner!r}"
        what = "prompt" if self.kind is TargetKind.PROMPT_ALIAS else "model"
        return f"alias {self.name!r} of {what} {self.owner!r}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "owner": self.owner, "name": self.name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateTarget:
        return cls(TargetKind(data["kind"]), str(data["owner"]), str(data["name"]))


@dataclass(frozen=True, slots=True)
class SuiteIdentity:
    """What a verdict was judged on: the suite file's digest and the evaluation code versions."""

    digest: str
    code_versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "code_versions": dict(sorted(self.code_versions.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> SuiteIdentity | None:
        if not isinstance(data, Mapping) or not isinstance(data.get("digest"), str):
            return None
        versions = data.get("code_versions")
        return cls(data["digest"], dict(versions) if isinstance(versions, Mapping) else {})

    def differences(self, other: SuiteIdentity | None) -> list[str]:
        """What differs from ``other`` (empty when both name the same suite and code)."""
        if other is None:
            return ["no suite recorded"]
        out = []
        if self.digest != other.digest:
            out.append(f"suite {other.digest[:12]} (now {self.digest[:12]})")
        for asset in sorted(self.code_versions.keys() | other.code_versions.keys()):
            now, then = self.code_versions.get(asset), other.code_versions.get(asset)
            if now != then:
                out.append(f"{asset} code {str(then)[:12]} (now {str(now)[:12]})")
        return out


def suite_digest(text: str) -> str:
    """The digest of a suite file's content: its parsed YAML as canonical JSON, so comments
    and layout do not count and every entry and criterion does."""
    import yaml  # the registry reads YAML only here

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = text  # an unreadable suite still has an identity: its bytes
    canonical = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def suite_text(path: str | os.PathLike[str] | None = None) -> str:
    """The suite file's text: ``path``, else ``$ASSAY_SUITE``, else the shipped default."""
    path = path or os.environ.get("ASSAY_SUITE")
    if path:
        return Path(path).read_text(encoding="utf-8")
    return resources.files("assay.evaluate.suites").joinpath("default.yaml").read_text("utf-8")


def evaluation_code_versions() -> dict[str, str]:
    """The code versions of the tables an evaluation run writes and a verdict reads (model
    outputs and scores). The scenario's instances are data per scenario, shared by every
    version and written by other runs; their entry in the suite is in the suite's digest."""
    from assay.storage.code_versions import code_version
    from assay.storage.contract import EVALUATION_ASSETS

    return {asset: code_version(asset) for asset in EVALUATION_ASSETS}


def current_suite_identity(path: str | os.PathLike[str] | None = None) -> SuiteIdentity:
    """The identity of the suite this process evaluates with (see :func:`suite_text`)."""
    return SuiteIdentity(suite_digest(suite_text(path)), evaluation_code_versions())


def gated_stages_from_env() -> tuple[str, ...]:
    """``$ASSAY_GATED_STAGES`` (comma-separated; empty gates none) or ``Production``."""
    raw = os.environ.get("ASSAY_GATED_STAGES")
    if raw is None:
        return DEFAULT_GATED_STAGES
    return tuple(Stage.parse(s.strip()).value for s in raw.split(",") if s.strip())


def gated_prompt_aliases_from_env(model_aliases: Iterable[str]) -> tuple[str, ...]:
    """``$ASSAY_GATED_PROMPT_ALIASES`` (comma-separated), else the gated model aliases."""
    raw = os.environ.get("ASSAY_GATED_PROMPT_ALIASES")
    if raw is None:
        return tuple(model_aliases)
    return tuple(a.strip() for a in raw.split(",") if a.strip())


class Outcome(enum.StrEnum):
    MOVED = "moved"  # the target now points at the candidate
    UNCHANGED = "unchanged"  # it already did
    PENDING = "pending"  # recorded; the sensor decides when the verdict comes
    REFUSED = "refused"  # a verdict on the current suite refused it


@dataclass(frozen=True, slots=True)
class Ruling:
    """What :func:`decide_move` says about one requested move."""

    outcome: Outcome
    reason: str
    verdict: Event | None = None  # the gate_approved / gate_refused event relied on
    forced: bool = False


@dataclass(frozen=True, slots=True)
class MoveResult:
    """The answer to a requested move: the outcome, why, and the event that records it."""

    outcome: Outcome
    target: GateTarget
    candidate: str  # version key (``model@v3`` or ``prompt@v3``)
    reason: str
    event: Event | None = None  # the move, the pending request or the refusal
    verdict: Event | None = None
    # The version record (``ModelVersion`` / ``PromptVersion``) as the move left it, read in
    # the move's transaction; None when nothing moved.
    record: Any = None

    @property
    def sentence(self) -> str:
        return f"{self.outcome.value}: {self.target.label} → {self.candidate}: {self.reason}"


def verdict_matches(
    event: Event, target: GateTarget, candidate: str, incumbent: str | None
) -> bool:
    """Whether a verdict event judged this candidate for this target against this incumbent."""
    payload = event.payload
    return (
        event.kind in (EventKind.GATE_APPROVED, EventKind.GATE_REFUSED)
        and payload.get("target") == target.to_json()
        and payload.get("candidate") == candidate
        and payload.get("incumbent") == incumbent
        and not payload.get("forced")
        # A refusal for an operational reason (an evaluation that failed) judged nothing:
        # asking again is pending again, not refused forever.
        and payload.get("judged", True) is not False
    )


def decide_move(
    *,
    target: GateTarget,
    gated: bool,
    candidate: str,
    incumbent: str | None,
    identity: SuiteIdentity | None,
    verdicts: Sequence[Event],
    force: bool = False,
    reason: str | None = None,
) -> Ruling:
    """The one decision (see the module doc). ``verdicts``: the target's verdict events,
    oldest first; ``identity``: the current suite (needed only when ``gated``)."""
    if not gated:
        return Ruling(Outcome.MOVED, "not a gated target")
    if force:
        if not (reason or "").strip():
            raise RegistryError(
                ErrorCode.INVALID_PARAMETER_VALUE,
                f"forcing {target.label} to {candidate!r} needs a reason",
            )
        return Ruling(Outcome.MOVED, f"forced: {reason}", forced=True)
    if identity is None:
        raise RegistryError(
            ErrorCode.INVALID_PARAMETER_VALUE, f"{target.label}: the current suite is unknown"
        )
    stale: list[str] = []
    for event in reversed(verdicts):
        if not verdict_matches(event, target, candidate, incumbent):
            continue
        judged_on = SuiteIdentity.from_json(event.payload.get("suite"))
        differences = identity.differences(judged_on)
        if differences:
            stale.append(f"verdict {event.id} was judged on {', '.join(differences)}")
            continue
        if event.kind is EventKind.GATE_APPROVED:
            return Ruling(Outcome.MOVED, f"approved by verdict {event.id}", verdict=event)
        return Ruling(
            Outcome.REFUSED,
            str(event.payload.get("summary") or f"refused by verdict {event.id}"),
            verdict=event,
        )
    against = f"incumbent {incumbent}" if incumbent else "no incumbent"
    why = (
        f"awaiting a verdict on the current suite ({against}); {stale[0]}"
        if stale
        else f"awaiting a verdict on the current suite ({against})"
    )
    return Ruling(Outcome.PENDING, why)


class PromotionPending(RegistryError):
    """A gated move was recorded as pending, not made: raised by the calls that promise the
    move happened (``set_alias``, ``transition_stage``, ``set_prompt_alias``)."""

    def __init__(self, result: MoveResult) -> None:
        event = f" (event {result.event.id})" if result.event else ""
        super().__init__(
            ErrorCode.INVALID_STATE,
            f"pending{event}: {result.target.label} → {result.candidate} was not moved yet; "
            f"{result.reason}. The promotion sensor evaluates it and moves the alias if every "
            "criterion passes; `assay registry history` shows the decision",
        )
        self.result = result


class PromotionRefused(RegistryError):
    """A gated move refused by a verdict on the current suite; the message has its reasons."""

    def __init__(self, result: MoveResult) -> None:
        verdict = f" by verdict {result.verdict.id}" if result.verdict else ""
        super().__init__(
            ErrorCode.INVALID_PARAMETER_VALUE,
            f"refused{verdict}: {result.target.label} → {result.candidate}: {result.reason}",
        )
        self.result = result


def raise_unless_moved(result: MoveResult) -> None:
    """For the calls that promise a move: pending and refused become exceptions."""
    if result.outcome is Outcome.PENDING:
        raise PromotionPending(result)
    if result.outcome is Outcome.REFUSED:
        raise PromotionRefused(result)


__all__ = (
    "GATE_EVENT_KINDS",
    "GateTarget",
    "MoveResult",
    "Outcome",
    "PromotionPending",
    "PromotionRefused",
    "Ruling",
    "SuiteIdentity",
    "TargetKind",
    "current_suite_identity",
    "decide_move",
    "raise_unless_moved",
    "suite_digest",
    "verdict_matches",
)
