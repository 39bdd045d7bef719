"""Robustness perturbations: meaning-preserving noise a user might introduce."""

from __future__ import annotations

import random
from functools import cached_property

from assay.perturbations.base import (
    ROBUSTNESS,
    WORD,
    Perturbation,
    ProbabilityPerturbation,
    load_data,
    match_case,
    phrase_pattern,
    substitute,
)

# Neighbouring keys on a QWERTY keyboard, for typos.
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbours() -> dict[str, str]:
    where = {ch: (r, c) for r, row in enumerate(_KEYBOARD_ROWS) for c, ch in enumerate(row)}
    out = {}
    for ch, (r, c) in where.items():
        near = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr or dc) and 0 <= rr < 3 and 0 <= cc < len(_KEYBOARD_ROWS[rr]):
                    near.append(_KEYBOARD_ROWS[rr][cc])
        out[ch] = "".join(near)
    return out


_NEIGHBOURS = _neighbours()


class Lowercase(Perturbation):
    """All text lowercased."""

    name = "lowercase"
    family = ROBUSTNESS

    def _apply(self, text: str, rng: random.Random) -> str:
        return text.lower()


class Contractions(Perturbation):
    """Expanded forms contracted ("do not" → "don't"), from the shipped table."""

    name = "contractions"
    family = ROBUSTNESS

    @cached_property
    def _table(self) -> dict[str, str]:
        return {k.lower(): v for k, v in load_data("contractions.json").items()}

    def _apply(self, text: str, rng: random.Random) -> str:
        def contract(found: str) -> str:
            new = self._table[found.lower()]
            # "I" stays capital; otherwise keep the case of the first letter.
            return new if new.startswith("I'") else match_case(found, new)

        return substitute(text, phrase_pattern(self._table), contract)


class Expansions(Perturbation):
    """Contractions expanded ("don't" → "do not"), the inverse of :class:`Contractions`."""

    name = "expansions"
    family = ROBUSTNESS

    @cached_property
    def _table(self) -> dict[str, str]:
        return {v.lower(): k for k, v in load_data("contractions.json").items()}

    def _apply(self, text: str, rng: random.Random) -> str:
        def expand(found: str) -> str:
            new = self._table[found.lower()]
            return new if new.startswith("I ") else match_case(found, new)

        return substitute(text, phrase_pattern(self._table), expand)


class _WordTableSwap(ProbabilityPerturbation):
    """Each word listed in ``table_file`` is replaced by one of its entries with probability
    ``prob`` (the case of the original word is kept)."""

    family = ROBUSTNESS
    table_file = ""

    def _apply(self, text: str, rng: random.Random) -> str:
        table: dict[str, list[str]] = load_data(self.table_file)

        def swap(word: str) -> str | None:
            options = table.get(word.lower())
            if not options or rng.random() >= self.prob:
                return None
            return match_case(word, rng.choice(options))

        return substitute(text, WORD, swap)


class Misspellings(_WordTableSwap):
    """Each word with a known common misspelling is misspelled with probability ``prob``."""

    name = "misspellings"
    table_file = "misspellings.json"

    def __init__(self, prob: float = 0.1) -> None:
        super().__init__(prob)


class Typos(ProbabilityPerturbation):
    """Each letter is swapped for a neighbouring keyboard key with probability ``prob``."""

    name = "typos"
    family = ROBUSTNESS

    def __init__(self, prob: float = 0.05) -> None:
        super().__init__(prob)

    def _apply(self, text: str, rng: random.Random) -> str:
        out = []
        for ch in text:
            near = _NEIGHBOURS.get(ch.lower())
            if near and rng.random() < self.prob:
                swap = rng.choice(near)
                out.append(swap.upper() if ch.isupper() else swap)
            else:
                out.append(ch)
        return "".join(out)


class ExtraSpaces(Perturbation):
    """Each space becomes 1 to ``max_spaces`` spaces (uniformly)."""

    name = "extra_spaces"
    family = ROBUSTNESS

    def __init__(self, max_spaces: int = 3) -> None:
        if int(max_spaces) < 1:
            raise ValueError(f"max_spaces must be at least 1, got {max_spaces}")
        self.max_spaces = int(max_spaces)

    @property
    def params(self) -> dict[str, int]:
        return {"max_spaces": self.max_spaces}

    def _apply(self, text: str, rng: random.Random) -> str:
        return "".join(" " * rng.randint(1, self.max_spaces) if ch == " " else ch for ch in text)


_FILLERS = ("uh", "um", "like", "you know", "I mean", "so", "well", "basically")


class FillerWords(ProbabilityPerturbation):
    """A filler ("um", "you know", ...) is inserted before each word with probability ``prob``."""

    name = "filler_words"
    family = ROBUSTNESS

    def __init__(self, prob: float = 0.1) -> None:
        super().__init__(prob)

    def _apply(self, text: str, rng: random.Random) -> str:
        words = text.split(" ")
        out = []
        for i, word in enumerate(words):
            # Never before the first word: a leading filler would change the capitalization.
            if i > 0 and word and rng.random() < self.prob:
                out.append(rng.choice(_FILLERS))
            out.append(word)
        return " ".join(out)


class Synonyms(_WordTableSwap):
    """Each word with a shipped synonym is replaced with probability ``prob``."""

    name = "synonyms"
    table_file = "synonyms.json"

    def __init__(self, prob: float = 0.5) -> None:
        super().__init__(prob)


class MildMix(Perturbation):
    """Several mild perturbations in a row: lowercase, contractions, spaces, misspellings, typos.

    Each stage draws from its own generator (seeded from the stage's spec and the same seed),
    so one stage's randomness does not shift another's.
    """

    name = "mild_mix"
    family = ROBUSTNESS

    def __init__(self) -> None:
        self.stages: tuple[Perturbation, ...] = (
            Lowercase(),
            Contractions(),
            ExtraSpaces(max_spaces=2),
            Misspellings(prob=0.1),
            Typos(prob=0.01),
        )

    def apply(self, text: str, seed: str | int) -> str:
        for stage in self.stages:
            text = stage.apply(text, seed)
        return text

    def _apply(self, text: str, rng: random.Random) -> str:  # pragma: no cover - apply overrides
        raise NotImplementedError
