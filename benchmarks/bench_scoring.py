"""Scoring throughput: per-instance rows/second for the metric set, and peak memory.

Three parts, each printed with its own figures:
1. text metrics (exact/quasi/prefix match, F1, BLEU-1/4, ROUGE-1/2/L, chrF) on synthetic
   generations, row by row in Python; the reference in the same run is exact_match alone.
2. multiple-choice scores (acc, acc_norm x3, chosen prob) for --mc-rows items, vectorized
   with ``mc_scores_batch``; the reference is the per-item ``mc_scores`` loop on --loop-rows.
3. calibration (ECE 10/1 bin, selective stats, Platt) and a 1000-resample bootstrap interval
   over the same --mc-rows items.

Text metrics are pure-Python (nltk, rouge-score, sacrebleu) and far slower than the rest, so
they run on --text-rows (default 2,000), not 1M; the printed rows/s says what 1M would take.

    .venv/bin/python benchmarks/bench_scoring.py [--mc-rows 1000000] [--text-rows 2000]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from assay.core.records import ChoiceScore
from assay.scoring.metrics import accuracy
from assay.scoring.metrics.calibration import calibration_stats
from assay.stats.resampling import bootstrap_interval

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "house",
    "red",
    "big",
    "small",
    "quickly",
    "answer",
    "is",
]


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    lengths = rng.integers(3, 20, size=n)
    return [" ".join(rng.choice(WORDS, size=k)) for k in lengths]


def _rate(label: str, rows: int, seconds: float) -> float:
    rate = rows / seconds
    print(f"  {label:<44} {rows:>9,} rows  {seconds:8.2f} s  {rate:12,.0f} rows/s")
    return rate


def bench_text(rows: int, rng: np.random.Generator) -> None:
    print(f"text metrics ({rows:,} generations, 2 references each)")
    preds = _sentences(rng, rows)
    refs = list(zip(_sentences(rng, rows), _sentences(rng, rows), strict=True))
    start = time.perf_counter()
    for p, r in zip(preds, refs, strict=True):
        accuracy.exact_match(p, r)
    ref_rate = _rate("reference: exact_match only", rows, time.perf_counter() - start)
    metrics = (
        accuracy.exact_match,
        accuracy.quasi_exact_match,
        accuracy.prefix_exact_match,
        accuracy.quasi_prefix_exact_match,
        accuracy.f1_score,
        accuracy.bleu_1,
        accuracy.bleu_4,
        accuracy.rouge_1,
        accuracy.rouge_2,
        accuracy.rouge_l,
        accuracy.chrf,
    )
    total = 0.0
    for metric in metrics:  # one metric at a time, so the slow ones show
        start = time.perf_counter()
        for p, r in zip(preds, refs, strict=True):
            metric(p, r)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"    {metric.__name__:<26} {rows / seconds:12,.0f} rows/s")
    full_rate = _rate(f"full text set ({len(metrics)} metrics)", rows, total)
    print(f"  full set / exact_match speed ratio: {full_rate / ref_rate:.4f}")
    print(f"  projected time for 1,000,000 rows on this machine: {1e6 / full_rate / 60:.1f} min")


def _mc_arrays(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    width = 4
    logprobs = rng.normal(-6.0, 2.0, size=(rows, width))
    n_tokens = rng.integers(1, 8, size=(rows, width))
    gold = np.zeros((rows, width), dtype=bool)
    gold[np.arange(rows), rng.integers(0, width, size=rows)] = True
    return logprobs, 4 * n_tokens, n_tokens, 4 * n_tokens, gold


def bench_mc(rows: int, loop_rows: int, rng: np.random.Generator) -> np.ndarray:
    print(f"multiple choice (4 choices) and calibration, {rows:,} items")
    lp, chars, toks, byts, gold = _mc_arrays(loop_rows, rng)
    start = time.perf_counter()
    for i in range(loop_rows):
        choices = [
            ChoiceScore("", lp[i, j], int(toks[i, j]), int(chars[i, j]), int(byts[i, j]))
            for j in range(lp.shape[1])
        ]
        accuracy.mc_scores(choices, list(np.flatnonzero(gold[i])))
    loop_rate = _rate(
        "reference: mc_scores per item (Python loop)", loop_rows, time.perf_counter() - start
    )

    arrays = _mc_arrays(rows, rng)
    tracemalloc.start()
    start = time.perf_counter()
    batch = accuracy.mc_scores_batch(*arrays)
    batch_rate = _rate("mc_scores_batch (numpy)", rows, time.perf_counter() - start)
    print(f"  vectorized / loop speed ratio: {batch_rate / loop_rate:,.0f}x")

    start = time.perf_counter()
    stats = calibration_stats(batch.chosen_prob, batch.acc.astype(int))
    _rate("calibration_stats (ECE, selective, Platt)", rows, time.perf_counter() - start)
    start = time.perf_counter()
    low, high = bootstrap_interval(batch.acc, n_resamples=1000, seed=1)
    _rate("bootstrap_interval, 1000 resamples", rows, time.perf_counter() - start)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"  acc {batch.acc.mean():.4f} [{low:.4f}, {high:.4f}]  ece_10_bin {stats.ece_10_bin:.4f}"
    )
    print(f"  peak traced memory (vectorized part): {peak / 2**20:,.0f} MiB")
    return batch.acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mc-rows", type=int, default=1_000_000)
    parser.add_argument("--loop-rows", type=int, default=20_000)
    parser.add_argument("--text-rows", type=int, default=2_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    bench_text(args.text_rows, rng)
    bench_mc(args.mc_rows, args.loop_rows, rng)
    # ru_maxrss is KiB on Linux.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of the process: {peak_rss:,.0f} MiB")


if __name__ == "__main__":
    main()
