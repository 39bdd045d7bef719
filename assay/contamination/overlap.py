"""The published n-gram overlap definitions of contamination, against a :class:`CorpusIndex`.

Words are :func:`~assay.contamination.normalize.words` (lm-eval's normalization: ASCII
lower-case, ASCII punctuation deleted, whitespace split). Per instance text, one finding per
detector; ``score`` is a fraction in [0, 1]:

- ``gpt3_13gram`` (Brown et al. 2020, appendix C; lm-eval's decontamination): **flagged when
  any 13-gram** of the text is in the corpus; score = matched 13-grams / 13-grams. A text of
  8 to 12 words has no 13-gram: GPT-3 set N per benchmark to the 5th-percentile example
  length in words, never under 8, so such a text is checked with its 8-grams (any match
  flags it; the evidence says so). lm-eval's Janitor would simply never flag it. A text
  under 8 words is not checked: score 0, not flagged, the evidence says "too short".
- ``palm_8gram`` (Chowdhery et al. 2022, §8): **flagged when at least 70%** of the text's
  8-grams (windows, counted with repetition) are in the corpus; score = that fraction. Under
  8 words: no 8-gram, score 0, not flagged ("too short").
- ``llama2_span`` (Touvron et al. 2023, appendix A.6): a word is contaminated when it lies in a
  span of more than 10 words (at least 11: an 11-gram) found in both the text and the corpus;
  score = contaminated words / words; label ``clean`` below 20%, ``dirty`` at 80% or more,
  ``neither`` between. **flagged when the label is not ``clean``**, so the platform's clean
  subset (instances no detector flags) is Llama 2's clean subset. Skip-gram budget: Llama 2
  lets a matched span differ from the training text in up to 4 positions, never in its first
  10 tokens and never at its end. We implement it as gap bridging: between two runs of
  matched words, a gap of g unmatched words is counted contaminated when the span's remaining
  budget (4, shared by all gaps of one span) covers g; since a span starts with a whole
  matched 11-gram and a gap is always followed by a match, neither the first 10 nor a
  trailing position is ever skipped. The index keeps no positions, so we cannot see which
  words of a gap differ from the corpus, nor check that the runs on both sides come from the
  same passage: a gap costs its full length. One substituted word between matched runs (a
  gap of 1) is bridged as in Llama 2; two substitutions d <= 11 words apart leave no whole
  11-gram between them, so a gap of d + 1 words, bridged only when d <= 3 (Llama 2 would
  charge 2 and bridge any d).
  Under 11 words: no span can match, score 0, label ``clean``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from assay.contamination.ngram_index import CorpusIndex
from assay.contamination.normalize import GPT3_N, LLAMA2_N, PALM_N, tokenize, words

DETECTORS = ("gpt3_13gram", "palm_8gram", "llama2_span")
PALM_THRESHOLD = 0.70
LLAMA2_CLEAN_BELOW = 0.20
LLAMA2_DIRTY_FROM = 0.80
LLAMA2_SKIP_BUDGET = 4
GPT3_MIN_N = 8


@dataclass(frozen=True)
class OverlapFinding:
    """One detector's verdict on one text."""

    detector: str
    score: float
    flagged: bool
    label: str
    evidence: str


def find_overlaps(text: str, index: CorpusIndex) -> list[OverlapFinding]:
    """The findings of every detector in :data:`DETECTORS` for one text."""
    return find_overlaps_many([text], index)[0]


def find_overlaps_many(texts: Sequence[str], index: CorpusIndex) -> list[list[OverlapFinding]]:
    """The findings for many texts, with one index lookup per n-gram size for all of them."""
    batch = tokenize(texts)
    lengths = np.diff(batch.offsets)
    starts = batch.offsets[:-1]
    hits: dict[int, np.ndarray] = {}
    matched: dict[int, np.ndarray] = {}
    for n in (PALM_N, LLAMA2_N, GPT3_N):
        acc, valid = batch.ngram_hashes(n)
        hit = np.zeros(len(acc), dtype=bool)
        hit[valid] = index.contains(n, acc[valid])
        hits[n] = hit
        running = np.zeros(len(hit) + 1, dtype=np.int64)
        np.cumsum(hit, out=running[1:])
        ends = np.minimum(starts + np.maximum(lengths - n + 1, 0), len(hit))
        matched[n] = running[ends] - running[np.minimum(starts, len(hit))]
    results = []
    for i, text in enumerate(texts):
        start, length = int(starts[i]), int(lengths[i])
        counts = {n: int(matched[n][i]) for n in matched}
        tokens = words(text) if any(counts.values()) else None

        def windows(n: int, start: int = start, length: int = length) -> np.ndarray:
            return hits[n][start : start + max(length - n + 1, 0)]

        results.append(
            [
                _gpt3(tokens, length, counts, windows),
                _palm(tokens, length, counts[PALM_N], windows),
                _llama2(tokens, length, counts[LLAMA2_N], windows),
            ]
        )
    return results


