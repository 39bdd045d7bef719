"""Accuracy metrics against hand computations and sacrebleu."""

import math

import numpy as np
import pytest
import sacrebleu
from hypothesis import given
from hypothesis import strategies as st

from assay.core.records import ChoiceScore
from assay.scoring.metrics.accuracy import (
    bleu_1,
    bleu_4,
    chrf,
    corpus_bleu,
    corpus_chrf,
    exact_match,
    f1_score,
    mc_scores,
    mc_scores_batch,
    normalize_text,
    prefix_exact_match,
    quasi_exact_match,
    quasi_prefix_exact_match,
    rouge_1,
    rouge_2,
    rouge_l,
)


def test_normalize_text_drops_case_punctuation_articles_and_spaces():
    assert normalize_text("  The Cat,   sat on A mat! ") == "cat sat on mat"
    assert normalize_text("The cat", remove_articles=False) == "the cat"


def test_exact_matches_and_their_normalized_variants():
    assert exact_match(" Paris ", ["London", "Paris"]) == 1.0
    assert exact_match("paris", ["Paris"]) == 0.0
    assert quasi_exact_match("The Paris.", ["paris"]) == 1.0
    assert prefix_exact_match("Yes, Elmendorf", ["Yes"]) == 1.0
    assert prefix_exact_match("yes, Elmendorf", ["Yes"]) == 0.0
    assert quasi_prefix_exact_match("yes, Elmendorf", ["Yes"]) == 1.0
    # An empty prediction never matches, even an empty reference.
    assert exact_match("", [""]) == 0.0
    assert quasi_prefix_exact_match("", [""]) == 0.0


def test_f1_is_token_set_f1_on_normalized_text():
    # pred tokens {cat, sat, on, mat}; gold {cat, on, hat}; common 2:
    # P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    assert f1_score("The cat sat on the mat", ["a cat on a hat"]) == pytest.approx(4 / 7)
    # Sets: the repeated "cat" counts once, so this is a perfect match.
    assert f1_score("cat cat", ["cat"]) == pytest.approx(1.0)
    assert f1_score("the", ["cat"]) == 0.0  # empty after normalization
    assert f1_score("dog", ["cat", "dog house"]) == pytest.approx(2 / 3)  # best reference


def test_bleu_1_is_clipped_unigram_precision_times_brevity_penalty():
    # 3 of 3 unigrams match; candidate 3 vs reference 6 tokens: BP = exp(1 - 6/3).
    assert bleu_1("the cat sat", ["the cat sat on the mat"]) == pytest.approx(math.exp(-1))
    # "the" clipped to its reference count 1: p1 = 1/4; longer than reference so BP = 1.
    assert bleu_1("the the the the", ["the cat"]) == pytest.approx(0.25)


def test_bleu_4_is_four_gram_precision_only():
    # 4-grams of the candidate: (a b c d), (b c d e); one is in the reference.
    assert bleu_4("a b c d e", ["a b c d f"]) == pytest.approx(0.5)
    assert bleu_4("a b c d e", ["x y", "a b c d e"]) == pytest.approx(1.0)


def test_rouge_scores_by_hand():
    # Stemmed tokens: {the, cat, ran} vs {the, cat, run}: P = R = 2/3.
    assert rouge_1("the cats ran", ["the cat runs"]) == pytest.approx(2 / 3)
    # Bigrams: 2 of 3 shared each way.
    assert rouge_2("the cat sat down", ["the cat sat up"]) == pytest.approx(2 / 3)
    # LCS of (cat dog bird fish) and (cat bird dog fish) has length 3 of 4.
    assert rouge_l("cat dog bird fish", ["cat bird dog fish"]) == pytest.approx(0.75)


def test_corpus_bleu_by_hand():
    # p1..p4 = 5/6, 4/5, 3/4, 2/3, equal lengths: BLEU = (1/3) ** (1/4).
    assert corpus_bleu(["a b c d e f"], [["a b c d e g"]]) == pytest.approx((1 / 3) ** 0.25)
    # Items with different numbers of references.
    assert corpus_bleu(["x y z w", "p q r s"], [["x y z w"], ["n", "p q r s"]]) == pytest.approx(
        1.0
    )


