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

Rows are scored a chunk at a time. Within a chunk every distinct text is tokenized once and
turned into integer ids (characters, words, normalized words, stems), the lowercasing,
normalization and ROUGE tokenization in one pass over the whole chunk; n-gram matching (all
orders from one sort per text), set F1 and the longest common subsequence then run compiled
(numba) over those ids. The arithmetic that makes the
final numbers is the reference implementations', operation for operation, so values agree to
the last bit. :func:`iter_text_scores` streams rows with flat memory, optionally over several
processes.
"""

from __future__ import annotations

import math
import re
import string
import sys
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import lru_cache
from itertools import chain, count, islice, pairwise
from multiprocessing import get_context
from typing import Any

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
_KEY_BITS = 62  # n-gram keys pack ids into an int64
_FLOAT_MIN = sys.float_info.min


def normalize_text(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop articles, collapse whitespace (SQuAD/QuAC/HELM)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_DROP_PUNCTUATION)).split())


_END = "\x00"  # see _normalized_and_stemmed
_stems: dict[str, str] = {_END: _END}


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
            _stems[_END] = _END
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


# A chunk's distinct texts are lowercased, normalized and split for ROUGE as one string, each
# text ended by _END (neither whitespace, punctuation, a word character nor cased, so every step
# treats it as a text boundary); a chunk with a text holding _END takes them one by one.
_NON_ALPHANUM_OR_END = re.compile(r"[^a-z0-9\x00]+")


def _stemmed(words: list[str]) -> list[str]:
    """:func:`_stem` of each of ``words``, _END kept."""
    stems = list(map(_stems.get, words))  # known words at C speed
    if None in stems:
        lookup = {word: _stem(word) for word in set(words) if word != _END}
        lookup[_END] = _END
        stems = list(map(lookup.__getitem__, words))
    return stems  # type: ignore[return-value]


def _normalized_and_stemmed(texts: list[str]) -> tuple[list[str], _Sequences, _Sequences]:
    """Each text's :func:`normalize_text`, and the sequences of its normalized words and of its
    :func:`rouge_tokens`."""
    joined = _END.join(texts)
    if joined.count(_END) != len(texts) - 1:
        norms = [normalize_text(t) for t in texts]
        return (
            norms,
            _Sequences.of_tokens([n.split() for n in norms], 1),
            _Sequences.of_tokens([rouge_tokens(t) for t in texts], 2),
        )
    lowered = joined.lower()
    normalized = _ARTICLES.sub(" ", lowered.translate(_DROP_PUNCTUATION))
    norms = [" ".join(part.split()) for part in normalized.split(_END)]
    norm_words = normalized.replace(_END, f" {_END} ").split()
    rouge_words = _NON_ALPHANUM_OR_END.sub(" ", lowered).replace(_END, f" {_END} ").split()
    return (
        norms,
        _Sequences.of_flat(norm_words, len(texts), 1),
        _Sequences.of_flat(_stemmed(rouge_words), len(texts), 2),
    )


# --- compiled kernels over integer ids -------------------------------------------------------
# A text's sequence is ids[starts[t]:starts[t + 1]], ids from 1; the key of the suffix starting
# at a position packs its first `orders` ids, `bits` bits each, padded with 0 past the text's end.
# Sorting a text's suffix keys once sorts its n-grams of every order n <= `orders` too: the
# order-n key is the suffix key's top n digits (a shift), and a suffix shorter than n shows as a
# 0 in its n-th digit.


@njit(cache=True)
def _dense_ids(raw, table_size):
    """Ids from 1 for the distinct values (0 <= value < table_size) of ``raw``, in order of
    first appearance, and how many there are."""
    table = np.zeros(table_size, dtype=np.int64)
    ids = np.empty(raw.shape[0], dtype=np.int64)
    n = 0
    for i in range(raw.shape[0]):
        value = raw[i]
        if table[value] == 0:
            n += 1
            table[value] = n
        ids[i] = table[value]
    return ids, n


@njit(cache=True)
def _split_flat(raw, n_texts):
    """Texts' dense ids and starts from one flat run: 0 ends a text, a negative value is
    dropped, the rest are token numbers below ``raw.shape[0] + 1``."""
    table = np.zeros(raw.shape[0] + 1, dtype=np.int64)
    ids = np.empty(raw.shape[0], dtype=np.int64)
    starts = np.zeros(n_texts + 1, dtype=np.int64)
    n = 0
    k = 0
    t = 0
    for i in range(raw.shape[0]):
        value = raw[i]
        if value == 0:
            t += 1
            starts[t] = k
        elif value > 0:
            if table[value] == 0:
                n += 1
                table[value] = n
            ids[k] = table[value]
            k += 1
    starts[t + 1 :] = k
    return ids[:k].copy(), starts, n


@njit(cache=True)
def _set_f1(ids, starts, hyp, ref):
    """HELM's F1 (nltk's ``f_measure`` on token sets, 0 for an empty side) per pair."""
    n_texts = starts.shape[0] - 1
    distinct = np.empty(ids.shape[0], dtype=np.int64)
    set_starts = np.zeros(n_texts + 1, dtype=np.int64)
    k = 0
    for t in range(n_texts):
        run = np.sort(ids[starts[t] : starts[t + 1]])
        for i in range(run.shape[0]):
            if i == 0 or run[i] != run[i - 1]:
                distinct[k] = run[i]
                k += 1
        set_starts[t + 1] = k
    out = np.zeros(hyp.shape[0], dtype=np.float64)
    for p in range(hyp.shape[0]):
        i, i_end = set_starts[hyp[p]], set_starts[hyp[p] + 1]
        j, j_end = set_starts[ref[p]], set_starts[ref[p] + 1]
        n_pred, n_gold = i_end - i, j_end - j
        common = 0
        while i < i_end and j < j_end:
            if distinct[i] < distinct[j]:
                i += 1
            elif distinct[i] > distinct[j]:
                j += 1
            else:
                common += 1
                i += 1
                j += 1
        if common > 0:
            out[p] = 1.0 / (0.5 / (common / n_pred) + 0.5 / (common / n_gold))
    return out


@njit(cache=True)
def _suffix_keys(ids, starts, orders, bits):
    """Each text's suffix keys (first ``orders`` ids, 0-padded), sorted within the text."""
    keys = np.empty(ids.shape[0], dtype=np.int64)
    for t in range(starts.shape[0] - 1):
        first, end = starts[t], starts[t + 1]
        for i in range(first, end):
            key = 0
            for j in range(i, i + orders):
                key = (key << bits) | (ids[j] if j < end else 0)
            keys[i] = key
        keys[first:end].sort()
    return keys


