"""Adjusted p-values for many comparisons at once (family-wise error and false discovery rate)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_pvalues(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-d, got shape {p.shape}")
    bad = np.flatnonzero(np.isnan(p) | (p < 0) | (p > 1))
    if bad.size:
        raise ValueError(f"p-value at index {bad[0]} is {p[bad[0]]!r}, not in [0, 1]")
    return p


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (controls the family-wise error rate).

    The i-th smallest p-value (0-based) is multiplied by ``m - i``; the running maximum keeps
    the adjusted values in the same order as the raw ones. Returned in the input order.
    """
    p = _as_pvalues(pvalues)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate).

    The i-th smallest p-value (1-based) is multiplied by ``m / i``; a running minimum from the
    largest down keeps the adjusted values monotone. Returned in the input order.
    """
    p = _as_pvalues(pvalues)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, monotone)
    return adjusted
