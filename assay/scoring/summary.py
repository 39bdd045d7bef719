"""Scorecard rows: a bootstrap mean per (metric, family, group, perturbation), rows for
figures that are computed once per partition, and the table they are stored as.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from assay.core.digests import seed_from
from assay.core.records import InstanceStat, MetricSummary
from assay.scoring.metrics.absent import Absent
from assay.stats.resampling import bootstrap_interval, bootstrap_means, percentile_interval

SCORECARD_SCHEMA = pa.schema(
    [
        ("metric", pa.string()),
        ("family", pa.string()),
        ("group", pa.string()),
        ("perturbation", pa.string()),
        ("mean", pa.float64()),
        ("count", pa.int64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("reason", pa.string()),  # why a metric is absent; "" when computed
        ("ci_note", pa.string()),  # why a computed figure has no interval; "" when it has one
        # Smaller is better: the metric is in LOWER_IS_BETTER or its scorer said so.
        ("lower_is_better", pa.bool_()),
        # Which instances: "" all evaluated; "clean" / "clean-full" (MetricSummary.subset).
        ("subset", pa.string()),
    ]
)
# Columns added after metric tables were first stored; readers must not require them.
LATER_SCORECARD_COLUMNS = ("ci_note", "lower_is_better", "subset")


def absent(
    metric: str, family: str, reason: str, group: str = "", perturbation: str = ""
) -> MetricSummary:
    """The row of a metric that cannot be computed: NaN mean, the reason why."""
    return MetricSummary(
        metric, family, group, perturbation, math.nan, 0, math.nan, math.nan, reason
    )


def point(
    metric: str,
    family: str,
    value: float | Absent,
    count: int,
    group: str = "",
    no_interval: str = "",
) -> MetricSummary:
    """A partition-level figure; its interval is NaN until one is attached (see
    ``assay.scoring.intervals``), and ``no_interval`` says why a figure never has one."""
    if isinstance(value, Absent):
        return absent(metric, family, value.reason, group)
    return MetricSummary(
        metric, family, group, "", float(value), count, math.nan, math.nan, ci_note=no_interval
    )


def summarize(
    values: Iterable[float | Absent | None],
    metric: str,
    family: str,
    group: str = "",
    perturbation: str = "",
    *,
    seed_key: str = "",
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> MetricSummary:
    """Mean and bootstrap interval of the present values; absent when there are none.

    The bootstrap seed derives from ``seed_key`` and the row's names, so reruns agree. One
    value, or a value that is not finite, gives a NaN interval: there is no spread to estimate.
    """
    kept = np.array(
        [float(v) for v in values if v is not None and not isinstance(v, Absent)], dtype=float
    )
    if kept.size == 0:
        why = f"no instance has a value for {metric}"
        return absent(metric, family, why, group, perturbation)
    low = high = math.nan
    note = ""
    if kept.size < 2:
        note = "one instance: no spread to resample"
    elif not np.all(np.isfinite(kept)):
        note = "a value is not finite"
    else:
        low, high = bootstrap_interval(
            kept,
            seed=seed_from(seed_key, metric, family, group, perturbation),
            n_resamples=n_resamples,
            confidence=confidence,
        )
    return MetricSummary(
        metric,
        family,
        group,
        perturbation,
        float(kept.mean()),
        int(kept.size),
        low,
        high,
        ci_note=note,
    )


def scorecard(stats: Sequence[InstanceStat], seed_key: str = "") -> list[MetricSummary]:
    """Mean, count and a bootstrap 95% interval per (metric, family, group, perturbation).

    Rows that share an instance (trials) are averaged per instance first, so the interval
    resamples instances, not correlated rows.
    """
    cells: dict[tuple[str, str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for s in stats:
        cells[(s.metric, s.family, s.group, s.perturbation)][s.instance_id].append(s.value)
    return [
        summarize(
            [float(np.mean(v)) for v in per_instance.values()],
            metric,
            family,
            group,
            perturbation,
            seed_key=seed_key,
        )
        for (metric, family, group, perturbation), per_instance in sorted(cells.items())
    ]


# Monotone functions of a ratio a scorecard row may report instead of the ratio itself,
# by name (``ScorerRun.ratio_transforms``): lm-eval's corpus perplexities are functions of
# a log-likelihood sum over a word or byte count.
RATIO_TRANSFORMS: dict[str, Any] = {
    "exp_neg": lambda r: np.exp(-r),  # weighted perplexity: exp(-Σ loglik / Σ weight)
    "neg_bits": lambda r: -r / math.log(2),  # bits per byte: -Σ loglik / Σ bytes / ln 2
}


def ratio_rows(
    stats: Sequence[InstanceStat],
    ratios: Mapping[str, tuple[str, str]],
    seed_key: str = "",
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    transforms: Mapping[str, str] | None = None,
) -> list[MetricSummary]:
    """A scorer's ratio metrics (``assay.core.scorers``, "Ratios"): per (family, group,
    perturbation) cell holding both parts, the numerators' sum over the denominators' sum.

    Each part is averaged per instance over its rows first (trials, templates), as in
    :func:`scorecard`; instances lacking either part are left out. The interval resamples
    instances, both parts of an instance together; ``count`` is the number of instances.
    ``transforms`` (ratio name → a name in :data:`RATIO_TRANSFORMS`) reports a function of
    the ratio instead, applied to the point and to every resampled ratio alike.
    """
    transforms = transforms or {}
    unknown = sorted(set(transforms.values()) - set(RATIO_TRANSFORMS))
    if unknown:
        raise ValueError(
            f"unknown ratio transform(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(RATIO_TRANSFORMS))}"
        )
    parts = {metric for pair in ratios.values() for metric in pair}
    cells: dict[tuple[str, str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for s in stats:
        if s.metric in parts:
            cells[(s.metric, s.family, s.group, s.perturbation)][s.instance_id].append(s.value)
    rows = []
    places = sorted({key[1:] for key in cells})
    for name, (numerator, denominator) in sorted(ratios.items()):
        for family, group, perturbation in places:
            num = cells.get((numerator, family, group, perturbation), {})
            den = cells.get((denominator, family, group, perturbation), {})
            ids = sorted(set(num) & set(den))
            if not ids:
                continue
            pairs = np.array([[np.mean(num[i]), np.mean(den[i])] for i in ids], dtype=float)
            row = _ratio(
                pairs, name, family, group, perturbation, seed_key, n_resamples, confidence
            )
            if name in transforms and not row.reason:
                row = _transformed(row, RATIO_TRANSFORMS[transforms[name]])
            rows.append(row)
    return rows


def _transformed(row: MetricSummary, function: Any) -> MetricSummary:
    """``row`` with its ratio and interval mapped through a monotone ``function`` (a
    decreasing one swaps the ends)."""
    ends = sorted(float(function(v)) for v in (row.ci_low, row.ci_high))
    low, high = (math.nan, math.nan) if math.isnan(row.ci_low) else ends
    return replace(row, mean=float(function(row.mean)), ci_low=low, ci_high=high)


def _ratio(
    pairs: np.ndarray,
    name: str,
    family: str,
    group: str,
    perturbation: str,
    seed_key: str,
    n_resamples: int,
    confidence: float,
) -> MetricSummary:
    total = float(pairs[:, 1].sum())
    if not np.all(np.isfinite(pairs)):
        return absent(name, family, "a numerator or denominator is not finite", group, perturbation)
    if total <= 0:
        why = f"the denominators of {name} sum to {total:g}: a ratio is undefined"
        return absent(name, family, why, group, perturbation)
    value = float(pairs[:, 0].sum()) / total
    low = high = math.nan
    note = ""
    if len(pairs) < 2:
        note = "one instance: no spread to resample"
    else:
        seed = seed_from(seed_key, name, family, group, perturbation)
        means = bootstrap_means(pairs, n_resamples=n_resamples, seed=seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled = np.where(means[:, 1] > 0, means[:, 0] / means[:, 1], np.nan)
        low, high = percentile_interval(resampled, confidence)
    return MetricSummary(
        name, family, group, perturbation, value, len(pairs), low, high, ci_note=note
    )


def scorecard_table(rows: Sequence[MetricSummary]) -> pa.Table:
    """The rows as a ``metric_tables`` partition."""
    return pa.Table.from_pylist(
        [
            {
                "metric": r.metric,
                "family": r.family,
                "group": r.group,
                "perturbation": r.perturbation,
                "mean": r.mean,
                "count": r.count,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "reason": r.reason,
                "ci_note": r.ci_note,
                "lower_is_better": r.lower_is_better,
                "subset": r.subset,
            }
            for r in rows
        ],
        schema=SCORECARD_SCHEMA,
    )
