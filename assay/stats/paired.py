"""Paired comparisons of two models scored on the same instances.

Two models evaluated on the same instances give paired scores; comparing their means with
an unpaired test throws away most of the power. Everything here takes the two score vectors
row-aligned (row ``i`` of ``a`` and of ``b`` is the same instance, perturbation and trial) and
an optional ``clusters`` label per row: rows that share a label (the perturbations and trials
of one instance) are resampled or sign-flipped together, because they are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from assay.stats.corrections import benjamini_hochberg, holm
from assay.stats.resampling import (
    bootstrap_collapsed,
    collapse,
    percentile_interval,
)

# Sign vectors evaluated at once in the permutation test (rows of a (chunk, n_clusters) matrix).
_CHUNK_CELLS = 4_000_000
# Relative tolerance for "as extreme as observed": sums in a different order differ in the
# last bits, and an exact tie must count as a tie (scipy's permutation_test does the same).
_TIE_RTOL = 100 * np.finfo(np.float64).eps


@dataclass(frozen=True, slots=True)
class PairedResult:
    """Paired bootstrap of the mean difference ``mean(a) - mean(b)``."""

    n: int  # rows
    n_clusters: int  # independent units resampled (instances)
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, from the bootstrap distribution shifted to the null
    confidence: float
    n_resamples: int


@dataclass(frozen=True, slots=True)
class Comparison:
    """One paired comparison of two model versions on one scenario's metric."""

    model_a: str
    model_b: str
    metric: str
    n: int
    mean_diff: float  # mean(a) - mean(b)
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float  # equal to p_value until ``adjust`` corrects for multiple comparisons
    test: str  # "mcnemar_exact" or "paired_permutation"
    significant: bool  # p_adjusted < alpha
    scenario: str = ""
    n_clusters: int = 0


def _paired_diffs(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise ValueError(
            f"a and b must be 1-d and the same length (paired rows), got shapes "
            f"{a_arr.shape} and {b_arr.shape}"
        )
    if a_arr.size == 0:
        raise ValueError("a and b are empty: nothing to compare")
    for name, arr in (("a", a_arr), ("b", b_arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] is {arr[bad[0]]!r}: paired scores must be finite")
    return a_arr - b_arr


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    *,
    seed: int,
    clusters: Sequence[object] | np.ndarray | None = None,
) -> PairedResult:
    """Bootstrap CI and two-sided p-value of ``mean(a) - mean(b)`` over paired rows.

    Clusters (instances) are resampled with replacement, all rows of a drawn cluster together.
    The CI is the percentile interval; the p-value is the share of resampled differences,
    centred on the observed one, at least as far from it as the observed one is from zero
    (the bootstrap shifted to the null), with the usual +1 so it is never zero.
    """
    d = _paired_diffs(a, b)
    collapsed = collapse(d, clusters)
    observed = float(d.mean())
    samples = bootstrap_collapsed(collapsed, n_resamples=n_resamples, seed=seed)[:, 0]
    low, high = percentile_interval(samples, confidence)
    extreme = np.abs(samples - observed) >= abs(observed) * (1 - _TIE_RTOL)
    p_value = (1 + int(np.count_nonzero(extreme))) / (n_resamples + 1)
    return PairedResult(
        n=int(d.size),
        n_clusters=collapsed.n_clusters,
        mean_diff=observed,
        ci_low=low,
        ci_high=high,
        p_value=min(1.0, p_value),
        confidence=confidence,
        n_resamples=n_resamples,
    )


def paired_permutation_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = 10_000,
    *,
    seed: int,
    clusters: Sequence[object] | np.ndarray | None = None,
) -> float:
    """Two-sided sign-flip permutation test of ``mean(a) - mean(b) == 0``; returns the p-value.

    Under the null the labels a/b are exchangeable within each cluster, so the differences of a
    cluster flip sign together. When the ``2**n_clusters`` sign patterns fit in ``n_resamples``
    they are all enumerated (an exact test); otherwise ``n_resamples`` random patterns are drawn
    and the p-value is ``(1 + hits) / (1 + n_resamples)``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    d = _paired_diffs(a, b)
    sums = collapse(d, clusters).sums[:, 0]
    m = sums.size
    observed = abs(float(sums.sum()))
    threshold = observed - _TIE_RTOL * observed
    exact = m < 63 and 2**m <= n_resamples
    total = 2**m if exact else n_resamples
    chunk = max(1, _CHUNK_CELLS // m)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        if exact:
            # Row r of the pattern matrix is the binary expansion of r: every pattern once.
            codes = np.arange(start, stop, dtype=np.int64)[:, None]
            bits = (codes >> np.arange(m, dtype=np.int64)) & 1
        else:
            bits = rng.integers(0, 2, size=(stop - start, m), dtype=np.int8)
        signs = 1.0 - 2.0 * bits
        hits += int(np.count_nonzero(np.abs(signs @ sums) >= threshold))
    if exact:
        return min(1.0, hits / total)
    return min(1.0, (1 + hits) / (1 + total))


def mcnemar_exact(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray
) -> float:
    """Exact (binomial) McNemar test of paired binary outcomes; returns the two-sided p-value.

    Only discordant pairs carry information: under the null, "a right and b wrong" and
    "a wrong and b right" are equally likely, so their split is Binomial(n_discordant, 1/2).
    """
    a_arr = np.asarray(a_correct)
    b_arr = np.asarray(b_correct)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise ValueError(
            f"a_correct and b_correct must be 1-d and the same length, got shapes "
            f"{a_arr.shape} and {b_arr.shape}"
        )
    for name, arr in (("a_correct", a_arr), ("b_correct", b_arr)):
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] is {arr[bad[0]]!r}, not a binary outcome")
    a_bool = a_arr.astype(bool)
    b_bool = b_arr.astype(bool)
    only_a = int(np.count_nonzero(a_bool & ~b_bool))
    only_b = int(np.count_nonzero(~a_bool & b_bool))
    n = only_a + only_b
    if n == 0:
        return 1.0
    return _mcnemar_p(min(only_a, only_b), n)


@lru_cache(maxsize=65536)
def _mcnemar_p(smaller: int, n: int) -> float:
    """Binomial(n, 1/2) is symmetric: the two-sided p-value doubles the smaller tail. Kept
    per (smaller, n): a board's thousands of comparisons of ~a hundred instances repeat them."""
    from scipy.stats import binom  # scipy.stats takes most of a second to import

    return float(min(1.0, 2.0 * binom.cdf(smaller, n, 0.5)))


