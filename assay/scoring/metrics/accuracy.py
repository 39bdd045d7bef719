"""Accuracy metrics: reference matching for generations, choice scoring for multiple choice.

Generation metrics take one prediction and the list of gold references and return the best
score over the references (HELM's ``max_i score(G_i, P)``). Definitions follow HELM's
``evaluate_reference_metrics``: the same text normalization, token-set F1, nltk sentence BLEU
with single-order weights and no smoothing, and stemmed ROUGE F-measure.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from assay.core.records import ChoiceScore
from assay.scoring.metrics.tokenize import word_tokenize

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_text(text: str, remove_articles: bool = True) -> str:
    """Lowercase, drop ASCII punctuation, drop articles, collapse whitespace (SQuAD/QuAC/HELM)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    if remove_articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _best(score: Callable[[str, str], float], prediction: str, references: Sequence[str]) -> float:
    if isinstance(references, str):  # a bare string would be scored character by character
        raise TypeError("references must be a sequence of strings, not a single string")
    if not references:
        raise ValueError("at least one gold reference is needed to score a prediction")
    return max(score(gold, prediction) for gold in references)


def _exact(gold: str, pred: str) -> float:
    return float(bool(pred) and gold.strip() == pred.strip())


def _quasi_exact(gold: str, pred: str) -> float:
    return float(bool(pred) and normalize_text(gold) == normalize_text(pred))


def _prefix_exact(gold: str, pred: str) -> float:
    return float(bool(pred) and pred.strip().startswith(gold.strip()))


def _quasi_prefix_exact(gold: str, pred: str) -> float:
    return float(bool(pred) and normalize_text(pred).startswith(normalize_text(gold)))


def _f1(gold: str, pred: str) -> float:
    gold_tokens = set(normalize_text(gold).split())
    pred_tokens = set(normalize_text(pred).split())
    common = len(gold_tokens & pred_tokens)
    # An empty side after normalization scores 0 (nltk's f_measure returns None there).
    if not gold_tokens or not pred_tokens or common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 1.0 / (0.5 / precision + 0.5 / recall)  # nltk's f_measure, as HELM calls it


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1 when the prediction equals a reference after stripping whitespace; empty scores 0."""
    return _best(_exact, prediction, references)


def quasi_exact_match(prediction: str, references: Sequence[str]) -> float:
    """Exact match after :func:`normalize_text` on both sides."""
    return _best(_quasi_exact, prediction, references)


def prefix_exact_match(prediction: str, references: Sequence[str]) -> float:
    """1 when the stripped prediction starts with a stripped reference."""
    return _best(_prefix_exact, prediction, references)


def quasi_prefix_exact_match(prediction: str, references: Sequence[str]) -> float:
    """Prefix match after :func:`normalize_text` on both sides."""
    return _best(_quasi_prefix_exact, prediction, references)


def f1_score(prediction: str, references: Sequence[str]) -> float:
    """Token-set F1 between normalized texts (sets, so repeated words count once)."""
    return _best(_f1, prediction, references)


def _bleu(weights: tuple[float, ...]) -> Callable[[str, str], float]:
    def score(gold: str, pred: str) -> float:
        from nltk.translate.bleu_score import sentence_bleu

        with warnings.catch_warnings():
            # nltk warns when an n-gram order has no match; the score is then ~0, as in HELM.
            warnings.simplefilter("ignore")
            return float(sentence_bleu([word_tokenize(gold)], word_tokenize(pred), weights))

    return score


_bleu_1 = _bleu((1, 0, 0, 0))
_bleu_4 = _bleu((0, 0, 0, 1))


def bleu_1(prediction: str, references: Sequence[str]) -> float:
    """Sentence BLEU on unigram precision only (nltk weights ``(1, 0, 0, 0)``, no smoothing)."""
    return _best(_bleu_1, prediction, references)


def bleu_4(prediction: str, references: Sequence[str]) -> float:
    """Sentence BLEU on 4-gram precision only (nltk weights ``(0, 0, 0, 1)``, no smoothing).

    This is HELM's ``bleu_4``: not the geometric mean of orders 1-4 that "BLEU-4" often means.
    """
    return _best(_bleu_4, prediction, references)


@lru_cache(maxsize=4)
def _rouge(rouge_type: str) -> Callable[[str, str], float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)

    def score(gold: str, pred: str) -> float:
        return float(scorer.score(gold, pred)[rouge_type].fmeasure)

    return score


def rouge_1(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-1 F-measure with Porter stemming (``rouge-score``)."""
    return _best(_rouge("rouge1"), prediction, references)


