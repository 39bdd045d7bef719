"""Vectorized bootstrap of column means, resampling clusters (instances) rather than rows.

Every statistic in this package that needs a bootstrap goes through ``bootstrap_means``:
paired differences are one column (``a - b``), rank intervals are one column per model.
Resampling is done with *counts*: each resample is a vector of how many times every cluster
was drawn, so the resampled sums of all columns are one matrix product ``counts @ sums``.
Drawing the counts once and reusing them for every column is what makes the resampling joint
across models, and the matrix product is what makes it fast.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

# Cells (resamples × clusters) of the count matrix built at once. Counting is a scatter into
# this many bins; around a million (8 MiB of counts) keeps it in cache, which measured ~2x
# faster than 4M on a 100k-instance workload (benchmarks/bench_paired_bootstrap.py).
_CHUNK_CELLS = 1_000_000


@dataclass(frozen=True, slots=True)
class ClusterSums:
    """Rows collapsed to clusters: per-cluster sums of each column and of its non-missing rows."""

    sums: np.ndarray  # (n_clusters, k) sum of the non-missing values
    counts: np.ndarray  # (n_clusters, k) number of non-missing values
    n_rows: int

    @property
    def n_clusters(self) -> int:
        return self.sums.shape[0]


def as_columns(values: np.ndarray | list, name: str = "values") -> np.ndarray:
    """``values`` as a float (n_rows, k) matrix; a 1-d input becomes one column."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-d or 2-d, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: nothing to resample")
    return arr


def cluster_ids(clusters: np.ndarray | list | None, n_rows: int) -> tuple[np.ndarray, int]:
    """Map arbitrary cluster labels (strings, ints) to 0..n_clusters-1, one per row."""
    if clusters is None:
        return np.arange(n_rows), n_rows
    labels = np.asarray(clusters)
    if labels.shape != (n_rows,):
        raise ValueError(
            f"clusters has shape {labels.shape}, expected ({n_rows},): one label per row"
        )
    if labels.dtype.kind in "iu" and bool(np.all(labels[1:] > labels[:-1])):
        return np.arange(n_rows), n_rows  # increasing numbers: np.unique's own answer
    _, ids = np.unique(labels, return_inverse=True)
    return ids, int(ids.max()) + 1


def collapse(values: np.ndarray, clusters: np.ndarray | list | None = None) -> ClusterSums:
    """Sum the rows of ``values`` (NaN = missing) within each cluster."""
    cols = as_columns(values)
    ids, n_clusters = cluster_ids(clusters, cols.shape[0])
    present = ~np.isnan(cols)
    filled = np.where(present, cols, 0.0)
    if clusters is None:
        return ClusterSums(sums=filled, counts=present.astype(np.float64), n_rows=cols.shape[0])
    if n_clusters == cols.shape[0]:
        # One row per cluster: each sum is 0.0 + its row (``+ 0.0`` turns -0.0 into 0.0,
        # as adding to a zero does), placed without np.add.at's slow scatter.
        sums = np.empty_like(filled)
        counts = np.empty_like(filled)
        sums[ids] = filled + 0.0
        counts[ids] = present.astype(np.float64)
        return ClusterSums(sums=sums, counts=counts, n_rows=cols.shape[0])
    sums = np.zeros((n_clusters, cols.shape[1]))
    counts = np.zeros((n_clusters, cols.shape[1]))
    np.add.at(sums, ids, filled)
    np.add.at(counts, ids, present.astype(np.float64))
    return ClusterSums(sums=sums, counts=counts, n_rows=cols.shape[0])


