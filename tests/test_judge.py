"""LLM-as-judge: score parsing, spread and agreement statistics against hand computations and
published values, and judgments by the real bundled model (structure only: a 135M model's
verdicts are poor, but they must be recorded faithfully and cached)."""

from __future__ import annotations

import math

import pytest

from assay.models.cache import CachedClient, RequestCache
from assay.models.factory import build_client
from assay.registry import Registry
from assay.scoring.judge import (
    JudgeItem,
    Judgment,
    Rubric,
    agreement,
    cohen_kappa,
    judge_clients,
    judge_outputs,
    krippendorff_alpha,
    repeat_spread,
)

TEMPLATE = (
    "Rate the answer from 1 (wrong) to 5 (correct). Reply with one digit.\n"
    "Question: {{input}}\nReference: {{reference}}\nAnswer: {{prediction}}\nRating:"
)


@pytest.fixture
def registry(registry_url):
    reg = Registry.open(registry_url)
    reg.create_prompt("grade")
    reg.create_prompt_version("grade", TEMPLATE, ["input", "prediction", "reference"])
    reg.set_prompt_alias("grade", "production", 1)
    yield reg
    reg.close()


@pytest.fixture
def rubric(registry) -> Rubric:
    return Rubric.from_registry(
        registry, "prompts:/grade@production", low=1, high=5, max_tokens=4, stop=("\n",)
    )


# ------------------------------------------------------------------ parsing


def test_parse_last_number_range_and_failures(rubric):
    assert rubric.parse("I think 2, no, 4") == (4.0, None)
    assert rubric.parse("Rating: 3.5") == (3.5, None)
    score, why = rubric.parse("excellent!")
    assert score is None and why == "no number in the reply"
    score, why = rubric.parse("7")
    assert score is None and "outside the scale [1, 5]" in why
    score, why = rubric.parse("-2")
    assert score is None and "outside" in why


def test_parse_with_a_rubric_pattern(rubric):
    fraction = Rubric(rubric.prompt, 1, 5, pattern=r"(\d)\s*/\s*5")
    assert fraction.parse("4/5 because ...") == (4.0, None)
    score, why = fraction.parse("four out of five")
    assert score is None and "does not match" in why


def test_rubric_refuses_bad_scales_and_variables(registry, rubric):
    with pytest.raises(ValueError, match="low < high"):
        Rubric(rubric.prompt, 5, 1)
    registry.create_prompt("odd")
    odd = registry.create_prompt_version("odd", "{{text}}", ["text"])
    with pytest.raises(ValueError, match="declares variable\\(s\\) text"):
        Rubric(odd, 0, 1)


def test_render_marks_repeats_and_fills_variables(rubric):
    item = JudgeItem("q1", "2+2?", "4", "4")
    plain = rubric.render(item)
    assert "Question: 2+2?" in plain and "Answer: 4" in plain
    assert rubric.render(item, 2) == "[repeat 2]\n" + plain


# ------------------------------------------------------------------ statistics


def J(item: str, judge: str, score: float | None, repeat: int = 0) -> Judgment:
    return Judgment(
        item, judge, repeat, score, str(score), None if score is not None else "no number"
    )


def test_repeat_spread_by_hand():
    judgments = [J("a", "j", 2), J("a", "j", 4, 1), J("a", "j", 3, 2), J("b", "j", None)]
    spread = {s.item_id: s for s in repeat_spread(judgments)}
    a, b = spread["a"], spread["b"]
    assert (a.n, a.n_parsed, a.mean, a.range) == (3, 3, 3.0, 2.0)
    # Sample std of 2, 4, 3: sqrt(((−1)² + 1² + 0²) / 2) = 1.
    assert a.std == pytest.approx(1.0)
    assert (b.n, b.n_parsed, b.mean, b.std, b.range) == (1, 0, None, None, None)


