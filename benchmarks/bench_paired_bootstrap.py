"""Paired bootstrap at leaderboard scale: vectorized engine vs a per-resample Python loop.

Workload: 10 models scored on the same 100,000 instances; every model is compared with the
first one (9 pairs), 10,000 bootstrap resamples, one resample draw shared by all pairs.

- vectorized: ``assay.stats.bootstrap_means`` on the (instances × 9) matrix of paired
  differences (count vectors, one matrix product per chunk of resamples);
- reference: the straightforward loop, per resample draw indices with numpy, then per pair
  take the mean of the drawn differences. The full loop would take minutes, so it runs only
  ``--loop-resamples`` resamples and its time is extrapolated linearly to the full count
  (each resample costs the same).

Usage: python benchmarks/bench_paired_bootstrap.py [--instances N] [--models K]
       [--resamples R] [--loop-resamples L]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from assay.stats import bootstrap_means, percentile_interval


def make_scores(n_instances: int, n_models: int, seed: int = 0) -> np.ndarray:
    """Binary correctness of each model on each instance; model j is right with p=0.5+j/40."""
    rng = np.random.default_rng(seed)
    p = 0.5 + np.arange(n_models) / 40
    return (rng.random((n_instances, n_models)) < p).astype(np.float64)


def loop_bootstrap(diffs: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Reference: one resample at a time, one pair at a time."""
    rng = np.random.default_rng(seed)
    n, k = diffs.shape
    out = np.empty((n_resamples, k))
    for r in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        for j in range(k):
            out[r, j] = diffs[idx, j].mean()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--loop-resamples", type=int, default=50)
    args = parser.parse_args()

    scores = make_scores(args.instances, args.models)
    diffs = scores[:, 1:] - scores[:, :1]  # every model against the first
    pairs = diffs.shape[1]
    print(
        f"workload: {args.instances:,} instances x {args.models} models, {pairs} pairs "
        f"(each vs the first model), {args.resamples:,} resamples"
    )

    start = time.perf_counter()
    samples = bootstrap_means(diffs, n_resamples=args.resamples, seed=1)
    fast_s = time.perf_counter() - start
    print(f"vectorized bootstrap_means: {fast_s:.2f} s")

    start = time.perf_counter()
    loop_bootstrap(diffs, args.loop_resamples, seed=1)
    loop_part_s = time.perf_counter() - start
    loop_s = loop_part_s * args.resamples / args.loop_resamples
    print(
        f"per-resample loop: {loop_part_s:.2f} s for {args.loop_resamples} resamples, "
        f"extrapolated linearly to {args.resamples:,}: {loop_s:.1f} s"
    )
    print(f"speed-up (loop / vectorized): {loop_s / fast_s:.1f}x")

    low, high = percentile_interval(samples[:, -1], 0.95)
    observed = diffs[:, -1].mean()
    print(f"sanity: last pair mean diff {observed:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]")


if __name__ == "__main__":
    main()
