"""Instance-bootstrap intervals for partition-level figures (ECE, bias scores, toxicity
aggregates, latency percentiles, cost): statistics that are not a mean of per-instance values.

Each figure is recomputed on resamples of the instances: ``n_clusters`` instances drawn with
replacement, every row of a drawn instance (its trials, templates, samples, requests) coming
along as many times as the instance was drawn. The statistic receives those counts as integer
row weights, so it can repeat its rows (``np.repeat``) or weight precomputed per-row
quantities. The interval is the equal-tailed percentile interval of the resampled figures; the
seed comes from the data (the partition and the figure's names), so reruns agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace

import numpy as np

from assay.core.records import MetricSummary
from assay.scoring.metrics.absent import Absent
from assay.stats.resampling import cluster_ids, percentile_interval, resample_counts

N_RESAMPLES = 1000
CONFIDENCE = 0.95
# A figure whose resamples mostly cannot be computed (say, no toxic word in most of them) has
# no interval worth reporting.
MIN_PRESENT_SHARE = 0.5

ONE_INSTANCE = "one instance: no spread to resample"
PROVISIONAL = "provisional scorecard: intervals not computed"
_provisional: ContextVar[bool] = ContextVar("provisional_scorecard", default=False)
Statistic = Callable[[np.ndarray], Mapping[str, float | Absent]]
Interval = tuple[float, float, str]  # low, high, and why there is none (NaN bounds)


def resample_weights(
    clusters: Sequence[Hashable], *, seed: int, n_resamples: int = N_RESAMPLES
) -> np.ndarray:
    """(n_resamples, n_rows) integer weights: how often each row's cluster was drawn.

    The draws are ``default_rng(seed).integers(0, n_clusters, (n_resamples, n_clusters))``
    (int32 while they fit; ``assay.stats.resampling.resample_counts``), clusters numbered in
    sorted label order.
    """
    ids, m = cluster_ids([str(c) for c in clusters], len(clusters))
    counts = resample_counts(np.random.default_rng(seed), n_resamples, m)
    return counts.astype(np.int64)[:, ids]


def weighted_percentiles(
    values: np.ndarray, weights: np.ndarray, percentiles: Sequence[float]
) -> np.ndarray:
    """``np.percentile(np.repeat(values, w), percentiles)`` (linear) for each row ``w`` of
    ``weights`` at once: (n_resamples, len(percentiles)), NaN for an all-zero row."""
    order = np.argsort(values, kind="stable")
    ordered = np.asarray(values, dtype=np.float64)[order]
    cumulative = np.cumsum(weights[:, order], axis=1)
    total = cumulative[:, -1] if ordered.size else np.zeros(len(weights))
    out = np.full((len(weights), len(percentiles)), np.nan)
    has = total > 0
    for j, q in enumerate(percentiles):
        position = (total[has] - 1) * (q / 100.0)
        low = np.floor(position)
        frac = position - low
        high = np.minimum(low + 1, total[has] - 1)
        # The element at repeated position p is the first whose cumulative count exceeds p.
        at_low = ordered[(cumulative[has] <= low[:, None]).sum(axis=1)]
        at_high = ordered[(cumulative[has] <= high[:, None]).sum(axis=1)]
        out[has, j] = at_low + frac * (at_high - at_low)
    return out


@contextmanager
def provisional_intervals() -> Iterator[None]:
    """Within this block :func:`bootstrap_figures` skips its resamples and gives NaN bounds
    with the note :data:`PROVISIONAL`.

    For scorecards that are read only for their means and per-instance rows and then thrown
    away: a sequential evaluation scores every chunk to decide whether to go on
    (``assay.compare.sequential``), and the resampled figures (calibration's Platt fits
    above all) cost more per chunk than a small model's requests. The stored scorecard is
    scored again afterwards, with its intervals.
    """
    token = _provisional.set(True)
    try:
        yield
    finally:
        _provisional.reset(token)


def bootstrap_figures(
    clusters: Sequence[Hashable],
    statistic: Statistic,
    names: Sequence[str],
    *,
    seed: int,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    batched: bool = False,
) -> dict[str, Interval]:
    """Percentile intervals of the figures ``names`` of ``statistic`` over instance resamples.

    ``clusters`` labels each row with its instance. ``statistic`` takes one resample's row
    weights, or with ``batched`` all of them at once, (n_resamples, n_rows), and then returns
    an array of n_resamples values per figure (NaN where a resample cannot compute it). A
    figure gets NaN bounds and a reason when there is only one instance, or when fewer than
    half the resamples could compute it.
    """
    if len(set(clusters)) < 2:
        return {name: (math.nan, math.nan, ONE_INSTANCE) for name in names}
    if _provisional.get():
        return {name: (math.nan, math.nan, PROVISIONAL) for name in names}
    weights = resample_weights(clusters, seed=seed, n_resamples=n_resamples)
    values = np.full((n_resamples, len(names)), np.nan)
    if batched:
        figures = statistic(weights)
        for j, name in enumerate(names):
            values[:, j] = np.asarray(figures[name], dtype=np.float64)
    else:
        for b in range(n_resamples):
            figures = statistic(weights[b])
            for j, name in enumerate(names):
                value = figures.get(name)
                if value is not None and not isinstance(value, Absent):
                    values[b, j] = float(value)
    out: dict[str, Interval] = {}
    for j, name in enumerate(names):
        present = np.isfinite(values[:, j])
        if present.mean() < MIN_PRESENT_SHARE:
            why = (
                f"the figure could be computed on only {int(present.sum())} of "
                f"{n_resamples} resamples"
            )
            out[name] = (math.nan, math.nan, why)
            continue
        low, high = percentile_interval(values[present, j], confidence)
        out[name] = (low, high, "")
    return out


def with_interval(
    row: MetricSummary, interval: Interval | None, no_interval: str = ""
) -> MetricSummary:
    """``row`` with the interval's bounds, or with a note saying why it has none.

    An absent row (a ``reason``) is returned as it is: its reason already says why.
    """
    if not row.present:
        return row
    if interval is None:
        return replace(row, ci_low=math.nan, ci_high=math.nan, ci_note=no_interval)
    low, high, why = interval
    return replace(row, ci_low=low, ci_high=high, ci_note=why)
