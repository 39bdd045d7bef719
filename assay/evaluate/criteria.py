"""The suite's ``promotion:`` block: what a version must show before it takes a gated target.

::

    promotion:
      mode: require_non_inferiority   # or block_regressions (the per-partition check's rule)
      alpha: 0.05                     # family-wise, Holm over every tested criterion
      margin: 0.05                    # of each scenario's primary metric vs the incumbent
      primary_metrics: true           # judge every scenario's primary metric vs the incumbent
      sequential: {chunk: 25, alpha_share: 0.5}  # optional: stop evaluating once decided
      criteria:
        - {scenario: arithmetic, metric: exact_match, at_least: 0.3, on: lower}
        - {family: toxicity, at_most: 0.2}             # every toxicity metric, every scenario
        - {metric: latency_p95_s, at_most: 2.0}
        - {scenario: boolq, metric: acc, margin: 0.02} # non-inferiority vs the incumbent
        - {metric: contamination_rate, at_most: 0.1}   # share of test items flagged

Each criterion names a ``metric`` or a ``family`` (every headline metric of it), optionally a
``scenario`` (a suite key; a group entry's key, such as an lm-eval group ``mmlu``: each of its
tasks, one criterion per task key, all in Holm's count; absent: every scenario that reports
it), and exactly one of
``at_least`` / ``at_most`` (absolute, on the point ``estimate`` or the interval's ``lower`` /
``upper`` bound) or ``margin`` (relative to the incumbent, in the metric's own units).
``assay.compare.decision`` judges them.

``contamination_rate`` is a headline row of every scorecard (``assay.contamination.clean``):
the share of evaluated instances a contamination check flagged, with per-instance rows for
``on: upper``; a partition never checked has it absent with the reason, so a criterion on it
fails there (deny by default). Its family, ``contamination``, is not one of the seven.

The default mode of gated targets is ``require_non_inferiority``: deny by default means a move
needs evidence that the candidate is not worse, and a candidate evaluated on too few instances
shows nothing. ``block_regressions`` (block only a confident regression) stays available.

``sequential`` (absent: off) evaluates the candidate of a decision in chunks, in a fixed
random order of each scenario's instances, and stops once the criteria are decided
(``assay.evaluate.sequential``, ``assay.compare.sequential``): ``chunk`` instances per
scenario per round, ``alpha_share`` of ``alpha`` spent on the anytime-valid tests during the
evaluation and the rest on the fixed-sample rule for what is still undecided at the full
set, and ``bounds`` (metric → [low, high]) for per-instance values the built-in list
(``assay.evaluate.sequential.UNIT_INTERVAL_METRICS``) does not cover.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from assay.core.records import METRIC_FAMILIES

MODES = ("require_non_inferiority", "block_regressions")
DEFAULT_MODE = "require_non_inferiority"
DEFAULT_MARGIN = 0.05


class CriterionSpec(BaseModel):
    """One declared criterion (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    scenario: str | None = None
    metric: str | None = None
    family: str | None = None
    at_least: float | None = None
    at_most: float | None = None
    margin: float | None = Field(default=None, ge=0)
    on: Literal["estimate", "lower", "upper"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: object) -> object:
        # YAML 1.1 (PyYAML's safe_load) reads a bare ``on:`` key as the boolean true.
        if isinstance(data, Mapping) and True in data and "on" not in data:
            return {("on" if key is True else key): value for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _one_of_each(self) -> CriterionSpec:
        if (self.metric is None) == (self.family is None):
            raise ValueError("give exactly one of 'metric' and 'family'")
        if self.family is not None and self.family not in METRIC_FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {', '.join(METRIC_FAMILIES)}")
        given = [k for k in ("at_least", "at_most", "margin") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'at_least', 'at_most' and 'margin'")
        value = getattr(self, given[0])
        if not math.isfinite(value):
            raise ValueError(f"{given[0]} must be a finite number, got {value!r}")
        if self.margin is not None and self.on is not None:
            raise ValueError("'on' chooses the bound of an absolute threshold, not of a margin")
        return self

    @property
    def relative(self) -> bool:
        return self.margin is not None

    @property
    def bound(self) -> str:
        return self.on or "estimate"

    @property
    def subject(self) -> str:
        return self.metric if self.metric is not None else f"family {self.family}"


class SequentialSpec(BaseModel):
    """The ``promotion.sequential`` block (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    chunk: int = Field(ge=1)
    alpha_share: float = Field(default=0.5, gt=0, lt=1)
    bounds: dict[str, list[float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounds_are_intervals(self) -> SequentialSpec:
        for metric, bound in self.bounds.items():
            if not (
                len(bound) == 2 and all(math.isfinite(b) for b in bound) and bound[0] < bound[1]
            ):
                raise ValueError(
                    f"bounds of {metric!r} must be two finite numbers [low, high] with low < "
                    f"high, got {bound!r}"
                )
        return self


class PromotionCriteria(BaseModel):
    """The whole ``promotion:`` block; absent, every default applies."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mode: Literal["require_non_inferiority", "block_regressions"] = DEFAULT_MODE
    alpha: float = Field(default=0.05, gt=0, lt=1)
    margin: float = Field(default=DEFAULT_MARGIN, ge=0)
    primary_metrics: bool = True
    criteria: list[CriterionSpec] = Field(default_factory=list)
    n_resamples: int = Field(default=2000, ge=100)
    sequential: SequentialSpec | None = None

    def check_scenarios(self, keys: list[str], where: str) -> None:
        """Every criterion's scenario is a key of the suite."""
        self.resolve_groups(keys, {}, where)

    def resolve_groups(
        self, keys: Sequence[str], groups: Mapping[str, Sequence[str]], where: str
    ) -> PromotionCriteria:
        """The criteria with each ``scenario`` that names a group entry of the suite file (an
        lm-eval group such as ``mmlu``, whose tasks are the keys ``mmlu.mmlu_anatomy``, ...)
        replaced by one criterion per task key, in the suite's order, so each task is judged
        and Holm's correction counts each. ``groups``: group key → its task keys. A
        ``scenario`` that is neither a key nor a group is an error naming both lists."""
        known = set(keys)
        out: list[CriterionSpec] = []
        for index, criterion in enumerate(self.criteria):
            name = criterion.scenario
            if name is None or name in known:
                out.append(criterion)
            elif name in groups:
                out.extend(criterion.model_copy(update={"scenario": k}) for k in groups[name])
            else:
                group_list = (
                    "; its groups: " + ", ".join(f"{g} ({len(t)} tasks)" for g, t in groups.items())
                    if groups
                    else ""
                )
                plain = [k for k in keys if not any(k in t for t in groups.values())]
                raise ValueError(
                    f"{where}.criteria[{index}].scenario: {name!r} is neither a scenario key "
                    f"nor a group of the suite (its keys: {', '.join(plain) or 'none'}"
                    f"{group_list})"
                )
        return self.model_copy(update={"criteria": out})


__all__ = (
    "DEFAULT_MARGIN",
    "DEFAULT_MODE",
    "MODES",
    "CriterionSpec",
    "PromotionCriteria",
    "SequentialSpec",
)
