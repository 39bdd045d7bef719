"""The per-row text metric set for many rows at once: each text analysed once, shared by all.

Same numbers as the one-metric-at-a-time functions in
:mod:`assay.scoring.metrics.accuracy` (which call nltk, rouge-score and sacrebleu), computed
without them:

- exact / quasi-exact / prefix / quasi-prefix match and HELM's token-set F1 (nltk's
  ``f_measure`` formula) from one normalization per text;
- BLEU-1 and BLEU-4 as nltk's ``sentence_bleu`` computes them with single-order weights and no
  smoothing (including its ``sys.float_info.min`` stand-in for an order without a match), from
  one word tokenization per text;
- ROUGE-1, ROUGE-2 and ROUGE-L F-measures as rouge-score's ``RougeScorer(use_stemmer=True)``,
  from one stemmed tokenization per text;
- sentence chrF with sacrebleu's defaults (6 character orders, beta 2, effective order).

Rows are scored a chunk at a time. Within a chunk every distinct text is tokenized once in
Python and turned into integer ids (characters, words, stems); n-gram matching and the longest
common subsequence then run compiled (numba) over those ids. The arithmetic that makes the
final numbers is the reference implementations', operation for operation, so values agree to
the last bit. :func:`iter_text_scores` streams rows with flat memory, optionally over several
processes.
"""

from __future__ import annotations

import math
import re
import string
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import lru_cache
from itertools import chain, islice
from multiprocessing import get_context

import numpy as np
from numba import njit

from assay.scoring.metrics.tokenize import word_tokenize

MATCH_METRICS = (
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "f1_score",
)
OVERLAP_METRICS = ("bleu_1", "bleu_4", "rouge_1", "rouge_2", "rouge_l", "chrf")
TEXT_METRICS = MATCH_METRICS + OVERLAP_METRICS

Row = tuple[str, Sequence[str]]  # (prediction, references)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
# rouge-score's tokenizer: lowercase, non-alphanumerics to spaces, Porter stems of words longer
# than three characters, only [a-z0-9]+ tokens kept.
_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_VALID_TOKEN = re.compile(r"^[a-z0-9]+$")
_STEM_CACHE_LIMIT = 200_000
_CHRF_ORDER = 6
_CHRF_FACTOR = 2**2  # beta squared
_KEY_LIMIT = 2**62  # n-gram keys are base-V numbers in int64


def normalize_text(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop articles, collapse whitespace (SQuAD/QuAC/HELM)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_DROP_PUNCTUATION)).split())


_stems: dict[str, str] = {}


@lru_cache(maxsize=1)
def _porter_stem() -> Callable[[str], str]:
    from nltk.stem import porter  # rouge-score's stemmer

    return porter.PorterStemmer().stem


def _stem(word: str) -> str:
    """The token rouge-score keeps for ``word``, or "" where it drops it."""
    stem = _stems.get(word)
    if stem is None:
        if len(_stems) >= _STEM_CACHE_LIMIT:  # bounded: the vocabulary of a corpus can be huge
            _stems.clear()
        stem = _porter_stem()(word) if len(word) > 3 else word
        stem = _stems[word] = stem if _VALID_TOKEN.match(stem) else ""
    return stem


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokens of ``text`` with stemming (``rouge_score.tokenize.tokenize``)."""
    words = _NON_ALPHANUM.sub(" ", text.lower()).split()
    tokens = list(map(_stems.get, words))  # known words at C speed
    if None in tokens:
        tokens = [_stem(word) for word in words]
    if "" in tokens:
        tokens = [token for token in tokens if token]
    return tokens  # type: ignore[return-value]


# --- compiled kernels over integer ids -------------------------------------------------------
# A text's sequence is ids[starts[t]:starts[t + 1]]; an n-gram is the base-`base` number of its
# ids, so equal n-grams have equal keys.


@njit(cache=True)
def _sorted_keys(ids, starts, max_n, base):
    """Each text's n-gram keys for n = 1..max_n, sorted; row n - 1 of both outputs is order n."""
    n_texts = starts.shape[0] - 1
    keys = np.empty((max_n, starts[n_texts]), dtype=np.int64)
    key_starts = np.zeros((max_n, n_texts + 1), dtype=np.int64)
    current = ids.copy()  # order-n keys at their first position, unsorted
    for n in range(1, max_n + 1):
        for t in range(n_texts):
            first, count = starts[t], max(0, starts[t + 1] - starts[t] - n + 1)
            k = key_starts[n - 1, t]
            key_starts[n - 1, t + 1] = k + count
            for i in range(first, first + count):
                if n > 1:
                    current[i] = current[i] * base + ids[i + n - 1]
                keys[n - 1, k + i - first] = current[i]
            keys[n - 1, k : k + count].sort()
    return keys, key_starts


