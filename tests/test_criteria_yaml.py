"""The ``promotion:`` block as users write it in YAML: PyYAML reads a bare ``on:`` key (the
bound of an absolute criterion) as the boolean true, and the criterion still means it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from assay.evaluate.criteria import CriterionSpec, PromotionCriteria

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_example_with_a_bare_on_key_reads_as_written() -> None:
    line = next(
        m.group(0)
        for m in re.finditer(
            r"\{scenario: arithmetic, metric: exact_match, [^}]*\}", README.read_text()
        )
        if "on: lower" in m.group(0)
    )
    raw = yaml.safe_load(line)
    assert True in raw  # what YAML 1.1 makes of the key
    criterion = CriterionSpec.model_validate(raw)
    assert (criterion.on, criterion.bound, criterion.at_least) == ("lower", "lower", 0.3)
    block = PromotionCriteria.model_validate(yaml.safe_load(f"criteria:\n  - {line}\n"))
    assert block.criteria[0].on == "lower"


def test_a_bad_bound_under_a_bare_on_key_is_still_refused() -> None:
    with pytest.raises(ValidationError, match="'estimate', 'lower' or 'upper'"):
        CriterionSpec.model_validate(yaml.safe_load("{metric: acc, at_least: 0.3, on: lowest}"))
    # A margin has no bound to choose, however the key was spelled.
    with pytest.raises(ValidationError, match="'on' chooses the bound"):
        CriterionSpec.model_validate(yaml.safe_load("{metric: acc, margin: 0.1, on: lower}"))
