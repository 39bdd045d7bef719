"""Scoring throughput: per-instance rows/second for the metric set, and peak memory.

Three parts, each printed with its own figures:
1. text metrics (exact/quasi/prefix match, F1, BLEU-1/4, ROUGE-1/2/L, chrF) on synthetic
   generations with two references each, half of them punctuated. The reference in the same
   run is the one-metric-at-a-time functions of ``assay.scoring.metrics.accuracy`` (nltk,
   rouge-score, sacrebleu; BLEU on nltk's own tokenizer) on --ref-rows rows; the one-pass
   ``assay.scoring.metrics.text_scores`` runs on --text-rows rows in one process and in two, and
   in two on --scale-rows rows (where the spawn of the second process is amortized), then
   streams two row counts under tracemalloc to show that its memory does not grow with rows.
2. multiple-choice scores (acc, acc_norm x3, chosen prob) for --mc-rows items, vectorized
   with ``mc_scores_batch``; the reference is the per-item ``mc_scores`` loop on --loop-rows.
3. calibration (ECE 10/1 bin, selective stats, Platt) and a 1000-resample bootstrap interval
   over the same --mc-rows items.

    .venv/bin/python benchmarks/bench_scoring.py [--mc-rows 1000000] [--text-rows 50000]
        [--scale-rows 200000] [--text-only]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import time
import tracemalloc
import warnings

import numpy as np
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.bleu_score import sentence_bleu

from assay.core.records import ChoiceScore
from assay.scoring.metrics import accuracy, text_scores
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


PUNCTUATED = ["it's", "don't", '"yes"', "(maybe)", "U.S.", "3.5", "well,", "no;"]


def _sentences(rng: np.random.Generator, n: int) -> list[str]:
    lengths = rng.integers(3, 20, size=n)
    out = []
    for k in lengths:
        words = list(rng.choice(WORDS, size=k))
        if rng.random() < 0.5:  # punctuated: nltk's own substitutions run on these
            words[int(rng.integers(0, k))] = str(rng.choice(PUNCTUATED))
            words[-1] += str(rng.choice([".", "?", "!"]))
        out.append(" ".join(words))
    return out


def _rate(label: str, rows: int, seconds: float) -> float:
    rate = rows / seconds
    print(f"  {label:<44} {rows:>9,} rows  {seconds:8.2f} s  {rate:12,.0f} rows/s")
    return rate


def _rows(rng: np.random.Generator, n: int) -> list[tuple[str, tuple[str, str]]]:
    preds = _sentences(rng, n)
    return list(zip(preds, zip(_sentences(rng, n), _sentences(rng, n), strict=True), strict=True))


_NLTK = NLTKWordTokenizer()


def _nltk_tokens(text: str) -> list[str]:
    """The tokens BLEU is defined on, straight from nltk (no skipped substitutions)."""
    return [t for s in re.split(r"(?<=[.!?])\s+", text) if s.strip() for t in _NLTK.tokenize(s)]


def bleu_1(prediction: str, references: tuple[str, ...]) -> float:
    hyp = _nltk_tokens(prediction)
    return max(sentence_bleu([_nltk_tokens(g)], hyp, (1, 0, 0, 0)) for g in references)


def bleu_4(prediction: str, references: tuple[str, ...]) -> float:
    hyp = _nltk_tokens(prediction)
    return max(sentence_bleu([_nltk_tokens(g)], hyp, (0, 0, 0, 1)) for g in references)


REFERENCE_METRICS = (
    accuracy.exact_match,
    accuracy.quasi_exact_match,
    accuracy.prefix_exact_match,
    accuracy.quasi_prefix_exact_match,
    accuracy.f1_score,
    bleu_1,
    bleu_4,
    accuracy.rouge_1,
    accuracy.rouge_2,
    accuracy.rouge_l,
    accuracy.chrf,
)


def _stream_peak(rows: int, seed: int) -> tuple[float, float]:
    """Peak traced memory (MiB) while streaming ``rows`` generated rows, and the mean chrF."""

    def source():  # rows made on the fly: the input itself takes no memory
        rng = np.random.default_rng(seed)
        for _ in range(rows // 1000):
            yield from _rows(rng, 1000)

    tracemalloc.start()
    total = 0.0
    for chunk in text_scores.iter_text_scores(source()):
        total += float(chunk[:, -1].sum())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, total / rows


def bench_text(
    rows: int, ref_rows: int, scale_rows: int, memory_rows: list[int], rng: np.random.Generator
) -> None:
    print(f"text metrics, full set of {len(REFERENCE_METRICS)} (2 references per row)")
    data = _rows(rng, rows)
    text_scores.score_rows(data[:10])  # compile (or load) the numba kernels outside the timing
    ref_seconds = 0.0
    for metric in REFERENCE_METRICS:  # one metric at a time, so the slow ones show
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns for each order without a match
            for p, r in data[:ref_rows]:
                metric(p, r)
        seconds = time.perf_counter() - start
        ref_seconds += seconds
        print(f"    reference {metric.__name__:<26} {ref_rows / seconds:12,.0f} rows/s")
    ref_rate = _rate("reference: accuracy.* one metric at a time", ref_rows, ref_seconds)
    start = time.perf_counter()
    one = np.concatenate(list(text_scores.iter_text_scores(data)))
    one_rate = _rate("text_scores, 1 process", rows, time.perf_counter() - start)
    start = time.perf_counter()
    two = np.concatenate(list(text_scores.iter_text_scores(data, workers=2)))
    two_rate = _rate("text_scores, 2 processes (spawn included)", rows, time.perf_counter() - start)
    data += _rows(rng, max(0, scale_rows - rows))
    start = time.perf_counter()
    for _ in text_scores.iter_text_scores(data[:scale_rows], workers=2):
        pass
    scale_rate = _rate(
        "text_scores, 2 processes (spawn included)", scale_rows, time.perf_counter() - start
    )
    print(f"  1 process / reference speed ratio:   {one_rate / ref_rate:8.1f}x")
    print(f"  2 processes / reference speed ratio: {two_rate / ref_rate:8.1f}x")
    print(f"  2 processes on {scale_rows:,} rows / reference: {scale_rate / ref_rate:8.1f}x")
    print(f"  same values in 1 and 2 processes: {bool((one == two).all())}")
    best = max(one_rate, two_rate, scale_rate)
    print(f"  projected time for 1,000,000 rows on this machine: {1e6 / best / 60:.1f} min")
    for n in memory_rows:
        peak, mean = _stream_peak(n, seed=n)
        print(
            f"  streaming {n:>9,} rows: peak traced memory {peak:7.1f} MiB (mean chrF {mean:.4f})"
        )


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
    parser.add_argument("--text-rows", type=int, default=50_000)
    parser.add_argument("--ref-rows", type=int, default=1_000)
    parser.add_argument("--scale-rows", type=int, default=200_000)
    parser.add_argument("--memory-rows", type=int, nargs=2, default=[20_000, 80_000])
    parser.add_argument("--text-only", action="store_true", help="run part 1 only")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    bench_text(args.text_rows, args.ref_rows, args.scale_rows, args.memory_rows, rng)
    if not args.text_only:
        bench_mc(args.mc_rows, args.loop_rows, rng)
    # ru_maxrss is KiB on Linux.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of the process: {peak_rss:,.0f} MiB")


if __name__ == "__main__":
    main()