@njit(cache=True)
def _clipped_counts(keys, key_starts, hyp, ref):
    """Per pair: sum over shared n-grams of the smaller count (sorted-merge of two key runs)."""
    out = np.zeros(hyp.shape[0], dtype=np.int64)
    for p in range(hyp.shape[0]):
        i, i_end = key_starts[hyp[p]], key_starts[hyp[p] + 1]
        j, j_end = key_starts[ref[p]], key_starts[ref[p] + 1]
        matched = 0
        while i < i_end and j < j_end:
            a, b = keys[i], keys[j]
            if a < b:
                i += 1
            elif a > b:
                j += 1
            else:
                count_a = 0
                while i < i_end and keys[i] == a:
                    count_a += 1
                    i += 1
                count_b = 0
                while j < j_end and keys[j] == a:
                    count_b += 1
                    j += 1
                matched += min(count_a, count_b)
        out[p] = matched
    return out


@njit(cache=True)
def _lcs_lengths(ids, starts, hyp, ref):
    out = np.zeros(hyp.shape[0], dtype=np.int64)
    for p in range(hyp.shape[0]):
        h0, h1 = starts[hyp[p]], starts[hyp[p] + 1]
        r0, r1 = starts[ref[p]], starts[ref[p] + 1]
        row = np.zeros(h1 - h0 + 1, dtype=np.int64)
        for r in range(r0, r1):
            diagonal = 0  # table[i - 1][j - 1] of rouge-score's table
            for h in range(h0, h1):
                k = h - h0 + 1
                above = row[k]
                if ids[r] == ids[h]:
                    row[k] = diagonal + 1
                elif row[k - 1] > above:
                    row[k] = row[k - 1]
                diagonal = above
        out[p] = row[h1 - h0]
    return out


@njit(cache=True)
def _chrf_from_counts(matched, n_hyp, n_ref):
    """sacrebleu's CHRF._compute_f_score (effective order) / 100, per pair; orders on axis 1."""
    out = np.zeros(matched.shape[0], dtype=np.float64)
    for p in range(matched.shape[0]):
        avg_prec = 0.0
        avg_rec = 0.0
        effective = 0
        for i in range(matched.shape[1]):
            if n_hyp[p, i] > 0 and n_ref[p, i] > 0:
                avg_prec += matched[p, i] / n_hyp[p, i]
                avg_rec += matched[p, i] / n_ref[p, i]
                effective += 1
        if effective > 0:
            avg_prec /= effective
            avg_rec /= effective
        if avg_prec + avg_rec != 0.0:
            score = (1 + _CHRF_FACTOR) * avg_prec * avg_rec
            score /= (_CHRF_FACTOR * avg_prec) + avg_rec
            out[p] = 100 * score / 100.0
    return out


@njit(cache=True)
def _fmeasures(matched, n_pred, n_target):
    """rouge-score's n-gram F-measure per pair, operation for operation."""
    out = np.zeros(matched.shape[0], dtype=np.float64)
    for p in range(matched.shape[0]):
        precision = matched[p] / max(n_pred[p], 1)
        recall = matched[p] / max(n_target[p], 1)
        if precision + recall > 0:
            out[p] = 2 * precision * recall / (precision + recall)
    return out


# --- a chunk of rows ----------------------------------------------------------------------------


class _Sequences:
    """Integer-id sequences of the distinct texts of a chunk, one kind of token."""

    def __init__(self, token_lists: Sequence[Sequence[str]], max_order: int) -> None:
        if token_lists and isinstance(token_lists[0], str):  # characters: ids from code points
            codes = np.frombuffer(
                "".join(token_lists).encode("utf-32-le", "surrogatepass"), dtype=np.uint32
            )
            distinct, inverse = np.unique(codes, return_inverse=True)
            self.ids = inverse.astype(np.int64).ravel()
            vocab_size = len(distinct)
        else:
            vocab: dict[str, int] = {}
            setdefault = vocab.setdefault
            self.ids = np.array(
                [setdefault(t, len(vocab)) for t in chain.from_iterable(token_lists)],
                dtype=np.int64,
            )
            vocab_size = len(vocab)
        self.starts = np.zeros(len(token_lists) + 1, dtype=np.int64)
        np.cumsum([len(tokens) for tokens in token_lists], out=self.starts[1:])
        self.lengths = np.diff(self.starts)
        self.base = max(vocab_size, 1)
        self.token_lists = token_lists
        # The highest order (up to the one asked) whose keys fit in an int64.
        self._key_orders = 0
        while self._key_orders < max_order and self.base ** (self._key_orders + 1) < _KEY_LIMIT:
            self._key_orders += 1
        self._keys: tuple[np.ndarray, np.ndarray] | None = None

    def clipped(self, n: int, hyp: np.ndarray, ref: np.ndarray) -> np.ndarray:
        if n <= self._key_orders:
            if self._keys is None:
                self._keys = _sorted_keys(self.ids, self.starts, self._key_orders, self.base)
            keys, key_starts = self._keys
            return _clipped_counts(keys[n - 1], key_starts[n - 1], hyp, ref)
        # Too many distinct tokens in this chunk for an int64 key: count n-gram tuples.
        out = np.zeros(hyp.shape[0], dtype=np.int64)
        grams = [_tuple_counts(tokens, n) for tokens in self.token_lists]
        for p, (h, r) in enumerate(zip(hyp.tolist(), ref.tolist(), strict=True)):
            a, b = grams[h], grams[r]
            out[p] = sum(min(count, b[g]) for g, count in a.items() if g in b)
        return out

    def n_grams(self, n: int) -> np.ndarray:
        return np.maximum(self.lengths - n + 1, 0)


