"""LLM-as-judge in scoring: suite settings, per-instance judge scores, repeat spread, parse
failures and agreement rows, checked against hand computations.

The judges here are scripted clients (a reply per item and repeat): the aggregation needs
replies chosen by hand, which no real model gives on demand. The real bundled model judges
in ``test_judge_pipeline.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from assay.adapters import AdapterSpec, Method, build_requests
from assay.core.records import Completion, Instance, ModelOutput, Reference, Request
from assay.evaluate.suite import parse_suite
from assay.registry import Registry
from assay.scoring.judge import Rubric
from assay.scoring.judge_scores import JUDGE_FAMILY, judge_items, judge_partition
from assay.scoring.scorecard import score_partition

GEN = AdapterSpec(method=Method.GENERATION, max_tokens=8)
TEMPLATE = "Q: {{input}}\nGold: {{reference}}\nAnswer: {{prediction}}\nScore 1-5:"


class ScriptedJudge:
    """Replies ``replies[(instance id, repeat)]``; counts the requests it was sent."""

    def __init__(self, replies: dict[tuple[str, int], str]) -> None:
        self.replies = replies
        self.sent: list[Request] = []

    @property
    def artifact_digest(self) -> str:
        return "scripted"

    def complete(self, requests: Sequence[Request], progress=None) -> list[Completion]:
        self.sent.extend(requests)
        return [
            Completion(text=self.replies[(r.instance_id.split("#")[0], r.trial)]) for r in requests
        ]


@pytest.fixture
def rubric(registry_url) -> Rubric:
    registry = Registry.open(registry_url)
    registry.create_prompt("grade")
    registry.create_prompt_version("grade", TEMPLATE, ["input", "prediction", "reference"])
    return Rubric.from_registry(registry, "prompts:/grade/1", low=1, high=5)


def _partition() -> tuple[list[Instance], list[ModelOutput]]:
    instances = [
        Instance("a", "2+2?", (Reference("4", True),), groups={"dialect": "x"}),
        Instance("b", "3+3?", (Reference("6", True),), groups={"dialect": "y"}),
        Instance("c", "Capital of France?", (Reference("Paris", True),), groups={"dialect": "y"}),
    ]
    answers = {"a": "4", "b": "7", "c": "Lyon"}
    outputs = [
        ModelOutput(r, Completion(text=answers[r.instance_id]))
        for r in build_requests(GEN, instances)
    ]
    # A perturbed copy and a failed output: neither is judged.
    perturbed = build_requests(GEN, instances[:1], perturbation="lowercase")[0]
    outputs.append(ModelOutput(perturbed, Completion(text="4")))
    failed = build_requests(AdapterSpec(method=Method.GENERATION, variant="other"), instances)[0]
    outputs.append(ModelOutput(failed, Completion(error="boom")))
    return instances, outputs


# J1 fails to parse c on repeat 0; J2 never varies over repeats.
J1 = {("a", 0): "4", ("a", 1): "5", ("b", 0): "2", ("b", 1): "2", ("c", 0): "meh", ("c", 1): "3"}
J2 = {("a", 0): "4", ("a", 1): "4", ("b", 0): "3", ("b", 1): "3", ("c", 0): "1", ("c", 1): "1"}


def _card(rows):
    return {(r.metric, r.family, r.group): r for r in rows}


def test_judge_items_are_the_unperturbed_successful_answers() -> None:
    instances, outputs = _partition()
    items = judge_items(instances, outputs)
    template = outputs[0].request.template_id
    assert [i.id for i in items] == [f"{x}#{template}#0" for x in "abc"]
    assert [(i.input, i.prediction, i.reference) for i in items][2] == (
        "Capital of France?",
        "Lyon",
        "Paris",
    )


def test_judge_scores_spread_failures_and_agreement_by_hand(rubric) -> None:
    instances, outputs = _partition()
    j1, j2 = ScriptedJudge(J1), ScriptedJudge(J2)
    judgments = judge_partition(instances, outputs, [("j1@v1", j1), ("j2@v1", j2)], rubric, 2)
    assert len(j1.sent) == len(j2.sent) == 6  # 3 answers x 2 repeats
    scored = score_partition(instances, outputs, judgments=judgments)
    per_instance = {
        (s.instance_id, s.family, s.group): s.value
        for s in scored.stats
        if s.metric == "judge_score"
    }
    # Mean of every parsed score: a (4,5,4,4), b (2,2,3,3), c (3,1,1; J1's "meh" is left out).
    assert per_instance[("a", "accuracy", "")] == pytest.approx(4.25)
    assert per_instance[("b", "accuracy", "")] == pytest.approx(2.5)
    assert per_instance[("c", "accuracy", "")] == pytest.approx(5 / 3)
    assert per_instance[("c", "accuracy", "dialect=y")] == pytest.approx(5 / 3)
    assert per_instance[("c", JUDGE_FAMILY, "judge=j1@v1")] == pytest.approx(3.0)

    card = _card(scored.card)
    overall = card[("judge_score", "accuracy", "")]
    assert overall.mean == pytest.approx((4.25 + 2.5 + 5 / 3) / 3) and overall.count == 3
    assert card[("judge_score", JUDGE_FAMILY, "judge=j1@v1")].mean == pytest.approx(9.5 / 3)
    assert card[("judge_score", JUDGE_FAMILY, "judge=j2@v1")].mean == pytest.approx(8 / 3)
    # Sample std over repeats: J1 a: std(4, 5) = 1/sqrt(2), b: 0, c: one parsed score → none.
    spread = card[("judge_repeat_std", JUDGE_FAMILY, "judge=j1@v1")]
    assert spread.mean == pytest.approx(math.sqrt(0.5) / 2) and spread.count == 2
    assert card[("judge_repeat_std", JUDGE_FAMILY, "judge=j2@v1")].mean == 0.0
    failures = card[("judge_parse_failures", JUDGE_FAMILY, "judge=j1@v1")]
    assert (failures.mean, failures.count) == (1.0, 6)
    assert card[("judge_parse_failures", JUDGE_FAMILY, "judge=j2@v1")].mean == 0.0

    # Repeat 0: J1 (a 4, b 2, c -), J2 (a 4, b 3, c 1). Pairs on a and b: exact 1/2;
    # kappa: p_o = 1/2, p_e = (1*1 for "4") / 2^2 = 1/4 → (1/2 - 1/4) / (3/4) = 1/3.
    pair = "judges=j1@v1,j2@v1"
    assert card[("judge_exact_agreement", JUDGE_FAMILY, pair)].mean == pytest.approx(0.5)
    kappa = card[("judge_kappa", JUDGE_FAMILY, pair)]
    assert kappa.mean == pytest.approx(1 / 3) and kappa.count == 2
    # Alpha: pairable units a (4,4), b (2,3); coincidences o44 = 2, o23 = o32 = 1, n = 4,
    # n_4 = 2, n_2 = n_3 = 1. Nominal: D_o = 2/4, D_e = (2*(2+2+1)) / (4*3) = 10/12 → 0.4.
    # Interval: D_o = (1 + 1) / 4, D_e = 2*(2*1*4 + 2*1*1 + 1*1*1) / 12 = 22/12 → 1 - 6/22.
    nominal = card[("judge_alpha_nominal", JUDGE_FAMILY, "repeat=0")]
    assert nominal.mean == pytest.approx(0.4) and nominal.count == 2
    interval = card[("judge_alpha_interval", JUDGE_FAMILY, "repeat=0")]
    assert interval.mean == pytest.approx(1 - 6 / 22)
    # Judges saw only original inputs: no judge row on a perturbation or worst case.
    assert not any(s.metric.startswith("judge") and s.perturbation for s in scored.stats)


def test_one_judge_one_repeat_gives_reasons_not_zeros(rubric) -> None:
    instances, outputs = _partition()
    replies = {("a", 0): "5", ("b", 0): "no idea", ("c", 0): "9"}  # 9 is off the 1-5 scale
    judgments = judge_partition(instances, outputs, [("j@v1", ScriptedJudge(replies))], rubric)
    card = _card(score_partition(instances, outputs, judgments=judgments).card)
    assert card[("judge_score", "accuracy", "")].mean == 5.0
    assert card[("judge_score", "accuracy", "")].count == 1
    assert card[("judge_parse_failures", JUDGE_FAMILY, "judge=j@v1")].mean == 2.0
    spread = card[("judge_repeat_std", JUDGE_FAMILY, "judge=j@v1")]
    assert not spread.present and "judge_repeats: 1" in spread.reason
    alpha = card[("judge_alpha_nominal", JUDGE_FAMILY, "repeat=0")]
    assert math.isnan(alpha.mean) and "one judge" in alpha.reason


def test_nothing_parsed_or_nothing_to_judge_is_absent(rubric) -> None:
    instances, outputs = _partition()
    silent = ScriptedJudge({(i, 0): "?" for i in "abc"})
    judgments = judge_partition(instances, outputs, [("j@v1", silent)], rubric)
    card = _card(score_partition(instances, outputs, judgments=judgments).card)
    assert "could be parsed" in card[("judge_score", "accuracy", "")].reason
    only_failed = [o for o in outputs if not o.completion.ok]
    assert judge_partition(instances, only_failed, [("j@v1", silent)], rubric) == []
    card = _card(score_partition(instances, only_failed, judgments=[]).card)
    assert "no generated answer" in card[("judge_score", "accuracy", "")].reason
    # Without judges configured there are no judge rows at all.
    plain = score_partition(instances, outputs).card
    assert not any(r.metric.startswith("judge") for r in plain)


def _entry(**fields) -> dict:
    adapter = fields.pop("adapter", {"method": "generation"})
    return {"scenarios": {"qa": {"scenario": "arithmetic_qa", "adapter": adapter, **fields}}}


def test_suite_judge_settings() -> None:
    suite = parse_suite(
        _entry(
            judges=["grader@champion", "models:/other@v2"],
            judge_rubric="prompts:/grade@production",
            judge_scale=[0, 10],
            judge_repeats=3,
        )
    )
    judging = suite["qa"].judging
    assert judging.judges == ("grader@champion", "models:/other@v2")
    assert (judging.rubric, judging.low, judging.high, judging.repeats) == (
        "prompts:/grade@production",
        0.0,
        10.0,
        3,
    )
    defaults = parse_suite(_entry(judges=["g@v1"], judge_rubric="prompts:/r/1"))["qa"].judging
    assert (defaults.low, defaults.high, defaults.repeats) == (1.0, 5.0, 1)
    assert parse_suite(_entry())["qa"].judging is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"judges": ["g@v1"]}, r"scenarios\.qa: judges need both 'judges' and 'judge_rubric'"),
        ({"judges": [], "judge_rubric": "prompts:/r/1"}, r"qa\.judges: expected a non-empty"),
        ({"judges": ["grader"], "judge_rubric": "prompts:/r/1"}, r"qa\.judges\[0\]: expected"),
        ({"judges": ["g@v1", "g@v1"], "judge_rubric": "prompts:/r/1"}, r"listed twice"),
        ({"judges": ["g@v1"], "judge_rubric": "grade"}, r"qa\.judge_rubric: expected a prompt"),
        (
            {"judges": ["g@v1"], "judge_rubric": "prompts:/r/1", "judge_scale": [5, 1]},
            r"qa\.judge_scale: expected \[low, high\]",
        ),
        (
            {"judges": ["g@v1"], "judge_rubric": "prompts:/r/1", "judge_repeats": 0},
            r"qa\.judge_repeats: expected a positive integer",
        ),
        (
            {
                "judges": ["g@v1"],
                "judge_rubric": "prompts:/r/1",
                "adapter": {"method": "multiple_choice_separate"},
            },
            r"qa\.judges: judges read generated answers",
        ),
    ],
)
def test_bad_judge_settings_name_the_file_and_key(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_suite(_entry(**fields), "s.yaml")
