"""Model-based contamination signals: Min-K% Prob against perturbed copies, and guided vs
general completion, on the real bundled SmolLM2-135M through the request cache."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from rouge_score import rouge_scorer
from scipy.stats import mannwhitneyu, wilcoxon

from assay.contamination.membership import (
    MEMBERSHIP_DETECTORS,
    completion_requests,
    guided_completion,
    membership_text,
    min_k_membership,
    min_k_prob,
    split_halves,
    text_logprobs,
)
from assay.core.digests import seed_from
from assay.core.records import Completion, Instance, Reference, Request, RequestKind
from assay.models.base import ModelSpec, ProgressCallback, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.cache import CachedClient, RequestCache
from assay.models.prompt_logprobs import PromptLogprobs
from assay.models.transformers_backend import TransformersClient

# Texts a language model has surely read many times: public-domain openings.
FAMOUS = [
    "We hold these truths to be self-evident, that all men are created equal, that they "
    "are endowed by their Creator with certain unalienable Rights",
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune",
    "Four score and seven years ago our fathers brought forth on this continent, a new "
    "nation, conceived in Liberty",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness",
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void",
    "It is a truth universally acknowledged, that a single man in possession of a good "
    "fortune, must be in want of a wife.",
]
WORDS = [
    *("apple", "river", "seven", "window", "banana", "marble", "cloud", "orange", "ticket"),
    *("purple", "engine", "garden", "silver", "hammer", "ocean", "pencil", "lantern"),
    *("meadow", "violin", "thunder", "basket", "copper", "mirror", "quietly", "under"),
]


def random_sentence(index: int, length: int) -> str:
    """A sentence of ``length`` random words, drawn with a seed from its index."""
    rng = random.Random(seed_from("random-sentence", index))
    return " ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + "."


def as_instances(prefix: str, texts: Sequence[str]) -> list[Instance]:
    return [Instance(id=f"{prefix}-{n}", input=t, references=()) for n, t in enumerate(texts)]


SEEN = as_instances("seen", FAMOUS)
UNSEEN = as_instances("unseen", [random_sentence(n, len(t.split())) for n, t in enumerate(FAMOUS)])


@dataclass
class PieceCounter:
    """The real model behind ``complete`` only (as an HTTP endpoint is), counting requests."""

    inner: TransformersClient
    requests: int = 0

    @property
    def artifact_digest(self) -> str:
        return self.inner.artifact_digest

    @property
    def backend_identity(self) -> dict[str, str]:
        return self.inner.backend_identity

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        self.requests += len(requests)
        return self.inner.complete(requests, progress)


@dataclass
class TokenCounter(PieceCounter):
    """The real model with its exact text scoring too, counting texts scored."""

    texts: int = 0

    def score_prompts(self, texts: Sequence[str]) -> list[PromptLogprobs]:
        self.texts += len(texts)
        return self.inner.score_prompts(texts)

    @property
    def calls(self) -> int:
        return self.requests + self.texts


@pytest.fixture(scope="module")
def model(model_cache_dir: Path) -> TransformersClient:
    serving = ServingConfig(batch_size=32)
    return TransformersClient(
        ModelSpec("smollm2-135m-instruct@v1", BUNDLED_SOURCE, serving), model_cache_dir
    )


def _cached(model: TransformersClient, counter: PieceCounter, folder: Path) -> CachedClient:
    cache = RequestCache(f"sqlite:///{folder / 'requests.db'}")
    return CachedClient(counter, cache, model.spec.serving)


@pytest.fixture(scope="module")
def cached(
    model: TransformersClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CachedClient, TokenCounter]:
    counter = TokenCounter(model)
    return _cached(model, counter, tmp_path_factory.mktemp("tokens")), counter


@pytest.fixture(scope="module")
def by_pieces(
    model: TransformersClient, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CachedClient, PieceCounter]:
    counter = PieceCounter(model)
    return _cached(model, counter, tmp_path_factory.mktemp("pieces")), counter


@pytest.fixture(scope="module")
def planted(cached: tuple[CachedClient, TokenCounter]) -> dict[str, tuple[list, dict]]:
    client, _ = cached
    return {
        "seen": min_k_membership(client, SEEN),
        "unseen": min_k_membership(client, UNSEEN),
    }


# ------------------------------------------------------------------ min_k_prob by hand


def test_min_k_prob_is_the_mean_of_the_lowest_fifth() -> None:
    values = [-0.5, -3.0, -1.0, -0.2, -7.0, -0.9, -2.0, -0.1, -0.4, -1.5]
    assert min_k_prob(values, 0.2) == pytest.approx((-7.0 + -3.0) / 2)  # 2 = 20% of 10
    assert min_k_prob(values) == pytest.approx(-5.0)  # k defaults to 20%
    assert min_k_prob(values, 1.0) == pytest.approx(sum(values) / 10)
    # 0.3 * 10 is 3.0000000000000004 in floating point: still the three lowest.
    assert min_k_prob(values, 0.3) == pytest.approx((-7.0 - 3.0 - 2.0) / 3)


def test_min_k_prob_rounds_k_times_n_down_but_keeps_one() -> None:
    # floor(0.2 * 14) = 2; floor(0.2 * 4) = 0, raised to one value (the minimum).
    values = [-float(v) for v in range(1, 15)]
    assert min_k_prob(values, 0.2) == pytest.approx((-14 - 13) / 2)
    assert min_k_prob([-1.0, -4.0, -2.0, -3.0], 0.2) == pytest.approx(-4.0)
    assert min_k_prob([-2.5], 0.2) == pytest.approx(-2.5)


@pytest.mark.parametrize("k", [0.0, -0.1, 1.01, 2, float("nan")])
def test_min_k_prob_refuses_k_outside_zero_one(k: float) -> None:
    with pytest.raises(ValueError, match="k must be in"):
        min_k_prob([-1.0, -2.0], k)


def test_min_k_prob_refuses_empty_and_non_finite_values() -> None:
    with pytest.raises(ValueError, match="at least one"):
        min_k_prob([], 0.2)
    with pytest.raises(ValueError, match="log-probability 1 is nan"):
        min_k_prob([-1.0, float("nan")], 0.2)


def test_membership_text_is_input_then_first_gold() -> None:
    instance = Instance(
        "q1", " What is 2 + 2? ", (Reference("3"), Reference(" 4 ", True), Reference("4.0", True))
    )
    assert membership_text(instance) == "What is 2 + 2?\n4"
    assert membership_text(instance, "What is two plus two?") == "What is two plus two?\n4"
    with pytest.raises(ValueError, match="instance 'empty': empty text"):
        membership_text(Instance("empty", "  ", (Reference("x", False),)))


def test_split_halves_cuts_between_words() -> None:
    assert split_halves("one two three four five") == ("one two", "three four five")
    assert split_halves("alone") is None


def test_bad_input_is_refused_naming_the_instance(
    cached: tuple[CachedClient, TokenCounter],
) -> None:
    client, counter = cached
    before = counter.calls
    with pytest.raises(ValueError, match="instance 'empty': empty text"):
        min_k_membership(client, [*SEEN[:1], Instance("empty", "", ())])
    with pytest.raises(ValueError, match="k must be in"):
        min_k_membership(client, SEEN[:1], k=0.0)
    with pytest.raises(ValueError, match="unknown instance id 'ghost'"):
        min_k_membership(client, SEEN[:1], {"ghost": ["a b c"]})
    with pytest.raises(ValueError, match="'seen-0' appears twice"):
        min_k_membership(client, [SEEN[0], SEEN[0]])
    with pytest.raises(ValueError, match="no instances"):
        min_k_membership(client, [])
    with pytest.raises(ValueError, match="non-empty dataset_name"):
        guided_completion(client, SEEN[:1], dataset_name=" ", split="test")
    with pytest.raises(ValueError, match=r"text 0 .* at least two words"):
        text_logprobs(client, ["alone"])
    assert counter.calls == before  # refused before any model call


# ------------------------------------------------------------------ the real model


def test_token_log_probs_follow_the_chain_rule(
    cached: tuple[CachedClient, TokenCounter],
) -> None:
    # Chain rule: the per-token values after the first token ("Four"; SmolLM2 adds no BOS, so
    # nothing precedes it) sum to log P(rest | "Four"), computed in one request.
    client, _ = cached
    text = FAMOUS[2]
    [values] = text_logprobs(client, [text])
    first, rest = text.split(" ", 1)
    request = Request("chain", RequestKind.LOGLIKELIHOOD, first, continuations=(" " + rest,))
    [whole] = client.complete([request])
    assert len(values) == whole.choices[0].n_tokens
    assert sum(values) == pytest.approx(whole.choices[0].logprob, rel=1e-3, abs=1e-2)


def test_word_piece_log_probs_follow_the_chain_rule(
    by_pieces: tuple[CachedClient, PieceCounter],
) -> None:
    # A client without exact text scoring: one request per piece; the pieces after the first
    # sum to log P(rest | first word), computed here in one request.
    client, counter = by_pieces
    text = FAMOUS[2]
    before = counter.requests
    [values] = text_logprobs(client, [text])
    assert counter.requests - before == len(text.split()) - 1
    first, rest = text.split(" ", 1)
    request = Request("chain", RequestKind.LOGLIKELIHOOD, first, continuations=(" " + rest,))
    [whole] = client.complete([request])
    assert len(values) == len(text.split()) - 1
    assert sum(values) == pytest.approx(whole.choices[0].logprob, rel=1e-3, abs=1e-2)


def test_planted_membership_seen_texts_prefer_their_wording(
    planted: dict[str, tuple[list, dict]],
) -> None:
    seen_findings, seen = planted["seen"]
    unseen_findings, unseen = planted["unseen"]
    seen_d = [f.score for f in seen_findings]
    unseen_d = [f.score for f in unseen_findings]
    assert all(math.isfinite(d) for d in seen_d + unseen_d)  # fillers change every text
    assert {f.detector for f in seen_findings} == {MEMBERSHIP_DETECTORS[0]}
    # The famous texts lose more to a rewrite than random words do, on the whole and as
    # samples (one-sided Mann-Whitney over six against six)...
    assert seen["mean_diff"] > unseen["mean_diff"] + 1.0
    assert mannwhitneyu(seen_d, unseen_d, alternative="greater").pvalue < 0.05
    # ...and the scenario-level test tells the famous scenario from the random one.
    assert seen["significant"] and seen["p_value"] < 0.05
    assert not unseen["significant"]
    # The figures are those of the per-instance differences (scipy, numpy directly).
    for findings, figures in (planted["seen"], planted["unseen"]):
        d = np.array([f.score for f in findings])
        assert figures["n"] == 6 and figures["n_unpaired"] == 0
        assert figures["mean_diff"] == pytest.approx(d.mean())
        assert figures["p_value"] == pytest.approx(wilcoxon(d, alternative="greater").pvalue)
        assert figures["ci_low"] <= figures["mean_diff"] <= figures["ci_high"]
        assert figures["test"] == "wilcoxon_signed_rank" and figures["k"] == 0.2


def test_per_instance_flags_follow_the_stated_rule(planted: dict[str, tuple[list, dict]]) -> None:
    for findings, figures in planted.values():
        d = np.array([f.score for f in findings])
        median = np.median(d)
        threshold = median + 3 * 1.4826 * np.median(np.abs(d - median))
        assert figures["flag_threshold"] == pytest.approx(threshold)
        assert [f.flagged for f in findings] == [bool(x > 0 and x > threshold) for x in d]
        assert all("difference" in f.evidence and f.label == "" for f in findings)


def test_a_rerun_is_answered_from_the_cache(
    planted: dict[str, tuple[list, dict]], cached: tuple[CachedClient, TokenCounter]
) -> None:
    client, counter = cached
    before = counter.calls
    again, figures = min_k_membership(client, SEEN)
    assert counter.calls == before
    assert again == planted["seen"][0] and figures == planted["seen"][1]
    assert figures["unit"] == "token"


def test_the_word_piece_path_is_cached_too(by_pieces: tuple[CachedClient, PieceCounter]) -> None:
    client, counter = by_pieces
    instances = [SEEN[3], UNSEEN[3]]
    findings, figures = min_k_membership(client, instances)
    assert figures["unit"] == "word piece" and figures["n"] == 2
    assert all(math.isfinite(f.score) for f in findings)
    assert math.isnan(figures["flag_threshold"])  # two instances: too few to flag any
    before = counter.requests
    again, again_figures = min_k_membership(client, instances)
    assert counter.requests == before
    assert again == findings
    assert again_figures.keys() == figures.keys()
    assert all(again_figures[k] == v for k, v in figures.items() if k != "flag_threshold")


def test_unchanged_rewrites_leave_an_instance_untested(
    cached: tuple[CachedClient, TokenCounter],
) -> None:
    client, _ = cached
    findings, figures = min_k_membership(
        client, SEEN[:2], {"seen-0": [SEEN[0].input], "seen-1": [FAMOUS[1].lower()]}
    )
    assert math.isnan(findings[0].score) and not findings[0].flagged
    assert "not tested" in findings[0].evidence
    assert math.isfinite(findings[1].score)
    assert figures["n"] == 1 and figures["n_unpaired"] == 1


def test_guided_and_general_completion_run_end_to_end(
    cached: tuple[CachedClient, TokenCounter],
) -> None:
    client, counter = cached
    instances = [SEEN[1], UNSEEN[1], Instance("one-word", "Hello", ())]
    before = counter.calls
    findings, figures = guided_completion(client, instances, dataset_name="famous", split="test")
    assert counter.calls - before == 4  # a guided and a general generation per split text
    assert [f.detector for f in findings] == ["guided_completion"] * 3
    # ROUGE-L recomputed with rouge-score itself on the cached completions (no model call).
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for f, instance in zip(findings[:2], instances[:2], strict=True):
        first, second = split_halves(membership_text(instance))
        requests = completion_requests(instance, first, second, dataset_name="famous", split="test")
        guided, general = (
            scorer.score(second, c.text.strip())["rougeL"].fmeasure
            for c in client.complete(list(requests))
        )
        assert f.score == pytest.approx(guided - general)
        assert f.flagged == (guided >= 0.75 and f.score > 0)
    assert math.isnan(findings[2].score) and "not tested" in findings[2].evidence
    assert figures["n"] == 2 and figures["n_unpaired"] == 1
    assert math.isfinite(figures["mean_rouge_l_guided"])
    assert math.isfinite(figures["mean_rouge_l_general"])
    assert math.isfinite(figures["p_value"]) and 0.0 < figures["p_value"] <= 1.0
    assert figures["mean_diff"] == pytest.approx(
        figures["mean_rouge_l_guided"] - figures["mean_rouge_l_general"]
    )
    again, again_figures = guided_completion(client, instances, dataset_name="famous", split="test")
    assert counter.calls - before == 4  # the rerun made no model call
    assert again[:2] == findings[:2] and again_figures == figures