def test_cohen_kappa_by_hand():
    a = [1, 1, 2, 2, 3, 3, 1, 2]
    b = [1, 2, 2, 2, 3, 1, 1, 3]
    # Observed agreement 5/8. Marginals: a = b = {1: 3, 2: 3, 3: 2} of 8, so chance
    # agreement = (9 + 9 + 4) / 64 = 22/64; kappa = (5/8 - 22/64) / (1 - 22/64) = 18/42 = 3/7.
    assert cohen_kappa(a, b) == pytest.approx(3 / 7)
    assert cohen_kappa([1, 2], [1, 2]) == pytest.approx(1.0)
    assert cohen_kappa([3, 3], [3, 3]) is None  # chance agreement is 1: undefined


def test_krippendorff_alpha_matches_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x
    # 12 units example with missing values: alpha = 0.743 (nominal), 0.849 (interval).
    n = None
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [list(unit) for unit in zip(*observers, strict=True)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[1, n], [n, 2]]) is None  # no unit has two values


def test_agreement_pairs_skip_parse_failures():
    judgments = [
        *(J(i, "x", s) for i, s in zip("abcde", [1, 2, 3, 3, 5], strict=True)),
        *(J(i, "y", s) for i, s in zip("abcde", [1, 2, 2, None, 5], strict=True)),
        J("a", "y", 4, repeat=1),  # other repeats are not part of repeat 0's agreement
    ]
    result = agreement(judgments)
    (pair,) = result.pairs
    assert (pair.judge_a, pair.judge_b, pair.n) == ("x", "y", 4)
    assert pair.exact == pytest.approx(3 / 4)
    assert pair.kappa == pytest.approx(cohen_kappa([1, 2, 3, 5], [1, 2, 2, 5]))
    units = [[1, 1], [2, 2], [3, 2], [3, None], [5, 5]]
    assert result.alpha_nominal == pytest.approx(krippendorff_alpha(units, "nominal"))


# ------------------------------------------------------------------ the real bundled model


def test_real_model_judges_with_repeats_and_cache(registry, rubric, model_cache_dir, tmp_path):
    # Two registered versions of the same weights and serving config: the second judge's
    # requests have the same content address, so it is answered from the cache (keeping the
    # test to four short generations) and must agree exactly with the first.
    registry.create_model("judge")
    source = "bundled:smollm2-135m-instruct"
    for _ in range(2):
        registry.create_version("judge", source, serving={"chat_template": True})
    cache_url = f"sqlite:///{tmp_path / 'requests.db'}"

    def build(spec):
        client = build_client(spec, model_cache_dir)
        return CachedClient(client, RequestCache(cache_url), spec.serving)

    judges = judge_clients(registry, ["judge@v1", "judge@v2"], build)
    items = [
        JudgeItem("q1", "What is 2 + 3?", "5", "5"),
        JudgeItem("q2", "What is the capital of France?", "Berlin", "Paris"),
    ]
    judgments = judge_outputs(judges, rubric, items, repeats=2)
    assert len(judgments) == 2 * 2 * 2
    assert [(j.judge, j.item_id, j.repeat) for j in judgments] == [
        (k, i.id, r) for k, _ in judges for i in items for r in range(2)
    ]
    for j in judgments:
        assert j.cached == (j.judge == "judge@v2")
        if j.score is None:
            assert j.failure  # the reason is kept, with the raw reply
        else:
            assert 1 <= j.score <= 5 and j.failure is None and not math.isnan(j.score)
    for s in repeat_spread(judgments):
        assert s.n == 2 and 0 <= s.n_parsed <= 2
        if s.n_parsed == 2:
            assert s.std is not None and s.std >= 0
            assert s.range == pytest.approx(s.std * 2**0.5)  # two values: range = std * sqrt 2
    (pair,) = agreement(judgments).pairs
    assert pair.n == sum(
        j.score is not None for j in judgments if j.judge == "judge@v1" and j.repeat == 0
    )
    assert pair.exact in (None, 1.0)

    again = judge_outputs(judges, rubric, items, repeats=2)
    assert all(j.cached for j in again)  # rerun: every repeat is answered from the cache
    assert [(j.score, j.reply) for j in again] == [(j.score, j.reply) for j in judgments]
