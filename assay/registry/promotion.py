"""Which registry events count as a promotion, and so trigger a re-evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assay.registry import Event, EventKind, Stage


@dataclass(frozen=True, slots=True)
class Promotion:
    """A version to re-evaluate, and the event that asked for it: across the whole suite
    (``scenarios`` None, a model promotion) or on the listed suite keys (a prompt promotion:
    the entries that read the moved prompt alias). ``rescore_only``: the moved prompt is a
    judge's rubric, so the stored outputs are scored again and the model is not called."""

    event_id: int
    key: str
    reason: str
    scenarios: tuple[str, ...] | None = None
    rescore_only: bool = False

    def joined(self, other: Promotion) -> Promotion:
        """One promotion asking for what both ask for (the earlier event keeps the run)."""
        rescore_only = self.rescore_only and other.rescore_only
        if self.scenarios is None or other.scenarios is None:
            return Promotion(self.event_id, self.key, self.reason, None, rescore_only)
        keys = self.scenarios + tuple(k for k in other.scenarios if k not in self.scenarios)
        return Promotion(self.event_id, self.key, self.reason, keys, rescore_only)


@dataclass(frozen=True)
class PromotionPolicy:
    """Any alias set or moved (or only the listed ones), or a move to a listed stage."""

    aliases: frozenset[str] | None = None  # None: every alias counts
    stages: frozenset[str] = frozenset({Stage.STAGING.value, Stage.PRODUCTION.value})

    @classmethod
    def from_lists(cls, aliases: Sequence[str] | None, stages: Sequence[str]) -> PromotionPolicy:
        return cls(
            aliases=None if aliases is None else frozenset(aliases),
            stages=frozenset(Stage.parse(s).value for s in stages),
        )

    def promotion(self, event: Event) -> Promotion | None:
        if event.key is None:
            return None
        if "decision" in event.payload and "forced" not in event.payload:
            # Applied by a promotion decision, judged on current results of the whole suite:
            # evaluating it again would repeat them.
            return None
        if event.kind in (EventKind.ALIAS_SET, EventKind.ALIAS_MOVED):
            alias = str(event.payload.get("alias"))
            if self.aliases is None or alias in self.aliases:
                return Promotion(event.id, event.key, f"alias {alias!r} → {event.key}")
        if event.kind is EventKind.STAGE_CHANGED:
            stage = str(event.payload.get("after"))
            if stage in self.stages:
                return Promotion(event.id, event.key, f"stage {stage} → {event.key}")
        return None

    def holds_promotion_alias(self, aliases: Iterable[str]) -> bool:
        """Whether a version holding ``aliases`` is a promoted version under this policy."""
        return any(self.aliases is None or a in self.aliases for a in aliases)

    def promotions(self, events: Iterable[Event]) -> list[Promotion]:
        """Promotions in event order; a version promoted twice in the batch appears once."""
        seen, found = set(), []
        for event in events:
            promotion = self.promotion(event)
            if promotion and promotion.key not in seen:
                seen.add(promotion.key)
                found.append(promotion)
        return found


def new_version_keys(events: Iterable[Event]) -> list[str]:
    """Keys of the versions created by these events, in order."""
    return [e.key for e in events if e.kind is EventKind.VERSION_CREATED and e.key]
