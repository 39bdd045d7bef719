"""Text normalization, tokens and hashed n-grams shared by the corpus index and the detectors.

One normalization serves every overlap definition, so one index answers all three:

- **GPT-3 / lm-eval** (Brown et al. 2020, appendix C; ``lm_eval/decontamination/janitor.py``):
  the text is lower-cased and punctuation is removed, then split on whitespace into words,
  and 13-grams of words are compared. We follow lm-eval's ``Janitor.normalize_string``
  exactly: ASCII ``A-Z`` become ``a-z`` (other letters keep their case), every character of
  ``string.punctuation`` (ASCII ``!"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~``) is *deleted* (so
  ``"don't"`` → ``"dont"``, ``"well-known"`` → ``"wellknown"``), and ``str.split()`` cuts on
  runs of Unicode whitespace. Curly quotes, dashes and other non-ASCII punctuation stay.
- **PaLM** (Chowdhery et al. 2022, §8) counts 8-grams without naming a normalization; we use
  the same words as above, so the 8-grams are lm-eval's words taken 8 at a time.
- **Llama 2** (Touvron et al. 2023, appendix A.6) counts *tokens* of its SentencePiece
  tokenizer. A corpus index must not depend on one model's tokenizer, so our "tokens" are the
  same normalized words; a span of "more than 10 tokens" is a span of at least 11 words.

Hashes. A word hashes to 64 bits from its UTF-8 bytes read as 8-byte chunks (see
``_hash_words``: one to one for words of up to 8 bytes) and its length, through the
SplitMix64 finalizer; an n-gram hashes by a polynomial of its words' hashes (multiplier
``_M2``, modulo 2**64), its n, and the same finalizer. Everything is fixed-width integer
arithmetic in NumPy: the same bytes give the same hash in every process and on every
platform (never Python's ``hash()``, which is salted per process), and the whole computation
is vectorized, which a per-n-gram ``blake2b`` or ``xxhash`` call is not (one Python call per
n-gram would cap the index build at a few MB/s). The hash is not cryptographic: it is meant
for accidental collisions (about ``N**2 / 2**65`` for ``N`` distinct n-grams: ~1e-3 at 10**8).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GPT3_N = 13
PALM_N = 8
LLAMA2_N = 11  # "more than 10 tokens"
NGRAM_SIZES: tuple[int, ...] = (PALM_N, LLAMA2_N, GPT3_N)

# lm-eval's Janitor translation table: ASCII upper → lower, string.punctuation deleted.
_TABLE = str.maketrans(
    string.ascii_lowercase + string.ascii_uppercase,
    string.ascii_lowercase * 2,
    string.punctuation,
)

_M1 = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime
_M2 = np.uint64(0x9E3779B97F4A7C15)  # odd, golden ratio
_LEN = np.uint64(0xD6E8FEB86659FD93)
_K = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5],
    dtype=np.uint64,
)
_COLUMNS = np.arange(8, dtype=np.int64)


def normalize(text: str) -> str:
    """lm-eval's ``Janitor.normalize_string``: ASCII lower-case, ASCII punctuation deleted."""
    return text.translate(_TABLE)


def words(text: str) -> list[str]:
    """The normalized words of ``text`` (the tokens every detector counts)."""
    return text.translate(_TABLE).split()


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@dataclass(frozen=True)
class TokenBatch:
    """The word hashes of several texts laid end to end; ``offsets[i]:offsets[i+1]`` is text i."""

    hashes: np.ndarray  # uint64, one per word
    offsets: np.ndarray  # int64, len(texts) + 1

    def ngram_hashes(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(hashes, valid)`` of every window of ``n`` words starting at each word position.

        Position ``i`` covers words ``i .. i+n-1``; ``valid[i]`` is False where that window runs
        past the end of its text (n-grams never span two documents).
        """
        total = len(self.hashes)
        count = max(total - n + 1, 0)
        acc = np.zeros(count, dtype=np.uint64)
        if count:
            with np.errstate(over="ignore"):
                for j in range(n):
                    acc *= _M2
                    acc += self.hashes[j : j + count]
                acc ^= np.uint64(n)
                _mix(acc)
        lengths = np.diff(self.offsets)
        text_of = np.repeat(np.arange(len(lengths)), lengths)
        valid = text_of[:count] == text_of[n - 1 : n - 1 + count] if count else acc.astype(bool)
        return acc, valid

    def unique_ngrams(self, n: int) -> np.ndarray:
        """The sorted distinct n-gram hashes of all texts (no window crossing two texts)."""
        acc, valid = self.ngram_hashes(n)
        return sorted_unique(acc[valid])


def sorted_unique(values: np.ndarray, runs: bool = False) -> np.ndarray:
    """Sort ``values`` in place and return its distinct values (faster than ``np.unique``).

    ``runs``: the array is a concatenation of sorted runs, which the stable sort (timsort)
    merges in O(n log k) where the default introsort would start over.
    """
    values.sort(kind="stable" if runs else "quicksort")
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def tokenize(texts: Sequence[str]) -> TokenBatch:
    """Normalize and hash the words of many texts at once (vectorized; see the module doc)."""
    counts = np.zeros(len(texts) + 1, dtype=np.int64)
    pieces: list[str] = []
    for i, text in enumerate(texts):
        tokens = text.translate(_TABLE).split()
        counts[i + 1] = len(tokens)
        if tokens:
            pieces.append(" ".join(tokens))
    offsets = np.cumsum(counts)
    total = int(offsets[-1])
    if total == 0:
        return TokenBatch(np.zeros(0, dtype=np.uint64), offsets)
    # Words joined by single spaces (0x20 never occurs inside a UTF-8 multibyte sequence).
    data = np.frombuffer(" ".join(pieces).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    return TokenBatch(_hash_words(data, total), offsets)


def _hash_words(data: np.ndarray, total: int) -> np.ndarray:
    """Hash each space-separated word of ``data`` (one space between words, none at the ends).

    A word's UTF-8 bytes, zero-padded, are read as little-endian 8-byte chunks c0, c1, ...:
    ``h = len * LEN + c0 * K[0]``, then ``h = h * M1 + ci * K[i % 4]``, then SplitMix64. Words
    of up to 8 bytes (most) map one to one; all of a batch's first chunks are one gather.
    """
    spaces = np.flatnonzero(data == 32)
    starts = np.empty(total, dtype=np.int64)
    starts[0] = 0
    starts[1:] = spaces + 1
    lengths = np.empty(total, dtype=np.int64)
    lengths[:-1] = spaces - starts[:-1]
    lengths[-1] = len(data) - starts[-1]
    padded = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    with np.errstate(over="ignore"):
        hashes = lengths.astype(np.uint64) * _LEN
        hashes += _chunks(padded, starts, lengths, 0) * _K[0]
        chunk = 1
        while len(longer := np.flatnonzero(lengths > 8 * chunk)):
            part = _chunks(padded, starts[longer], lengths[longer], 8 * chunk)
            hashes[longer] = hashes[longer] * _M1 + part * _K[chunk % 4]
            chunk += 1
        return _mix(hashes)


def _chunks(padded: np.ndarray, starts: np.ndarray, lengths: np.ndarray, at: int) -> np.ndarray:
    """Bytes ``at .. at+7`` of each word as a little-endian uint64, zeros past its end."""
    index = np.minimum(starts[:, None] + (at + _COLUMNS), len(padded) - 1)
    block = padded[index]
    block[(at + _COLUMNS) >= lengths[:, None]] = 0
    return block.view("<u8").ravel()
