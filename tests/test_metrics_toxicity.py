"""Toxicity: aggregates by hand, judge parsing, a classifier plumbing test, and the packaged
classifier (alt-profanity-check) on real texts."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from assay.evaluate.suite import ToxicityConfig
from assay.scoring.judge import toxicity_scorer
from assay.scoring.metrics.absent import Absent
from assay.scoring.metrics.toxicity import (
    ClassifierToxicityScorer,
    JudgeToxicityScorer,
    ProfanityCheckScorer,
    ToxicityScorer,
    packaged_classifier,
    parse_judge_score,
    toxicity_stats,
)


def test_toxicity_aggregates_by_hand():
    per_prompt = [[0.1, 0.7], [0.2, 0.3], [0.9, None], [None]]
    stats = toxicity_stats(per_prompt)
    # HELM's toxic_frac is per prompt, then averaged: 1/2, 0/2, 1/1 (the None is unrated).
    assert stats.toxic_fraction == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    # Prompt maxima 0.7, 0.3, 0.9 (the all-None prompt is dropped).
    assert stats.expected_max_toxicity == pytest.approx((0.7 + 0.3 + 0.9) / 3)
    assert stats.toxicity_probability == pytest.approx(2 / 3)
    assert (stats.scored, stats.unscored) == (5, 2)


def test_toxicity_without_scores_is_absent():
    stats = toxicity_stats([[None], [None, None]])
    assert isinstance(stats.expected_max_toxicity, Absent)
    assert stats.unscored == 3


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("0.7", 0.7),
        ("Toxicity: .25 (mild)", 0.25),
        ("1", 1.0),
        ("I'd say 0", 0.0),
        ("70%", None),
        ("8/10", None),
        ("no idea", None),
        ("1.5", None),
    ],
)
def test_parse_judge_score(reply, expected):
    assert parse_judge_score(reply) == expected


def test_judge_scorer_records_parse_failures_as_none():
    seen = []

    def complete(prompts):
        seen.extend(prompts)
        return ["0.9", "not sure"]

    judge = JudgeToxicityScorer(complete, rubric="Rate: {text}")
    assert isinstance(judge, ToxicityScorer)
    assert judge.score(["you idiot", "hello"]) == [0.9, None]
    assert seen == ["Rate: you idiot", "Rate: hello"]
    assert judge.failures == 1
    with pytest.raises(ValueError, match=r"\{text\}"):
        JudgeToxicityScorer(complete, rubric="no field")


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A randomly initialized two-label BERT saved to disk: no weights are downloaded."""
    path = tmp_path_factory.mktemp("tox")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "nice", "bad", "!"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        id2label={0: "non-toxic", 1: "toxic"},
        label2id={"non-toxic": 0, "toxic": 1},
    )
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def test_classifier_scorer_plumbing(tiny_classifier):
    """Plumbing only: a random model's scores mean nothing, but they must be its softmax."""
    texts = ["you are nice", "you are bad !", "nice"]
    scorer = ClassifierToxicityScorer(tiny_classifier, batch_size=2)
    scores = scorer.score(texts)
    assert isinstance(scorer, ToxicityScorer)
    assert scorer.name == f"classifier:{tiny_classifier.name}"

    tokenizer = BertTokenizerFast.from_pretrained(tiny_classifier)
    model = BertForSequenceClassification.from_pretrained(tiny_classifier).eval()
    with torch.no_grad():
        for text, score in zip(texts, scores, strict=True):
            logits = model(**tokenizer([text], return_tensors="pt")).logits[0].numpy()
            expected = np.exp(logits[1]) / np.exp(logits).sum()  # "toxic" is label 1
            assert score == pytest.approx(float(expected), abs=1e-5)


def test_classifier_scorer_errors(tiny_classifier, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClassifierToxicityScorer(tmp_path / "missing")
    with pytest.raises(ValueError, match="'hateful' is not a label"):
        ClassifierToxicityScorer(tiny_classifier, toxic_label="hateful").score(["x"])


def test_packaged_classifier_rates_insults_above_plain_sentences():
    """The model shipped in alt-profanity-check, loaded from the installed wheel."""
    scorer = packaged_classifier("alt-profanity-check")
    assert isinstance(scorer, ProfanityCheckScorer) and isinstance(scorer, ToxicityScorer)
    assert scorer.name == f"classifier:alt-profanity-check@{scorer.version}"
    plain = ["The nurse checked on her patients before lunch.", "He fixed the old car."]
    insults = ["Shut up, you stupid idiot.", "Go to hell, you worthless scum."]
    scores = scorer.score(plain + insults)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert max(scores[:2]) < 0.5 <= min(scores[2:])
    # The same text scores the same alone and in a batch: one text's score does not depend on
    # the others (bag of words, no padding).
    assert scorer.score(insults[:1]) == pytest.approx(scores[2:3])
    assert scorer.score([]) == []


def test_unknown_packaged_classifier_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown toxicity classifier 'detoxify'; known: alt-"):
        packaged_classifier("detoxify")


def test_suite_names_the_packaged_classifier():
    def no_registry():
        raise AssertionError("a packaged classifier needs no registry")

    config = ToxicityConfig(classifier="alt-profanity-check")
    scorer = toxicity_scorer(config, no_registry, build=lambda spec: None)
    assert isinstance(scorer, ProfanityCheckScorer)
    with pytest.raises(ValueError, match="unknown toxicity classifier 'perspective'"):
        toxicity_scorer(ToxicityConfig(classifier="perspective"), no_registry, lambda s: None)
