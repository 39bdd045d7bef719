"""Paired tests of a corpus figure: a figure with no per-instance value, only a ratio of sums.

lm-eval's perplexities and bits per byte are ``f(Σ numerator / Σ denominator)`` over a
corpus (``RATIO_PARTS`` names the two per-instance parts, ``RATIO_TRANSFORMS`` the ``f``). Two
versions are compared on the instances both hold with equal denominators (the same words or
bytes): instances are resampled with both versions' parts together and the figure itself is
recomputed per resample. The promotion decision (``assay.compare.decision``) and the
per-partition regression check (``assay.compare.gate``) both test such figures here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from assay.core.records import is_headline
from assay.scoring.metrics.directions import RATIO_PARTS
from assay.scoring.summary import RATIO_TRANSFORMS

Rows = Mapping[tuple, float]  # (instance, trial, template, group) → value
Transform = Callable[[Any], Any]


def ratio_parts(
    metric: str, rows_of: Sequence[Callable[[str], Rows]]
) -> list[tuple[Rows, Rows]] | None:
    """The (numerator, denominator) rows of the corpus figure ``metric`` for each version
    (``rows_of``: a version's rows of a metric by name); None unless every version has both
    parts of one of ``RATIO_PARTS``."""
    for numerator, denominator, _ in RATIO_PARTS:
        parts = [(rows(metric + numerator), rows(metric + denominator)) for rows in rows_of]
        if all(num and den for num, den in parts):
            return parts
    return None


def headline_figure(card: pa.Table | None, metric: str) -> float | None:
    """A version's scorecard figure of ``metric`` over all its instances (its first headline
    row), which names the transform; None when there is none, it has a reason or it is not
    finite."""
    if card is None:
        return None
    for row in card.to_pylist():
        if row["metric"] == metric and is_headline(row):
            value = row["mean"]
            if row.get("reason") or value is None or not math.isfinite(value):
                return None
            return float(value)
    return None


def transform_of(versions: Sequence[tuple[Rows, Rows, float | None]]) -> Transform | None:
    """The function that turns each version's ratio of part sums (over all its instances) into
    its scorecard figure (``None``: no figure), among the identity and ``RATIO_TRANSFORMS``;
    None if none does for every version."""
    wanted = []  # (ratio, figure) per version
    for num, den, figure in versions:
        total = sum(den.values())
        if figure is None or not total:
            return None
        wanted.append((sum(num.values()) / total, figure))
    for transform in (lambda r: r, *RATIO_TRANSFORMS.values()):
        if all(math.isclose(float(transform(r)), f, rel_tol=1e-9) for r, f in wanted):
            return transform
    return None


@dataclass(frozen=True)
class PairedRatio:
    """A paired bootstrap of ``d = sign · (f(ratio_a) − f(ratio_b))`` over shared instances:
    ``sign`` is −1 for a lower-is-better figure, so a positive ``d`` means ``a`` is better."""

    n: int  # instances
    rows: int  # shared rows (an instance's trials and templates each count)
    figure_a: float  # f(ratio) of each version over the shared instances
    figure_b: float
    d: float
    resampled: np.ndarray  # (n_resamples,) resampled d

    def interval(self, alpha: float) -> tuple[float, float]:
        """The equal-tailed ``1 - alpha`` percentile interval of ``d``."""
        tail = alpha / 2.0
        low, high = np.quantile(self.resampled, [tail, 1.0 - tail])
        return float(low), float(high)

    def p_at_most(self, margin: float) -> float:
        """One-sided p-value of ``H0: d <= -margin``."""
        hits = np.count_nonzero(self.resampled + margin <= 0)
        return float((1 + hits) / (self.resampled.size + 1))

    def p_at_least(self, margin: float) -> float:
        """One-sided p-value of ``H0: d >= -margin``."""
        hits = np.count_nonzero(self.resampled + margin >= 0)
        return float((1 + hits) / (self.resampled.size + 1))

    def p_two_sided(self, margin: float) -> float:
        """Two-sided p-value of ``H0: d = -margin``."""
        return float(min(1.0, 2.0 * min(self.p_at_most(margin), self.p_at_least(margin))))


def paired_ratio(
    parts: Sequence[tuple[Rows, Rows]],
    figures: tuple[float | None, float | None],
    *,
    lower_is_better: bool,
    n_resamples: int,
    seed: int,
) -> PairedRatio | None:
    """Bootstrap two versions' corpus figure over the instances both hold; ``parts`` from
    :func:`ratio_parts` and ``figures`` their scorecard figures (over all their instances),
    which name the transform. None when the versions share no instance, a shared row's
    denominators differ, or no transform reproduces both figures."""
    (num_a, den_a), (num_b, den_b) = parts
    shared = sorted(num_a.keys() & num_b.keys() & den_a.keys() & den_b.keys())
    if not shared or any(den_a[k] != den_b[k] for k in shared):
        return None
    transform = transform_of([(num_a, den_a, figures[0]), (num_b, den_b, figures[1])])
    if transform is None:
        return None
    # Per instance (its trials and templates summed): both versions' numerators, the shared
    # denominator.
    index = {iid: i for i, iid in enumerate(sorted({k[0] for k in shared}))}
    sums = np.zeros((3, len(index)))
    for k in shared:
        sums[:, index[k[0]]] += (num_a[k], num_b[k], den_a[k])
    sign = -1.0 if lower_is_better else 1.0

    def oriented(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
        return sign * (transform(a / w) - transform(b / w))

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(index), size=(n_resamples, len(index)))
    totals = sums.sum(axis=1)
    return PairedRatio(
        n=len(index),
        rows=len(shared),
        figure_a=float(transform(totals[0] / totals[2])),
        figure_b=float(transform(totals[1] / totals[2])),
        d=float(oriented(*totals)),
        resampled=oriented(*(sums[j][draws].sum(axis=1) for j in range(3))),
    )