def is_binary(values: np.ndarray) -> bool:
    """Every value is 0 or 1 (a correct/incorrect metric)."""
    return bool(np.all((values == 0) | (values == 1)))


def compare(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    model_a: str,
    model_b: str,
    metric: str,
    seed: int,
    scenario: str = "",
    clusters: Sequence[object] | np.ndarray | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
) -> Comparison:
    """Compare two models on paired rows, choosing the test from the data.

    A binary metric with one row per instance gets McNemar's exact test; anything else (graded
    scores, or several correlated rows per instance) gets the clustered sign-flip permutation
    test. The interval is always the paired (clustered) bootstrap percentile interval.
    """
    boot = paired_bootstrap(a, b, n_resamples, confidence, seed=seed, clusters=clusters)
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    one_row_per_cluster = boot.n_clusters == boot.n
    if one_row_per_cluster and is_binary(a_arr) and is_binary(b_arr):
        test, p_value = "mcnemar_exact", mcnemar_exact(a_arr, b_arr)
    else:
        test = "paired_permutation"
        p_value = paired_permutation_test(a_arr, b_arr, n_resamples, seed=seed, clusters=clusters)
    return Comparison(
        model_a=model_a,
        model_b=model_b,
        metric=metric,
        scenario=scenario,
        n=boot.n,
        n_clusters=boot.n_clusters,
        mean_diff=boot.mean_diff,
        ci_low=boot.ci_low,
        ci_high=boot.ci_high,
        p_value=p_value,
        p_adjusted=p_value,
        test=test,
        significant=p_value < 1.0 - confidence,
    )


def adjust(
    comparisons: Sequence[Comparison], *, method: str = "holm", alpha: float = 0.05
) -> list[Comparison]:
    """Correct the p-values of a family of comparisons; ``significant`` uses the adjusted ones.

    ``method`` is ``"holm"`` (family-wise error rate) or ``"bh"`` (Benjamini-Hochberg, false
    discovery rate).
    """
    corrections = {"holm": holm, "bh": benjamini_hochberg}
    if method not in corrections:
        raise ValueError(
            f"unknown correction method {method!r}; expected one of {sorted(corrections)}"
        )
    adjusted = corrections[method]([c.p_value for c in comparisons])
    return [
        replace(c, p_adjusted=float(p), significant=bool(p < alpha))
        for c, p in zip(comparisons, adjusted, strict=True)
    ]