def _quote(tokens: list[str], start: int, n: int) -> str:
    return '"' + " ".join(tokens[start : start + n]) + '"'


def _gpt3(
    tokens: list[str] | None, length: int, counts: dict[int, int], windows: Callable
) -> OverlapFinding:
    if length >= GPT3_N:
        n, note = GPT3_N, ""
    elif length >= GPT3_MIN_N:
        n, note = GPT3_MIN_N, f" ({length} words, under 13: checked with 8-grams)"
    else:
        return OverlapFinding(
            "gpt3_13gram", 0.0, False, "", f"too short: {length} words, under {GPT3_MIN_N}"
        )
    total = length - n + 1
    matched = counts[n]
    if not matched:
        return OverlapFinding(
            "gpt3_13gram", 0.0, False, "", f"0 of {total} {n}-grams in the corpus{note}"
        )
    first = int(np.argmax(windows(n)))
    evidence = (
        f"{matched} of {total} {n}-grams in the corpus{note}; first: {_quote(tokens, first, n)}"
    )
    return OverlapFinding("gpt3_13gram", matched / total, True, "", evidence)


def _palm(tokens: list[str] | None, length: int, matched: int, windows: Callable) -> OverlapFinding:
    if length < PALM_N:
        return OverlapFinding(
            "palm_8gram", 0.0, False, "", f"too short: {length} words, under {PALM_N}"
        )
    total = length - PALM_N + 1
    score = matched / total
    evidence = f"{matched} of {total} {PALM_N}-grams in the corpus ({score:.0%})"
    if matched:
        evidence += f"; first: {_quote(tokens, int(np.argmax(windows(PALM_N))), PALM_N)}"
    return OverlapFinding("palm_8gram", score, score >= PALM_THRESHOLD, "", evidence)


def contaminated_words(hit: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """Llama 2's contaminated-word mask from the 11-gram matches, and the gap words bridged."""
    mask = np.convolve(hit.astype(np.int8), np.ones(LLAMA2_N, dtype=np.int8))[:length] > 0
    bridged = 0
    # Runs of matched words; bridge the gaps between them within each span's budget.
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    budget = LLAMA2_SKIP_BUDGET
    for (_, end), (next_start, _) in itertools.pairwise(runs):
        gap = next_start - end
        if gap <= budget:
            mask[end:next_start] = True
            budget -= gap
            bridged += gap
        else:
            budget = LLAMA2_SKIP_BUDGET
    return mask, bridged


def _llama2(
    tokens: list[str] | None, length: int, matched: int, windows: Callable
) -> OverlapFinding:
    if length < LLAMA2_N:
        return OverlapFinding(
            "llama2_span",
            0.0,
            False,
            "clean",
            f"{length} words, fewer than {LLAMA2_N}: no span of more than 10 can match",
        )
    if not matched:
        return OverlapFinding(
            "llama2_span", 0.0, False, "clean", f"contaminated tokens 0% (0 of {length} words)"
        )
    mask, bridged = contaminated_words(windows(LLAMA2_N), length)
    count = int(mask.sum())
    score = count / length
    if score < LLAMA2_CLEAN_BELOW:
        label = "clean"
    elif score >= LLAMA2_DIRTY_FROM:
        label = "dirty"
    else:
        label = "neither"
    evidence = f"contaminated tokens {score:.0%} ({count} of {length} words"
    evidence += f", {bridged} bridged by the skip-gram budget)" if bridged else ")"
    first = int(np.argmax(mask))
    stop = first + int(np.argmin(mask[first:])) if not mask[first:].all() else length
    evidence += f"; first span: {_quote(tokens, first, stop - first)}"
    return OverlapFinding("llama2_span", score, label != "clean", label, evidence)