def test_chrf_takes_the_best_reference_on_a_0_1_scale():
    expected = sacrebleu.sentence_chrf("the cat sat", ["the cat sat down"]).score / 100
    assert chrf("the cat sat", ["a dog", "the cat sat down"]) == pytest.approx(expected)
    assert corpus_chrf(["the cat"], [["the cat"]]) == pytest.approx(1.0)


def test_bad_reference_arguments_are_named():
    with pytest.raises(ValueError, match="at least one gold reference"):
        exact_match("x", [])
    with pytest.raises(TypeError, match="single string"):
        exact_match("x", "x")
    with pytest.raises(ValueError, match="row 1"):
        corpus_bleu(["a", "b"], [["a"], []])


def _choice(text, logprob, n):
    return ChoiceScore(text=text, logprob=logprob, n_tokens=n, n_chars=2 * n, n_bytes=2 * n)


def test_mc_scores_by_hand():
    choices = [_choice("no", -2.0, 1), _choice("a long answer", -3.0, 5)]
    scores = mc_scores(choices, correct=[1])
    assert scores.acc == 0.0  # raw: -2 > -3 picks choice 0
    # Per length: -2/2 = -1 vs -3/10 = -0.3 (chars) and -2/1 vs -3/5 (tokens) pick choice 1.
    assert scores.acc_norm_chars == 1.0
    assert scores.acc_norm_tokens == 1.0
    assert scores.acc_norm_bytes == 1.0
    assert scores.chosen_index == 0
    # softmax at choice 0: e^-2 / (e^-2 + e^-3) = 1 / (1 + e^-1).
    assert scores.chosen_prob == pytest.approx(1 / (1 + math.exp(-1)))
    assert scores.as_dict()["acc"] == 0.0


def test_mc_scores_rejects_bad_choices():
    with pytest.raises(ValueError, match=r"choice 1 .* n_chars"):
        mc_scores([_choice("a", -1.0, 1), ChoiceScore("b", -1.0, 1, 0, 1)], [0])
    with pytest.raises(ValueError, match="out of range"):
        mc_scores([_choice("a", -1.0, 1)], [3])


texts = st.text(alphabet="abc XYZ.,!", max_size=30)


@given(texts, st.lists(texts, min_size=1, max_size=3))
def test_generation_scores_stay_in_unit_interval(pred, refs):
    for metric in (exact_match, quasi_exact_match, f1_score, bleu_1, rouge_1, rouge_l):
        assert 0.0 <= metric(pred, refs) <= 1.0
    assert f1_score(pred, refs) == f1_score(pred, list(reversed(refs)))


@given(st.lists(st.floats(-50, 0), min_size=2, max_size=6))
def test_chosen_prob_is_the_largest_softmax_probability(logprobs):
    choices = [_choice(str(i), lp, 1) for i, lp in enumerate(logprobs)]
    scores = mc_scores(choices, [0])
    assert 1 / len(logprobs) - 1e-9 <= scores.chosen_prob <= 1.0


def test_mc_scores_batch_agrees_with_per_item_scores():
    rng = np.random.default_rng(5)
    items, width = 40, 4
    logprobs = rng.normal(-5, 2, size=(items, width))
    logprobs[::3, 3] = -np.inf  # every third item has three choices
    n_tok = rng.integers(1, 6, size=(items, width))
    gold = np.zeros((items, width), dtype=bool)
    gold[np.arange(items), rng.integers(0, 3, size=items)] = True
    batch = mc_scores_batch(logprobs, 3 * n_tok, n_tok, 3 * n_tok + 1, gold)
    for i in range(items):
        k = width - 1 if i % 3 == 0 else width
        choices = [
            ChoiceScore(
                str(j),
                logprobs[i, j],
                int(n_tok[i, j]),
                int(3 * n_tok[i, j]),
                int(3 * n_tok[i, j] + 1),
            )
            for j in range(k)
        ]
        one = mc_scores(choices, list(np.flatnonzero(gold[i])))
        assert batch.acc[i] == one.acc
        assert batch.acc_norm_chars[i] == one.acc_norm_chars
        assert batch.acc_norm_tokens[i] == one.acc_norm_tokens
        assert batch.acc_norm_bytes[i] == one.acc_norm_bytes
        assert batch.chosen_prob[i] == pytest.approx(one.chosen_prob)
