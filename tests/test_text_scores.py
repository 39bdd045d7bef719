"""The one-pass text metrics against nltk, rouge-score, sacrebleu and HELM's definitions.

Every expected value comes from the reference libraries called here directly (or, for the match
metrics and F1, from HELM's definitions restated below) on seeded generated rows, edge cases
included: empty and whitespace-only texts, punctuation only, unicode, repeated tokens, the
words nltk splits, very long texts, and chunks with more distinct tokens than an int64 n-gram
key can hold.
"""

from __future__ import annotations

import random
import re
import string
import warnings

import numpy as np
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.metrics.scores import f_measure
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.bleu_score import sentence_bleu
from rouge_score import rouge_scorer

from assay.scoring.metrics.text_scores import (
    TEXT_METRICS,
    iter_text_scores,
    score_rows,
    text_scores,
)
from assay.scoring.metrics.tokenize import word_tokenize

_NLTK = NLTKWordTokenizer()
_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def nltk_tokens(text: str) -> list[str]:
    """The tokenization the BLEU metrics promise: the sentence rule, then nltk's tokenizer."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return [token for s in sentences if s.strip() for token in _NLTK.tokenize(s)]


def helm_normalize(text: str) -> str:
    # HELM's normalize_text (helm.benchmark.metrics.evaluate_reference_metrics)
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def reference_pair(gold: str, pred: str) -> dict[str, float]:
    f1 = f_measure(set(helm_normalize(gold).split()), set(helm_normalize(pred).split()))
    gold_tokens, pred_tokens = nltk_tokens(gold), nltk_tokens(pred)
    rouge = _ROUGE.score(gold, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns for orders without a match
        bleu_1 = sentence_bleu([gold_tokens], pred_tokens, (1, 0, 0, 0))
        bleu_4 = sentence_bleu([gold_tokens], pred_tokens, (0, 0, 0, 1))
    return {
        "exact_match": float(bool(pred) and gold.strip() == pred.strip()),
        "quasi_exact_match": float(bool(pred) and helm_normalize(gold) == helm_normalize(pred)),
        "prefix_exact_match": float(bool(pred) and pred.strip().startswith(gold.strip())),
        "quasi_prefix_exact_match": float(
            bool(pred) and helm_normalize(pred).startswith(helm_normalize(gold))
        ),
        "f1_score": 0.0 if f1 is None else float(f1),
        "bleu_1": float(bleu_1),
        "bleu_4": float(bleu_4),
        "rouge_1": rouge["rouge1"].fmeasure,
        "rouge_2": rouge["rouge2"].fmeasure,
        "rouge_l": rouge["rougeL"].fmeasure,
        "chrf": sacrebleu.sentence_chrf(pred, [gold]).score / 100.0,
    }


def reference_row(pred: str, golds: list[str]) -> list[float]:
    pairs = [reference_pair(gold, pred) for gold in golds]
    return [max(p[m] for p in pairs) for m in TEXT_METRICS]


WORDS = [
    *[
        "the",
        "a",
        "an",
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
    ],
    *[
        "Paris",
        "running",
        "happily",
        "connection",
        "generously",
        "studies",
        "studying",
        "42",
        "3.5",
        "1,000",
    ],
    *[
        "e.g.",
        "U.S.",
        "Dr.",
        "cannot",
        "Gonna",
        "wanna",
        "gotta",
        "lemme",
        "gimme",
        "more'n",
        "d'ye",
        "'tis",
        "'Twas",
    ],
    *[
        "it's",
        "don't",
        "I'm",
        "they'll",
        "we're",
        "you've",
        "can't",
        "(yes)",
        "[no]",
        "{x}",
        "<y>",
        '"quoted"',
    ],
    *[
        "``tick''",
        "--",
        "...",
        ";",
        "@",
        "#",
        "$5",
        "50%",
        "&",
        "*",
        "naïve",
        "café",
        "Zürich",
        "東京",
        "Ελληνικά",
        "ſtraße",
        "KELVIN",
    ],
    *["K", "İstanbul", "—", "–", "«", "»", "“", "”", "‘", "’", "„"],
]
GAPS = (" ", " ", " ", " ", ", ", ". ", "? ", "! ", ": ", "\n", "\t", "  ", " . ", ",")


def generated_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.03:
        return rng.choice(["", " ", "\n\t ", ".", "!!!", "?!", "...", ",,", "''", '"', "--"])
    if kind < 0.06:
        return " ".join([rng.choice(WORDS[:6])] * rng.randint(2, 12))  # repeated tokens
    if kind < 0.063:  # very long
        return " ".join(rng.choice(WORDS) + rng.choice(GAPS) for _ in range(rng.randint(200, 400)))
    k = rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 14, 20, 30])
    text = "".join(rng.choice(WORDS) + rng.choice(GAPS) for _ in range(k))
    return text.strip() if rng.random() < 0.6 else text


def generated_rows(n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        golds = [generated_text(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        if rng.random() < 0.1:
            pred = rng.choice(golds)  # exact hits
        elif rng.random() < 0.2:
            pred = golds[0] + " " + generated_text(rng)  # prefix hits
        else:
            pred = generated_text(rng)
        rows.append((pred, golds))
    return rows


def test_generated_rows_match_the_reference_libraries():
    # 3,000 rows in four chunks: the reference libraries score one row at a time, which is
    # what costs here.
    rows = generated_rows(3_000, seed=7)
    texts = {t for pred, golds in rows for t in (pred, *golds)}
    for text in texts:
        assert word_tokenize(text) == nltk_tokens(text), text
    got = np.concatenate(list(iter_text_scores(rows, chunk_rows=750)))
    expected = np.array([reference_row(pred, golds) for pred, golds in rows])
    assert got.shape == (3_000, len(TEXT_METRICS))
    worst = np.abs(got - expected).max(axis=0)
    assert dict(zip(TEXT_METRICS, worst.tolist(), strict=True)) == dict.fromkeys(TEXT_METRICS, 0.0)
    # the rows exercise the metrics, not just zeros
    assert (expected > 0).mean(axis=0).min() > 0.05


def test_chunks_with_more_distinct_tokens_than_an_int64_key_holds():
    rng = random.Random(3)
    # 50,000 distinct words in one chunk: 50,000**4 > 2**62, so 4-gram keys cannot be used;
    # 2,000 distinct characters: 2,000**6 > 2**62 for chrF's 6-grams.
    words = [f"w{i}x" for i in range(50_000)]
    chars = [chr(0x4E00 + i) for i in range(2_000)]
    rows = []
    for start in range(0, 50_000, 50):
        pred = words[start : start + 50]
        gold = pred[:25] + rng.sample(words, 10) + pred[30:]
        rows.append((" ".join(pred), [" ".join(gold)]))
    for start in range(0, 2_000, 40):
        text = "".join(chars[start : start + 40])
        rows.append((text + text[:7], [text[3:] + text[:9], "w1x w2x"]))
    got = score_rows(rows)
    expected = np.array([reference_row(pred, golds) for pred, golds in rows])
    np.testing.assert_array_equal(got, expected)
    assert (expected[:1000, TEXT_METRICS.index("bleu_4")] > 1e-300).all()  # real 4-gram matches
    assert (expected[1000:, TEXT_METRICS.index("chrf")] > 0.1).all()


def test_single_row_scores_and_metric_selection():
    golds = ["a cat sat on a mat", "dogs"]
    expected = reference_row("The cat sat on the mat.", golds)
    assert text_scores("The cat sat on the mat.", golds) == dict(
        zip(TEXT_METRICS, expected, strict=True)
    )
    assert list(text_scores("x", ["x"], ["chrf", "exact_match"])) == ["chrf", "exact_match"]


def test_bad_rows_are_named():
    with pytest.raises(TypeError, match="row 1: references must be a sequence"):
        score_rows([("a", ["a"]), ("b", "b")])
    with pytest.raises(ValueError, match="row 5: at least one gold reference"):
        score_rows([("a", [])], first_row=5)
    with pytest.raises(TypeError, match="row 0: reference None is not a string"):
        score_rows([("a", [None])])  # type: ignore[list-item]
    with pytest.raises(KeyError, match="bleu_9"):
        text_scores("a", ["a"], ["bleu_9"])


def test_streaming_over_two_processes_gives_the_same_rows_in_order():
    rows = generated_rows(600, seed=11)
    one = np.concatenate(list(iter_text_scores(rows, chunk_rows=100)))
    two = np.concatenate(list(iter_text_scores(iter(rows), workers=2, chunk_rows=100)))
    np.testing.assert_array_equal(one, two)
    with pytest.raises(ValueError, match="row 150: at least one gold reference"):
        list(iter_text_scores([*rows[:150], ("x", [])], chunk_rows=100))


_ALPHABET = st.sampled_from(
    [*"abcnotgimewy AZ09 \t\n.,:;?!'\"`()[]{}<>-–—*&%$#@«»“”‘’„", "can", "not", "'t", "na"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_word_tokenize_is_nltks_on_arbitrary_text(text):
    assert word_tokenize(text) == nltk_tokens(text)


def test_texts_that_touch_the_chunk_wide_analysis():
    # Texts are lowercased, normalized and split for ROUGE as one string joined by "\x00": a
    # text holding "\x00" itself, a final sigma next to the joint, a letter whose lowercase
    # grows ("İ"), and the stem cache carried over between chunks must not change a value.
    rows = [
        ("ΟΔΟΣ a\x00b the cat", ["ΟΔΟΣ ab", "the\x00cat"]),
        ("ΟΔΟΣ", ["ΟΔΟΣ", "ΟΔΟς"]),
        ("İstanbul studies", ["istanbul studying", "İSTANBUL"]),
        ("running connection", ["runs connected", "ΑΣ"]),
    ]
    rows += [(gold[0], [pred]) for pred, gold in rows]
    expected = np.array([reference_row(pred, golds) for pred, golds in rows])
    np.testing.assert_array_equal(
        np.concatenate(list(iter_text_scores(rows, chunk_rows=3))), expected
    )
    np.testing.assert_array_equal(score_rows(rows[1:]), expected[1:])


_WORD = st.lists(_ALPHABET.filter(lambda piece: not piece.isspace()), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORD.map("".join), min_size=2, max_size=8).map(" ".join))
def test_word_by_word_tokenization_is_nltks(text):
    # Sentences of words joined by single spaces are tokenized word by word (see tokenize.py),
    # including those ending in closing marks only, which are tokenized whole.
    text = text.replace("\t", "").replace("\n", "") or "x"
    assert word_tokenize(text) == nltk_tokens(text)
    assert word_tokenize(text + ' ."') == nltk_tokens(text + ' ."')
    assert word_tokenize(text + " x.) '") == nltk_tokens(text + " x.) '")
