"""Fairness perturbations: rewrites that change who is speaking or being spoken about."""

from __future__ import annotations

import random
import re
from functools import cached_property

from assay.perturbations.base import (
    FAIRNESS,
    Perturbation,
    ProbabilityPerturbation,
    load_data,
    match_case,
    phrase_pattern,
    substitute,
)


class Dialect(ProbabilityPerturbation):
    """Standard American English words and phrases rewritten in African American English.

    Each occurrence of a mapped word is rewritten with probability ``prob`` (default: all),
    using the shipped SAE→AAVE table.
    """

    name = "dialect"
    family = FAIRNESS

    def __init__(self, prob: float = 1.0) -> None:
        super().__init__(prob)

    @cached_property
    def _table(self) -> dict[str, str]:
        return {k.lower(): v for k, v in load_data("dialect_sae_aave.json").items()}

    def _apply(self, text: str, rng: random.Random) -> str:
        def rewrite(found: str) -> str | None:
            if rng.random() >= self.prob:
                return None
            return match_case(found, self._table[found.lower()])

        return substitute(text, phrase_pattern(self._table), rewrite)


# Pronoun swaps. "her" is object or possessive and "his" possessive or independent, so those
# two depend on whether a word follows (possessive) or not (object / independent).
_TO_FEMALE = {"he": "she", "him": "her", "himself": "herself", "his": None}
_TO_MALE = {"she": "he", "hers": "his", "herself": "himself", "her": None}
_NEXT_IS_WORD = re.compile(r"\s+[A-Za-z]")


class GenderPronouns(Perturbation):
    """Pronouns swapped to one gender (``target=female`` or ``male``), keeping capitalization."""

    name = "gender_pronouns"
    family = FAIRNESS

    def __init__(self, target: str = "female") -> None:
        if target not in ("female", "male"):
            raise ValueError(f"target must be 'female' or 'male', got {target!r}")
        self.target = target

    @property
    def params(self) -> dict[str, str]:
        return {"target": self.target}

    def _apply(self, text: str, rng: random.Random) -> str:
        table = _TO_FEMALE if self.target == "female" else _TO_MALE
        pattern = re.compile(r"(?<![\w'])(" + "|".join(table) + r")(?![\w'])", re.IGNORECASE)

        def swap(match: re.Match[str]) -> str:
            found = match.group(0)
            new = table[found.lower()]
            if new is None:
                possessive = _NEXT_IS_WORD.match(text, match.end()) is not None
                if self.target == "female":  # his
                    new = "her" if possessive else "hers"
                else:  # her
                    new = "his" if possessive else "him"
            return match_case(found, new)

        return pattern.sub(swap, text)


class PersonNames(Perturbation):
    """First names of ``source`` group replaced by names of ``target`` group, same gender.

    Within one text, one source name always maps to the same target name.
    """

    name = "person_names"
    family = FAIRNESS

    def __init__(self, source: str = "white", target: str = "black") -> None:
        groups = load_data("person_names.json")
        for role, group in (("source", source), ("target", target)):
            if group not in groups:
                raise ValueError(f"{role} group {group!r} is not one of {sorted(groups)}")
        self.source = source
        self.target = target

    @property
    def params(self) -> dict[str, str]:
        return {"source": self.source, "target": self.target}

    @cached_property
    def _gender_of(self) -> dict[str, str]:
        source = load_data("person_names.json")[self.source]
        return {n.lower(): g for g, names in source.items() for n in names}

    def _apply(self, text: str, rng: random.Random) -> str:
        targets = load_data("person_names.json")[self.target]
        chosen: dict[str, str] = {}

        def rename(found: str) -> str:
            key = found.lower()
            if key not in chosen:
                chosen[key] = rng.choice(targets[self._gender_of[key]])
            return match_case(found, chosen[key])

        pattern = phrase_pattern({n: n for n in self._gender_of})
        return substitute(text, pattern, rename)
