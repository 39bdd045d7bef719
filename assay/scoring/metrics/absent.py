"""The value of a metric that could not be computed, with the reason why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard


@dataclass(frozen=True, slots=True)
class Absent:
    """Stands in for a metric value that does not exist (no log-probs, no groups, no prices).

    Kept distinct from ``0.0`` and ``nan`` so a missing figure is never averaged in as a score.
    """

    reason: str

    def __bool__(self) -> bool:  # an absent value is falsy, like None, so `if value:` reads well
        return False


def is_absent(value: Any) -> TypeGuard[Absent]:
    """True when ``value`` is an :class:`Absent` marker."""
    return isinstance(value, Absent)
