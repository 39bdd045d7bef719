"""What every perturbation is: a named, parameterized, seeded text transformation."""

from __future__ import annotations

import hashlib
import json
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any, ClassVar

ROBUSTNESS = "robustness"
FAIRNESS = "fairness"

# A word for substitution purposes: letters, digits and inner apostrophes ("don't").
WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


class Perturbation(ABC):
    """A deterministic rewrite of an input text.

    ``apply(text, seed)`` is a pure function of the text, the seed (HELM seeds with the
    instance id) and the parameters: the same call always gives the same output. Subclasses
    set ``name`` and ``family`` and expose their parameters through ``params``.
    """

    name: ClassVar[str]
    family: ClassVar[str]

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that, with ``name``, fully determine the perturbation."""
        return {}

    @property
    def spec(self) -> str:
        """The registry spec that rebuilds this perturbation, e.g. ``typos:prob=0.1``."""
        if not self.params:
            return self.name
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}:{args}"

    def rng(self, seed: str | int) -> random.Random:
        """A generator seeded from the spec and ``seed``, independent of global state."""
        digest = hashlib.sha256(f"{self.spec}\x1f{seed}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def apply(self, text: str, seed: str | int) -> str:
        """The perturbed text; ``seed`` is normally the instance id."""
        return self._apply(text, self.rng(seed))

    @abstractmethod
    def _apply(self, text: str, rng: random.Random) -> str: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


def check_prob(name: str, value: float) -> float:
    """Validate a probability parameter, naming it in the error."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


class ProbabilityPerturbation(Perturbation):
    """A perturbation with one parameter: the probability ``prob`` of changing each place it
    could change. Subclasses give ``prob`` its default in their own ``__init__``."""

    def __init__(self, prob: float) -> None:
        self.prob = check_prob("prob", prob)

    @property
    def params(self) -> dict[str, float]:
        return {"prob": self.prob}


@cache
def load_data(filename: str) -> Any:
    """A JSON data file shipped in ``assay/perturbations/data``."""
    path = resources.files("assay.perturbations") / "data" / filename
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"perturbation data file {filename} is not valid JSON: {exc}") from exc


def match_case(template: str, word: str) -> str:
    """``word`` in the capitalization of ``template`` (lower, Title or UPPER)."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def phrase_pattern(phrases: Mapping[str, str]) -> re.Pattern[str]:
    """A case-insensitive whole-word pattern matching any key, longest first."""
    keys = sorted(phrases, key=len, reverse=True)
    return re.compile(
        r"(?<![\w'])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w'])", re.IGNORECASE
    )


def substitute(
    text: str,
    pattern: re.Pattern[str],
    replace: Callable[[str], str | None],
) -> str:
    """Replace each match by ``replace(match)``; ``None`` keeps the match."""

    def one(match: re.Match[str]) -> str:
        new = replace(match.group(0))
        return match.group(0) if new is None else new

    return pattern.sub(one, text)