def rouge_2(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-2 F-measure with Porter stemming (``rouge-score``)."""
    return _best(_rouge("rouge2"), prediction, references)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L (longest common subsequence) F-measure with Porter stemming."""
    return _best(_rouge("rougeL"), prediction, references)


def chrf(prediction: str, references: Sequence[str]) -> float:
    """Sentence chrF (sacrebleu defaults), best over references, scaled to 0..1."""
    import sacrebleu

    return _best(
        lambda gold, pred: sacrebleu.sentence_chrf(pred, [gold]).score / 100.0,
        prediction,
        references,
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, eq. 1).

    ``1 - C(n - c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` so that
    no binomial coefficient is formed (they overflow floats beyond n of about 1,000).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


# The k of the pass@k figures reported for n samples per prompt: these, up to n, and n itself.
PASS_AT_K = (1, 5, 10, 25, 50, 100)


def pass_at_k_values(n: int) -> list[int]:
    """The k reported for ``n`` samples per prompt (see ``PASS_AT_K``)."""
    return sorted({k for k in PASS_AT_K if k <= n} | {n}) if n >= 1 else []


def _reference_streams(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> list[list[str]]:
    """Transpose per-item reference lists into sacrebleu's per-position streams."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists; "
            "each prediction needs its own list"
        )
    if not predictions:
        raise ValueError("corpus metrics need at least one prediction")
    width = max(len(refs) for refs in references)
    for row, refs in enumerate(references):
        if not refs:
            raise ValueError(f"reference list at row {row} is empty")
    # sacrebleu accepts None for a missing reference in a stream when counts vary per item.
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]  # type: ignore[misc]


def corpus_bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, orders 1-4), scaled to 0..1."""
    import sacrebleu

    streams = _reference_streams(predictions, references)
    return sacrebleu.corpus_bleu(list(predictions), streams).score / 100.0


def corpus_chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF (sacrebleu defaults), scaled to 0..1."""
    import sacrebleu

    streams = _reference_streams(predictions, references)
    return sacrebleu.corpus_chrf(list(predictions), streams).score / 100.0


@dataclass(frozen=True, slots=True)
class MultipleChoiceScores:
    """Scores of one multiple-choice item from its per-choice log-likelihoods.

    ``acc`` picks the choice with the highest raw log-likelihood; the ``acc_norm_*`` variants
    divide each log-likelihood by the choice's length in characters, tokens or bytes first
    (lm-evaluation-harness's normalizations). ``chosen_prob`` is the softmax over choices of
    the raw log-likelihoods, taken at the ``acc`` choice: the confidence used for calibration.
    """

    acc: float
    acc_norm_chars: float
    acc_norm_tokens: float
    acc_norm_bytes: float
    chosen_index: int
    chosen_prob: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def mc_scores(choices: Sequence[ChoiceScore], correct: Sequence[int]) -> MultipleChoiceScores:
    """Score one multiple-choice item; ``correct`` holds the indices of the gold choices.

    Ties go to the lowest index. Raises ``ValueError`` naming the offending choice when a
    length used for normalization is not positive or a log-likelihood is not finite.
    """
    if not choices:
        raise ValueError("mc_scores needs at least one choice")
    gold = set(correct)
    if not gold:
        raise ValueError("mc_scores needs at least one correct choice index")
    bad = sorted(i for i in gold if not 0 <= i < len(choices))
    if bad:
        raise ValueError(f"correct index {bad[0]} is out of range for {len(choices)} choices")
    logprobs = np.array([c.logprob for c in choices], dtype=np.float64)
    for i, choice in enumerate(choices):
        if not math.isfinite(choice.logprob):
            raise ValueError(f"choice {i} ({choice.text!r}) has a non-finite logprob")
        for field in ("n_chars", "n_tokens", "n_bytes"):
            if getattr(choice, field) <= 0:
                raise ValueError(f"choice {i} ({choice.text!r}) has {field} <= 0")

    def picked(lengths: list[int]) -> float:
        return float(int(np.argmax(logprobs / np.array(lengths, dtype=np.float64))) in gold)

    chosen = int(np.argmax(logprobs))
    shifted = np.exp(logprobs - logprobs.max())  # stable softmax
    return MultipleChoiceScores(
        acc=float(chosen in gold),
        acc_norm_chars=picked([c.n_chars for c in choices]),
        acc_norm_tokens=picked([c.n_tokens for c in choices]),
        acc_norm_bytes=picked([c.n_bytes for c in choices]),
        chosen_index=chosen,
        chosen_prob=float(shifted[chosen] / shifted.sum()),
    )


@dataclass(frozen=True, slots=True)
class MultipleChoiceBatch:
    """:class:`MultipleChoiceScores` for many items at once, one array entry per item."""

    acc: np.ndarray
    acc_norm_chars: np.ndarray
    acc_norm_tokens: np.ndarray
    acc_norm_bytes: np.ndarray
    chosen_index: np.ndarray
    chosen_prob: np.ndarray


def mc_scores_batch(
    logprobs: np.ndarray,
    n_chars: np.ndarray,
    n_tokens: np.ndarray,
    n_bytes: np.ndarray,
    gold: np.ndarray,
) -> MultipleChoiceBatch:
    """Vectorized :func:`mc_scores` over ``(items, max_choices)`` arrays.

    Items with fewer choices pad ``logprobs`` with ``-inf`` (and lengths with 1); ``gold`` is a
    boolean mask of the same shape. Same tie rule (lowest index) and same numbers as
    :func:`mc_scores`.
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    mask = np.asarray(gold, dtype=bool)
    if lp.ndim != 2 or mask.shape != lp.shape:
        raise ValueError("logprobs and gold must be 2-D arrays of the same shape")
    real = np.isfinite(lp)
    if not real[:, 0].all():
        raise ValueError(f"item {int(np.argmin(real[:, 0]))} has no finite first choice")
    rows = np.arange(lp.shape[0])

    def picked(lengths: np.ndarray) -> np.ndarray:
        size = np.asarray(lengths, dtype=np.float64)
        if np.any(size[real] <= 0):
            raise ValueError("choice lengths must be positive")
        return mask[rows, np.argmax(np.where(real, lp / np.where(real, size, 1.0), -np.inf), 1)]

    chosen = np.argmax(lp, axis=1)
    top = lp[rows, chosen]
    probs = np.exp(lp - top[:, None])  # exp(-inf) = 0 for padding
    return MultipleChoiceBatch(
        acc=mask[rows, chosen].astype(np.float64),
        acc_norm_chars=picked(n_chars).astype(np.float64),
        acc_norm_tokens=picked(n_tokens).astype(np.float64),
        acc_norm_bytes=picked(n_bytes).astype(np.float64),
        chosen_index=chosen,
        chosen_prob=1.0 / probs.sum(axis=1),
    )
