"""From per-instance stats to summaries: means with bootstrap intervals, robustness and
fairness as worst cases over perturbations, clean-vs-perturbed deltas, per-group gaps.

Robustness and fairness follow HELM's worst-case definition: for each instance (and metric,
trial, template), take the worst value over the original input and every perturbation of
that family; a perturbation that left the input unchanged is dropped (it measures nothing,
and HELM never runs it). Lower-is-better metrics pass ``higher_is_better=False``.

Everything here is deterministic: bootstrap seeds derive from names (metric, group, ...)
with :func:`assay.core.digests.seed_from`, so reruns agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from assay.core.digests import seed_from
from assay.core.records import InstanceStat, MetricSummary
from assay.scoring.metrics.absent import Absent
from assay.scoring.summary import summarize
from assay.stats.resampling import bootstrap_means

ORIGINAL = ""  # InstanceStat.perturbation of the unperturbed input


_Key = tuple[str, str, int, str]  # instance_id, metric, trial, template_id


def _key(stat: InstanceStat) -> _Key:
    return (stat.instance_id, stat.metric, stat.trial, stat.template_id)


def worst_case(
    stats: Iterable[InstanceStat],
    family: str,
    family_of: Mapping[str, str] | Callable[[str], str],
    unchanged: Collection[tuple[str, str]] = (),
    higher_is_better: bool | Mapping[str, bool] = True,
) -> list[InstanceStat]:
    """Per-instance worst value over the original and the ``family`` perturbations.

    ``family_of`` maps a perturbation name (``InstanceStat.perturbation``) to its family
    ('robustness' or 'fairness'). ``unchanged`` holds (instance_id, perturbation) pairs whose
    perturbed input equals the original; their rows are dropped. The result rows carry
    ``perturbation=family``. Instances with no row of this family (only the original) are
    still reported: their worst case is the original value.
    """
    lookup = family_of.get if isinstance(family_of, Mapping) else family_of
    drop = set(unchanged)
    worst: dict[_Key, InstanceStat] = {}
    for stat in stats:
        if stat.group:  # group-level rows are breakdowns, not instances
            continue
        if stat.perturbation != ORIGINAL:
            if lookup(stat.perturbation) != family:
                continue
            if (stat.instance_id, stat.perturbation) in drop:
                continue
        up = (
            higher_is_better
            if isinstance(higher_is_better, bool)
            else higher_is_better.get(stat.metric, True)
        )
        key = _key(stat)
        current = worst.get(key)
        if current is None or (stat.value < current.value if up else stat.value > current.value):
            worst[key] = stat
    return [replace(s, perturbation=family) for s in worst.values()]


def perturbation_deltas(
    stats: Iterable[InstanceStat],
    unchanged: Collection[tuple[str, str]] = (),
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> list[MetricSummary]:
    """Mean (perturbed − clean) per (metric, perturbation) over instances that have both.

    Rows carry ``metric=<metric>`` and ``perturbation=<name>``; family is ``"delta"``.
    """
    drop = set(unchanged)
    clean: dict[_Key, float] = {}
    perturbed: dict[tuple[str, str], list[tuple[_Key, float]]] = defaultdict(list)
    for stat in stats:
        if stat.group:
            continue
        if stat.perturbation == ORIGINAL:
            clean[_key(stat)] = stat.value
        elif (stat.instance_id, stat.perturbation) not in drop:
            perturbed[(stat.metric, stat.perturbation)].append((_key(stat), stat.value))
    out = []
    for (metric, name), rows in sorted(perturbed.items()):
        diffs = [value - clean[key] for key, value in rows if key in clean]
        summary = summarize(
            diffs, metric, "delta", "", name, n_resamples=n_resamples, confidence=confidence
        )
        if not summary.present:
            summary = replace(summary, reason=f"no clean counterpart for {metric} under {name}")
        out.append(summary)
    return out


@dataclass(frozen=True, slots=True)
class GroupComparison:
    """Per-group summaries of one metric and the spread between the groups."""

    metric: str
    groups: tuple[MetricSummary, ...]
    largest_gap: float | Absent  # best group mean − worst group mean
    gap_ci: tuple[float, float] | Absent
    ratio: float | Absent  # worst group mean / best group mean
    ratio_ci: tuple[float, float] | Absent


def group_breakdown(
    stats: Iterable[InstanceStat],
    metric: str,
    family: str = "fairness",
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> GroupComparison:
    """Compare ``metric`` across the groups in ``InstanceStat.group`` (original inputs only).

    The gap and ratio intervals resample each group independently (a stratified bootstrap),
    re-identifying the best and worst group in every resample.
    """
    per_group: dict[str, list[float]] = defaultdict(list)
    for stat in stats:
        if stat.metric == metric and stat.group and stat.perturbation == ORIGINAL:
            per_group[stat.group].append(stat.value)
    summaries = tuple(
        summarize(v, metric, family, g, "", n_resamples=n_resamples, confidence=confidence)
        for g, v in sorted(per_group.items())
    )
    if len(per_group) < 2:
        why = Absent(f"{metric} has {len(per_group)} group(s); a comparison needs two")
        return GroupComparison(metric, summaries, why, why, why, why)

    means = np.array([np.mean(v) for _, v in sorted(per_group.items())])
    # Each group is resampled on its own (stratified), from a seed named after it.
    draws = np.column_stack(
        [
            bootstrap_means(
                v, n_resamples=n_resamples, seed=seed_from("group_breakdown", metric, family, g)
            )[:, 0]
            for g, v in sorted(per_group.items())
        ]
    )
    alpha = (1.0 - confidence) / 2.0
    gaps = draws.max(axis=1) - draws.min(axis=1)
    gap_ci = tuple(float(q) for q in np.quantile(gaps, [alpha, 1.0 - alpha]))

    ratio: float | Absent
    ratio_ci: tuple[float, float] | Absent
    if means.max() <= 0:
        ratio = ratio_ci = Absent("the best group mean is not positive; a ratio is undefined")
    else:
        ratio = float(means.min() / means.max())
        tops = draws.max(axis=1)
        if np.any(tops <= 0):
            ratio_ci = Absent("some resampled best-group means are not positive")
        else:
            ratios = draws.min(axis=1) / tops
            ratio_ci = tuple(float(q) for q in np.quantile(ratios, [alpha, 1.0 - alpha]))  # type: ignore[assignment]
    return GroupComparison(
        metric=metric,
        groups=summaries,
        largest_gap=float(means.max() - means.min()),
        gap_ci=gap_ci,  # type: ignore[arg-type]
        ratio=ratio,
        ratio_ci=ratio_ci,
    )