def _tuple_counts(tokens: list, n: int) -> dict:
    counts: dict = {}
    for gram in zip(*(tokens[i:] for i in range(n)), strict=False):
        counts[gram] = counts.get(gram, 0) + 1
    return counts


def _check_row(row: int, prediction: str, references: Sequence[str]) -> None:
    if not isinstance(prediction, str):
        raise TypeError(f"row {row}: prediction must be a string, not {type(prediction).__name__}")
    if isinstance(references, str):  # a bare string would be scored character by character
        raise TypeError(f"row {row}: references must be a sequence of strings, not a string")
    if not references:
        raise ValueError(f"row {row}: at least one gold reference is needed to score a prediction")
    for gold in references:
        if not isinstance(gold, str):
            raise TypeError(f"row {row}: reference {gold!r} is not a string")


def _bleu(matched_1: int, matched_4: int, hyp_len: int, ref_len: int) -> tuple[float, float]:
    """(BLEU-1, BLEU-4) of nltk's ``sentence_bleu`` with weights (1,0,0,0) and (0,0,0,1)."""
    if matched_1 == 0:
        return 0.0, 0.0
    # nltk's brevity penalty; hyp_len > 0 here, since something matched.
    penalty = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    # nltk's method0 puts float_info.min where an order has no match; the other orders carry
    # weight 0, so the fsum of weighted logs is this order's log alone.
    p_4 = matched_4 / max(1, hyp_len - 3) if matched_4 else sys.float_info.min
    return (
        penalty * math.exp(math.log(matched_1 / hyp_len)),
        penalty * math.exp(math.log(p_4)),
    )


def _f1(gold_tokens: frozenset[str], pred_tokens: frozenset[str]) -> float:
    # HELM: nltk's f_measure on token sets; an empty side (None there) scores 0.
    if not gold_tokens or not pred_tokens:
        return 0.0
    common = len(gold_tokens & pred_tokens)
    if common == 0:
        return 0.0
    return 1.0 / (0.5 / (common / len(pred_tokens)) + 0.5 / (common / len(gold_tokens)))


def _metric_names(metrics: Collection[str]) -> tuple[str, ...]:
    names = tuple(metrics)
    unknown = sorted(set(names) - set(TEXT_METRICS))
    if unknown:
        raise KeyError(f"unknown text metric(s) {unknown}; known: {TEXT_METRICS}")
    return names


