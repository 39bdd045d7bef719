"""One headline figure per metric family on the leaderboard, with its interval or the reason
it has none.

The board ranks by win rates, which say who is ahead but not by how much nor how surely. Under
it, each of the seven families shows one figure per version, read from the metric tables: the
first of the family's candidates (``FAMILY_HEADLINES``) that a scenario on the board measured.
Scenarios whose primary metric is of the family come first, then the others in suite order;
among them, one where every version has the figure wins over one where fewer have it.
``{primary}`` stands for the scenario's primary metric. A version without the figure shows why
(the scorecard's reason, or that it was not evaluated there); a family no scenario measured
shows the reason its first scenario gives.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from assay.core.records import METRIC_FAMILIES

FAMILY_ORDER = METRIC_FAMILIES


@dataclass(frozen=True)
class Candidate:
    """A figure a family may show: a metric (``{primary}``: the scenario's primary metric) on
    the original inputs, on a perturbation family's worst case, or broken down by a group."""

    metric: str
    perturbation: str = ""  # "robustness" / "fairness": the worst case over that family
    grouped: bool = False  # a group breakdown row (any group key), e.g. a group gap
    label: str = ""  # how the board names it, after the metric
    # Which way is better when the metric's name does not say (directions.LOWER_IS_BETTER
    # lists metrics by name; a group gap's name carries the metric it is a gap of).
    lower_is_better: bool | None = None

    def metric_for(self, primary: str) -> str:
        return self.metric.replace("{primary}", primary)


FAMILY_HEADLINES: Mapping[str, tuple[Candidate, ...]] = {
    "accuracy": (Candidate("{primary}"),),
    "calibration": (Candidate("ece_10_bin"), Candidate("ece_1_bin")),
    "robustness": (Candidate("{primary}", "robustness", label="worst case"),),
    "fairness": (
        Candidate("{primary}", "fairness", label="worst case"),
        Candidate(
            "{primary}_group_gap", grouped=True, label="largest group gap", lower_is_better=True
        ),
    ),
    "bias": (
        Candidate("bias_gender_representation"),
        Candidate("bias_race_representation"),
        Candidate("bias_gender_profession_association"),
        Candidate("bbq_ambiguous_bias"),
    ),
    "toxicity": (
        Candidate("expected_max_toxicity"),
        Candidate("max_toxicity"),
        Candidate("toxicity"),
    ),
    "efficiency": (Candidate("latency_mean_s"), Candidate("tokens_per_s")),
}


@dataclass(frozen=True)
class FigureCell:
    """One version's value of a family figure. ``note`` says why the interval or the value is
    missing ("" when both are there)."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    note: str = ""

    @property
    def has_interval(self) -> bool:
        return self.mean is not None and self.ci_low is not None and self.ci_high is not None


@dataclass(frozen=True)
class FamilyFigure:
    """A family's headline figure: where it was measured and each version's value."""

    family: str
    scenario: str  # "" when no scenario measured the family
    metric: str
    perturbation: str
    group: str  # the group key of a breakdown row, "" otherwise
    label: str
    lower_is_better: bool
    cells: Mapping[str, FigureCell]  # model version → its value

    @property
    def title(self) -> str:
        """``scenario metric, label`` with an arrow for the better direction."""
        if not self.scenario:
            return "not measured"
        arrow = "↓" if self.lower_is_better else "↑"
        parts = [self.scenario, self.metric]
        extra = [x for x in (self.label, f"by {self.group}" if self.group else "") if x]
        text = " ".join(parts) + (f" ({', '.join(extra)})" if extra else "")
        return f"{text} {arrow}"

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per version, for exports."""
        return [
            {
                "family": self.family,
                "scenario": self.scenario,
                "metric": self.metric,
                "perturbation": self.perturbation,
                "group": self.group,
                "lower_is_better": self.lower_is_better,
                "model_version": version,
                "mean": cell.mean,
                "ci_low": cell.ci_low,
                "ci_high": cell.ci_high,
                "note": cell.note,
            }
            for version, cell in self.cells.items()
        ]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


Rows = Mapping[str, list[dict[str, Any]]]  # model version → its scorecard rows of one figure
# (scenario, family, metric, perturbation, broken down by a group)
Key = tuple[str, str, str, str, bool]


def _measured(rows: Sequence[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The first row with a value (a breakdown may have one row per group key)."""
    return next(
        (r for r in rows or () if not r.get("reason") and _number(r["mean"]) is not None), None
    )


def _cell(rows: Rows, version: str, scenario: str) -> FigureCell:
    row = _measured(rows.get(version))
    if row is None:
        own = rows.get(version)
        why = (own[0].get("reason") or "no value") if own else f"not evaluated on {scenario}"
        return FigureCell(None, None, None, why)
    low, high = _number(row["ci_low"]), _number(row["ci_high"])
    if low is None or high is None:
        return FigureCell(_number(row["mean"]), None, None, row.get("ci_note") or "no interval")
    return FigureCell(_number(row["mean"]), low, high)


def family_figures(
    scorecards: pa.Table,
    primary_metrics: Mapping[str, str],
    versions: Sequence[str],
    lower_is_better: Collection[str] = frozenset(),
) -> tuple[FamilyFigure, ...]:
    """Each family's headline figure (``FAMILY_HEADLINES``) for ``versions``, from the
    metric tables; ``primary_metrics`` orders the scenarios (suite order)."""
    wanted = [
        "model_version",
        "scenario",
        "metric",
        "family",
        "group",
        "perturbation",
        "mean",
        "ci_low",
        "ci_high",
        "reason",
        "ci_note",
    ]
    columns = [c for c in wanted if c in scorecards.column_names]
    index: dict[Key, dict[str, list[dict[str, Any]]]] = {}
    for row in scorecards.select(columns).to_pylist():
        key = (
            row["scenario"],
            row["family"],
            row["metric"],
            row["perturbation"],
            bool(row["group"]),
        )
        index.setdefault(key, {}).setdefault(row["model_version"], []).append(row)
    # The family of each scenario's primary metric: a scenario put in the suite for a family
    # (its primary metric is of that family) is where that family looks first.
    primary_family = {
        key[0]: key[1]
        for key in index
        if key[0] in primary_metrics and key[2:] == (primary_metrics[key[0]], "", False)
    }
    figures = []
    for family in FAMILY_ORDER:
        scenarios = sorted(primary_metrics, key=lambda s: primary_family.get(s) != family)
        figures.append(
            _headline(family, index, scenarios, primary_metrics, versions, lower_is_better)
        )
    return tuple(figures)


def _headline(
    family: str,
    index: Mapping[Key, Rows],
    scenarios: Sequence[str],
    primary_metrics: Mapping[str, str],
    versions: Sequence[str],
    lower_is_better: Collection[str],
) -> FamilyFigure:
    for candidate in FAMILY_HEADLINES[family]:
        found = []  # (versions with a value, scenario position, the figure's key)
        for position, scenario in enumerate(scenarios):
            metric = candidate.metric_for(primary_metrics[scenario])
            key = (scenario, family, metric, candidate.perturbation, candidate.grouped)
            rows = index.get(key, {})
            count = sum(_measured(rows.get(v)) is not None for v in versions)
            if count:
                found.append((count, -position, key))
        if not found:
            continue
        # Measured for the most versions (all, when any is); suite order breaks ties.
        *_, key = max(found)
        scenario, _, metric, perturbation, _ = key
        rows = index[key]
        measured = [_measured(rows.get(v)) for v in versions]
        return FamilyFigure(
            family=family,
            scenario=scenario,
            metric=metric,
            perturbation=perturbation,
            group=next((str(r["group"]) for r in measured if r is not None), ""),
            label=candidate.label,
            lower_is_better=(
                metric in lower_is_better
                if candidate.lower_is_better is None
                else candidate.lower_is_better
            ),
            cells={v: _cell(rows, v, scenario) for v in versions},
        )
    reason = _first_reason(family, index, scenarios) or f"no scenario measures {family}"
    cells = {v: FigureCell(None, None, None, reason) for v in versions}
    return FamilyFigure(family, "", "", "", "", "", False, cells)


def _first_reason(family: str, index: Mapping[Key, Rows], scenarios: Sequence[str]) -> str:
    """The reason the first scenario (suite order) gives for one of the family's absent rows."""
    for scenario in scenarios:
        for (s, f, *_), by_version in index.items():
            if (s, f) != (scenario, family):
                continue
            for rows in by_version.values():
                for row in rows:
                    if row.get("reason"):
                        return str(row["reason"])
    return ""
