"""What the clean slice adds to scoring a partition: ``contamination_rows`` against the
scorecard's mean rows it sits beside.

Workload: one synthetic partition of N instances with per-instance stats as a multiple-choice
entry produces them (acc, chosen_prob, latency_s, 3 efficiency counts; each accuracy row
repeated once per group tag), 20% of the instances flagged by one overlap detector.

- reference: ``assay.scoring.summary.scorecard`` on the partition's stats (the mean rows of
  the scorecard, one bootstrap per metric × family × group × perturbation);
- measured: ``assay.contamination.clean.contamination_rows`` (the rate, the clean scorecard,
  and clean − full with its joint bootstrap per headline metric), plus reading the verdicts
  from the contamination table (``Contamination.of``).

Prints the median of ``--repeats`` runs of each and the ratio, with the load average.

Usage: python benchmarks/bench_clean_subset.py [--instances N ...] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pyarrow as pa

from assay.contamination.clean import contamination_rows
from assay.contamination.subsets import TABLE_SCHEMA, Contamination
from assay.core.records import InstanceStat
from assay.scoring.summary import scorecard


def make_stats(n: int, seed: int = 0) -> tuple[list[InstanceStat], list[str]]:
    rng = np.random.default_rng(seed)
    ids = [f"i{i:07d}" for i in range(n)]
    stats = []
    for i, iid in enumerate(ids):
        correct = float(rng.random() < 0.6)
        group = f"dialect={'ab'[i % 2]}"
        stats += [
            InstanceStat(iid, "acc", correct),
            InstanceStat(iid, "acc", correct, group=group),
            InstanceStat(iid, "chosen_prob", float(rng.random()), family="calibration"),
            InstanceStat(iid, "latency_s", float(rng.gamma(2.0, 0.05)), family="efficiency"),
            InstanceStat(iid, "prompt_tokens", float(rng.integers(20, 200)), family="efficiency"),
            InstanceStat(iid, "completion_tokens", 1.0, family="efficiency"),
            InstanceStat(iid, "failed", 0.0, family="efficiency"),
        ]
    return stats, ids


def make_table(ids: list[str], share: float = 0.2, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    flagged = rng.random(len(ids)) < share
    return pa.table(
        {
            "instance_id": ids,
            "detector": ["gpt3_13gram"] * len(ids),
            "corpus": ["web"] * len(ids),
            "corpus_digest": ["00" * 32] * len(ids),
            "score": flagged.astype(np.float64),
            "flagged": flagged,
            "label": [""] * len(ids),
            "evidence": ["13-gram match" if f else "" for f in flagged],
        },
        schema=TABLE_SCHEMA,
    )


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'instances':>10} {'scorecard s':>12} {'clean rows s':>13} {'ratio':>7}")
    for n in args.instances:
        stats, ids = make_stats(n)
        table = make_table(ids)
        reference = timed(lambda s=stats: scorecard(s, "bench"), args.repeats)

        def clean(s=stats, t=table, i=ids) -> None:
            contamination_rows(s, i, Contamination.of(t), seed_key="bench")

        measured = timed(clean, args.repeats)
        print(f"{n:>10,} {reference:>12.3f} {measured:>13.3f} {measured / reference:>7.2f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