def resample_counts(
    rng: np.random.Generator,
    n_resamples: int,
    n_clusters: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """How often each cluster is drawn in each of ``n_resamples`` bootstrap samples.

    Exactly the multinomial bootstrap (``n_clusters`` draws with replacement), computed by
    drawing indices and counting them, which is much faster than ``rng.multinomial`` with
    many categories. ``out`` (a float (n_resamples, n_clusters) array) receives the counts
    instead of a new array.
    """
    idx = _draws(rng, n_resamples, n_clusters)
    idx += (np.arange(n_resamples, dtype=idx.dtype) * n_clusters)[:, None]
    if out is None:
        out = np.zeros((n_resamples, n_clusters))
    else:
        out.fill(0.0)
    # Counted into ``out`` in place: ``np.bincount`` returns a new array, whose fresh pages
    # cost more (page faults) than the counting itself at a board's thousands of calls.
    np.add.at(out.reshape(-1), idx.ravel(), 1.0)
    return out


def _draws(rng: np.random.Generator, n_resamples: int, n_clusters: int) -> np.ndarray:
    """The (n_resamples, n_clusters) cluster indices every bootstrap here draws."""
    # 32-bit indices draw faster; they fit whenever the flat bin index does.
    dtype = np.int32 if n_resamples * n_clusters < 2**31 else np.int64
    return rng.integers(0, n_clusters, size=(n_resamples, n_clusters), dtype=dtype)


_buffers = threading.local()


def _counts_buffer(n_resamples: int, n_clusters: int) -> np.ndarray:
    """This thread's reusable (n_resamples, n_clusters) float array for resample counts."""
    size = n_resamples * n_clusters
    buffer = getattr(_buffers, "counts", None)
    if buffer is None or buffer.size < size:
        buffer = _buffers.counts = np.empty(size)
    return buffer[:size].reshape(n_resamples, n_clusters)


def bootstrap_means(
    values: np.ndarray | list,
    *,
    n_resamples: int,
    seed: int,
    clusters: np.ndarray | list | None = None,
) -> np.ndarray:
    """Bootstrap distribution of the mean of each column, resampling clusters jointly.

    ``values`` is (n_rows, k) (or 1-d for one column); NaN marks a missing value, which is
    left out of that column's mean. Rows with the same ``clusters`` label are drawn together,
    and the same draw is used for every column, so differences and ranks between columns are
    resampled consistently. The mean of a resample weights every row equally (a cluster with
    three rows counts three times), so the point estimate is the plain mean of the rows.

    Returns an (n_resamples, k) array; NaN where a resample drew no value of a column.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    collapsed = collapse(values, clusters)
    return bootstrap_collapsed(collapsed, n_resamples=n_resamples, seed=seed)


def bootstrap_collapsed(collapsed: ClusterSums, *, n_resamples: int, seed: int) -> np.ndarray:
    """``bootstrap_means`` on rows already collapsed to clusters."""
    rng = np.random.default_rng(seed)
    m = collapsed.n_clusters
    k = collapsed.sums.shape[1]
    # Sums and row counts go through one matrix product; without missing values every column
    # has the same row count, so one count column serves them all.
    same_counts = bool(np.all(collapsed.counts == collapsed.counts[:, :1]))
    counts = collapsed.counts[:, :1] if same_counts else collapsed.counts
    stacked = np.hstack([collapsed.sums, counts])
    # At least two resamples per product: a one-row product takes a much slower path.
    chunk = max(2, _CHUNK_CELLS // m)
    out = np.empty((n_resamples, k))
    lookup = _integer_lookup(stacked) if k == 1 else None
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        if lookup is None:
            counts_drawn = resample_counts(
                rng, stop - start, m, out=_counts_buffer(stop - start, m)
            )
            both = counts_drawn @ stacked
        else:
            both = _summed_draws(rng, stop - start, m, lookup)
        totals, sizes = both[:, :k], both[:, k:]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = np.where(sizes > 0, totals / sizes, np.nan)
    return out


def _integer_lookup(stacked: np.ndarray) -> list[np.ndarray | int] | None:
    """``stacked``'s columns as small integers (a column of one value as that value), when
    every value is one and every resample's sum stays exact (a correct/incorrect metric's
    differences and row counts); else None.

    Summing whole numbers is exact in any order, so adding up each resample's drawn values
    gives the very sums the matrix product of the counts gives, without building the counts.
    """
    if not np.all(np.isfinite(stacked)) or not np.all(stacked == np.trunc(stacked)):
        return None
    if np.any(np.signbit(stacked) & (stacked == 0)):
        return None  # a sum of -0.0s may be -0.0 (by the product's order), an integer 0 is not
    largest = float(np.max(np.abs(stacked), initial=0.0))
    if largest * stacked.shape[0] >= 2**53:
        return None
    dtype = next(t for t in (np.int8, np.int16, np.int32, np.int64) if largest <= np.iinfo(t).max)
    return [
        int(column[0]) if np.all(column == column[0]) else np.ascontiguousarray(column, dtype=dtype)
        for column in stacked.T
    ]


def _summed_draws(
    rng: np.random.Generator, n_resamples: int, n_clusters: int, lookup: list[np.ndarray | int]
) -> np.ndarray:
    """Per resample, the sum of each column's drawn values: the draws of
    :func:`resample_counts` (:func:`_draws`), added up instead of counted. A column of one
    value (every cluster one row) sums to that value times the draws."""
    idx = _draws(rng, n_resamples, n_clusters)
    sums = np.empty((n_resamples, len(lookup)))
    for j, column in enumerate(lookup):
        if isinstance(column, int):
            sums[:, j] = column * n_clusters
        else:
            sums[:, j] = np.take(column, idx).sum(axis=1, dtype=np.int64)
    return sums


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of a bootstrap distribution (NaNs ignored)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_interval(
    values: np.ndarray | list,
    *,
    seed: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (one value: zero width)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap values must be finite (drop absent values first)")
    means = bootstrap_means(data, n_resamples=n_resamples, seed=seed)[:, 0]
    return percentile_interval(means, confidence)