def score_rows(
    rows: Sequence[Row], metrics: Collection[str] = TEXT_METRICS, first_row: int = 0
) -> np.ndarray:
    """Best score over each row's references, ``(len(rows), len(metrics))`` float64.

    Columns follow ``metrics``. Raises ``TypeError``/``ValueError`` naming the row (counted
    from ``first_row``) for a bad prediction or reference list, ``KeyError`` for an unknown
    metric.
    """
    names = _metric_names(metrics)
    want = set(names)
    for row, (prediction, references) in enumerate(rows, start=first_row):
        _check_row(row, prediction, references)
    if not rows:
        return np.empty((0, len(names)), dtype=np.float64)
    index: dict[str, int] = {}
    hyp_list: list[int] = []
    ref_list: list[int] = []
    row_of_pair: list[int] = []
    for row, (prediction, references) in enumerate(rows):
        h = index.setdefault(prediction, len(index))
        for gold in references:
            hyp_list.append(h)
            ref_list.append(index.setdefault(gold, len(index)))
            row_of_pair.append(row)
    texts = list(index)
    hyp = np.array(hyp_list, dtype=np.int64)
    ref = np.array(ref_list, dtype=np.int64)
    pairs: dict[str, np.ndarray] = {}

    if not want.isdisjoint(MATCH_METRICS):
        views = [(t.strip(), normalize_text(t)) for t in texts]
        token_sets = [frozenset(norm.split()) for _, norm in views]
        em, qem, pem, qpem, f1 = [], [], [], [], []
        for h, r in zip(hyp_list, ref_list, strict=True):
            (h_strip, h_norm), (r_strip, r_norm) = views[h], views[r]
            nonempty = bool(texts[h])
            em.append(nonempty and r_strip == h_strip)
            qem.append(nonempty and r_norm == h_norm)
            pem.append(nonempty and h_strip.startswith(r_strip))
            qpem.append(nonempty and h_norm.startswith(r_norm))
            f1.append(_f1(token_sets[r], token_sets[h]))
        for name, values in zip(MATCH_METRICS, (em, qem, pem, qpem, f1), strict=True):
            pairs[name] = np.array(values, dtype=np.float64)

    if "bleu_1" in want or "bleu_4" in want:
        words = _Sequences([word_tokenize(t) for t in texts], 4)
        m1 = words.clipped(1, hyp, ref).tolist()
        m4 = words.clipped(4, hyp, ref).tolist()
        lengths = words.lengths.tolist()
        scores = [
            _bleu(a, b, lengths[h], lengths[r])
            for a, b, h, r in zip(m1, m4, hyp_list, ref_list, strict=True)
        ]
        pairs["bleu_1"] = np.array([s[0] for s in scores], dtype=np.float64)
        pairs["bleu_4"] = np.array([s[1] for s in scores], dtype=np.float64)

    if not want.isdisjoint(("rouge_1", "rouge_2", "rouge_l")):
        stems = _Sequences([rouge_tokens(t) for t in texts], 2)
        n_pred, n_target = stems.lengths[hyp], stems.lengths[ref]
        for name, n in (("rouge_1", 1), ("rouge_2", 2)):
            if name in want:
                grams = stems.n_grams(n)
                pairs[name] = _fmeasures(stems.clipped(n, hyp, ref), grams[hyp], grams[ref])
        if "rouge_l" in want:
            lcs = _lcs_lengths(stems.ids, stems.starts, hyp, ref)
            both = (n_pred > 0) & (n_target > 0)  # rouge-score scores 0 when a side is empty
            pairs["rouge_l"] = np.where(
                both, _fmeasures(lcs, n_pred, n_target), 0.0
            )  # lcs <= both lengths, so the max(.., 1) guards are inert where both > 0

    if "chrf" in want:
        chars = _Sequences(
            ["".join(t.split()) for t in texts], _CHRF_ORDER
        )  # sacrebleu drops whitespace
        matched = np.empty((len(hyp_list), _CHRF_ORDER), dtype=np.int64)
        n_hyp = np.empty_like(matched)
        n_ref = np.empty_like(matched)
        for i in range(_CHRF_ORDER):
            grams = chars.n_grams(i + 1)
            n_ref[:, i] = grams[ref]
            # sacrebleu counts no hypothesis n-grams when the reference has none of the order
            n_hyp[:, i] = np.where(n_ref[:, i] > 0, grams[hyp], 0)
            matched[:, i] = chars.clipped(i + 1, hyp, ref)
        pairs["chrf"] = _chrf_from_counts(matched, n_hyp, n_ref)

    out = np.empty((len(rows), len(names)), dtype=np.float64)
    first_pair = np.searchsorted(np.array(row_of_pair, dtype=np.int64), np.arange(len(rows)))
    for column, name in enumerate(names):
        out[:, column] = np.maximum.reduceat(pairs[name], first_pair)
    return out


def text_scores(
    prediction: str, references: Sequence[str], metrics: Collection[str] = TEXT_METRICS
) -> dict[str, float]:
    """The best score over ``references`` of each metric in ``metrics`` for one prediction."""
    names = _metric_names(metrics)
    values = score_rows([(prediction, references)], names)[0]
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def _score_chunk(chunk: list[Row], metrics: tuple[str, ...], first_row: int) -> np.ndarray:
    return score_rows(chunk, metrics, first_row)


def iter_text_scores(
    rows: Iterable[Row],
    metrics: Collection[str] = TEXT_METRICS,
    workers: int = 1,
    chunk_rows: int = 4096,
) -> Iterator[np.ndarray]:
    """Score ``(prediction, references)`` rows a chunk at a time, in order.

    Yields one ``(rows_in_chunk, len(metrics))`` array per chunk of ``chunk_rows`` rows, so
    memory stays flat however many rows come. With ``workers > 1`` chunks are scored in that
    many processes, at most two chunks per process in flight.
    """
    names = _metric_names(metrics)
    source = iter(rows)
    chunks = iter(lambda: list(islice(source, chunk_rows)), [])
    if workers <= 1:
        first = 0
        for chunk in chunks:
            yield score_rows(chunk, names, first)
            first += len(chunk)
        return
    # spawn: the caller may hold threads (Dagster does), which fork would copy half-locked.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending: list[Future[np.ndarray]] = []
        first = 0
        for chunk in chunks:
            pending.append(pool.submit(_score_chunk, chunk, names, first))
            first += len(chunk)
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()