@njit(cache=True)
def _clipped_counts(keys, starts, hyp, ref, wanted, orders, bits):
    """Per pair and wanted order n: sum over shared n-grams of the smaller count.

    A sorted-merge of the two texts' suffix keys cut to n digits, skipping suffixes shorter
    than n (column ``w`` of the output is order ``wanted[w]``).
    """
    out = np.zeros((hyp.shape[0], wanted.shape[0]), dtype=np.int64)
    for w in range(wanted.shape[0]):
        shift = bits * (orders - wanted[w])
        mask = (1 << bits) - 1
        for p in range(hyp.shape[0]):
            i, i_end = starts[hyp[p]], starts[hyp[p] + 1]
            j, j_end = starts[ref[p]], starts[ref[p] + 1]
            matched = 0
            while i < i_end and j < j_end:
                a = keys[i] >> shift
                if a & mask == 0:  # a suffix shorter than the order
                    i += 1
                    continue
                b = keys[j] >> shift
                if b & mask == 0:
                    j += 1
                    continue
                if a < b:
                    i += 1
                elif a > b:
                    j += 1
                else:
                    count_a = 0
                    while i < i_end and keys[i] >> shift == a:
                        count_a += 1
                        i += 1
                    count_b = 0
                    while j < j_end and keys[j] >> shift == a:
                        count_b += 1
                        j += 1
                    matched += min(count_a, count_b)
            out[p, w] = matched
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
    """Integer-id sequences (ids from 1) of the distinct texts of a chunk, one kind of token."""

    def __init__(self, ids: np.ndarray, starts: np.ndarray, vocab_size: int, max_order: int):
        self.ids = ids
        self.starts = starts
        self.lengths = np.diff(starts)
        # Bits per id (0 pads a suffix past its text's end), and the highest order (up to the
        # one asked) whose keys fit in an int64.
        self._bits = max(int(vocab_size).bit_length(), 1)
        self._key_orders = min(max_order, _KEY_BITS // self._bits)
        self._keys: np.ndarray | None = None

    @classmethod
    def of_tokens(cls, token_lists: Sequence[Sequence[str]], max_order: int) -> _Sequences:
        # Each token's number is the position of its first occurrence (setdefault at C speed),
        # made dense in compiled code.
        flat = list(chain.from_iterable(token_lists))
        first = np.fromiter(map({}.setdefault, flat, count()), dtype=np.int64, count=len(flat))
        ids, vocab_size = _dense_ids(first, len(flat))
        starts = np.zeros(len(token_lists) + 1, dtype=np.int64)
        np.cumsum([len(tokens) for tokens in token_lists], out=starts[1:])
        return cls(ids, starts, vocab_size, max_order)

    @classmethod
    def of_flat(cls, tokens: list[Any], n_texts: int, max_order: int) -> _Sequences:
        """From all texts' tokens in one list, each text ended by ``_END``, ``""`` dropped."""
        numbers = {_END: 0, "": -1}
        first = np.fromiter(
            map(numbers.setdefault, tokens, count(1)), dtype=np.int64, count=len(tokens)
        )
        return cls(*_split_flat(first, n_texts), max_order)

    @classmethod
    def of_chars(cls, texts: Sequence[str], max_order: int) -> _Sequences:
        codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), np.uint32)
        ids, vocab_size = _dense_ids(codes, 0x110000)
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(text) for text in texts], out=starts[1:])
        return cls(ids, starts, vocab_size, max_order)

    def clipped(self, orders: Sequence[int], hyp: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Clipped n-gram matches per pair (rows) for each of ``orders`` (columns)."""
        out = np.zeros((hyp.shape[0], len(orders)), dtype=np.int64)
        keyed = [w for w, n in enumerate(orders) if n <= self._key_orders]
        if keyed:
            if self._keys is None:
                self._keys = _suffix_keys(self.ids, self.starts, self._key_orders, self._bits)
            wanted = np.array([orders[w] for w in keyed], dtype=np.int64)
            out[:, keyed] = _clipped_counts(
                self._keys, self.starts, hyp, ref, wanted, self._key_orders, self._bits
            )
        # Too many distinct tokens in this chunk for an int64 key: count n-gram tuples.
        for w, n in enumerate(orders):
            if n > self._key_orders:
                ids = self.ids.tolist()
                starts = self.starts.tolist()
                grams = [_tuple_counts(ids[first:end], n) for first, end in pairwise(starts)]
                for p, (h, r) in enumerate(zip(hyp.tolist(), ref.tolist(), strict=True)):
                    a, b = grams[h], grams[r]
                    out[p, w] = sum(min(count, b[g]) for g, count in a.items() if g in b)
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


@njit(cache=True)
def _bleu(matched_1, matched_4, hyp_len, ref_len):
    """(BLEU-1, BLEU-4) per pair of nltk's ``sentence_bleu`` with weights (1,0,0,0), (0,0,0,1)."""
    out = np.zeros((matched_1.shape[0], 2), dtype=np.float64)
    for p in range(matched_1.shape[0]):
        if matched_1[p] == 0:
            continue
        # nltk's brevity penalty; hyp_len > 0 here, since something matched.
        penalty = 1.0
        if hyp_len[p] <= ref_len[p]:
            penalty = math.exp(1 - ref_len[p] / hyp_len[p])
        # nltk's method0 puts float_info.min where an order has no match; the other orders
        # carry weight 0, so the fsum of weighted logs is this order's log alone.
        p_4 = _FLOAT_MIN
        if matched_4[p]:
            p_4 = matched_4[p] / max(1, hyp_len[p] - 3)
        out[p, 0] = penalty * math.exp(math.log(matched_1[p] / hyp_len[p]))
        out[p, 1] = penalty * math.exp(math.log(p_4))
    return out


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

    rouge = ("rouge_1", "rouge_2", "rouge_l")
    if not want.isdisjoint(MATCH_METRICS + rouge):  # one pass over the chunk serves both
        norms, norm_words, stems = _normalized_and_stemmed(texts)
    if not want.isdisjoint(MATCH_METRICS):
        strips = [t.strip() for t in texts]
        nonempty = np.fromiter(map(bool, texts), dtype=bool, count=len(texts))[hyp]
        for name, views, test in (
            ("exact_match", strips, None),
            ("quasi_exact_match", norms, None),
            ("prefix_exact_match", strips, str.startswith),
            ("quasi_prefix_exact_match", norms, str.startswith),
        ):
            if test is None:  # equal views have equal numbers
                number = np.fromiter(map({}.setdefault, views, count()), np.int64, len(views))
                hit = number[hyp] == number[ref]
            else:
                hit = np.fromiter(
                    map(test, map(views.__getitem__, hyp_list), map(views.__getitem__, ref_list)),
                    dtype=bool,
                    count=len(hyp_list),
                )
            pairs[name] = (nonempty & hit).astype(np.float64)
        pairs["f1_score"] = _set_f1(norm_words.ids, norm_words.starts, hyp, ref)

    if "bleu_1" in want or "bleu_4" in want:
        words = _Sequences.of_tokens([word_tokenize(t) for t in texts], 4)
        matched = words.clipped((1, 4), hyp, ref)
        scores = _bleu(matched[:, 0], matched[:, 1], words.lengths[hyp], words.lengths[ref])
        pairs["bleu_1"], pairs["bleu_4"] = scores[:, 0], scores[:, 1]

    if not want.isdisjoint(rouge):
        n_pred, n_target = stems.lengths[hyp], stems.lengths[ref]
        matched = stems.clipped((1, 2), hyp, ref)
        for name, n in (("rouge_1", 1), ("rouge_2", 2)):
            if name in want:
                grams = stems.n_grams(n)
                pairs[name] = _fmeasures(matched[:, n - 1], grams[hyp], grams[ref])
        if "rouge_l" in want:
            lcs = _lcs_lengths(stems.ids, stems.starts, hyp, ref)
            both = (n_pred > 0) & (n_target > 0)  # rouge-score scores 0 when a side is empty
            pairs["rouge_l"] = np.where(
                both, _fmeasures(lcs, n_pred, n_target), 0.0
            )  # lcs <= both lengths, so the max(.., 1) guards are inert where both > 0

    if "chrf" in want:
        chars = _Sequences.of_chars(
            ["".join(t.split()) for t in texts], _CHRF_ORDER
        )  # sacrebleu drops whitespace
        matched = chars.clipped(range(1, _CHRF_ORDER + 1), hyp, ref)
        n_hyp = np.empty_like(matched)
        n_ref = np.empty_like(matched)
        for i in range(_CHRF_ORDER):
            grams = chars.n_grams(i + 1)
            n_ref[:, i] = grams[ref]
            # sacrebleu counts no hypothesis n-grams when the reference has none of the order
            n_hyp[:, i] = np.where(n_ref[:, i] > 0, grams[hyp], 0)
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
    many processes: this one and ``workers - 1`` spawned ones, each with at most two chunks in
    flight; this process scores a chunk whenever the others have their fill.
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
    # This process scores too: a spawned one first spends a second or more importing.
    with ProcessPoolExecutor(workers - 1, mp_context=get_context("spawn")) as pool:
        pending: deque[Future[np.ndarray] | np.ndarray] = deque()
        first = 0
        for chunk in chunks:
            busy = sum(isinstance(p, Future) and not p.done() for p in pending)
            if busy < 2 * (workers - 1):
                pending.append(pool.submit(_score_chunk, chunk, names, first))
            else:
                pending.append(score_rows(chunk, names, first))
            first += len(chunk)
            # Hand out what is ready in order; wait for the oldest only once 16 chunks per
            # process queue (a spawned process takes seconds to start; results are small).
            while pending and (
                not isinstance(pending[0], Future)
                or pending[0].done()
                or len(pending) >= 16 * workers
            ):
                head = pending.popleft()
                yield head.result() if isinstance(head, Future) else head
        for head in pending:
            yield head.result() if isinstance(head, Future) else head
