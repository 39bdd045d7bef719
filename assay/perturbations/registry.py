"""Perturbations by name: ``get_perturbation("typos:prob=0.1")``.

A spec is ``name`` or ``name:key=value,key=value``. Values are parsed as int, then float,
then kept as strings. The spec of a built perturbation (``.spec``) rebuilds it exactly.
"""

from __future__ import annotations

from typing import Any

from assay.perturbations.base import Perturbation
from assay.perturbations.fairness import Dialect, GenderPronouns, PersonNames
from assay.perturbations.robustness import (
    Contractions,
    Expansions,
    ExtraSpaces,
    FillerWords,
    Lowercase,
    MildMix,
    Misspellings,
    Synonyms,
    Typos,
)

PERTURBATIONS: dict[str, type[Perturbation]] = {
    cls.name: cls
    for cls in (
        Lowercase,
        Contractions,
        Expansions,
        Misspellings,
        Typos,
        ExtraSpaces,
        FillerWords,
        Synonyms,
        MildMix,
        Dialect,
        GenderPronouns,
        PersonNames,
    )
}


def _value(text: str) -> Any:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def get_perturbation(spec: str) -> Perturbation:
    """Build the perturbation a spec names; ``ValueError`` says which part is wrong."""
    name, _, arg_text = spec.strip().partition(":")
    cls = PERTURBATIONS.get(name)
    if cls is None:
        raise ValueError(
            f"unknown perturbation {name!r} in spec {spec!r}; "
            f"known: {', '.join(sorted(PERTURBATIONS))}"
        )
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in arg_text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"argument {part!r} in spec {spec!r} is not key=value")
        kwargs[key.strip()] = _value(value.strip())
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments in perturbation spec {spec!r}: {exc}") from exc


def family_of(spec: str) -> str:
    """'robustness' or 'fairness' for a perturbation spec."""
    name = spec.strip().partition(":")[0]
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r} in spec {spec!r}")
    return PERTURBATIONS[name].family
