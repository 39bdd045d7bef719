"""Math answers compared as mathematics (``scorer: math_equivalence``, on math-verify):
math-verify's documented cases, a hand-made set of tricky pairs both ways, the scorer inside a
partition, and its timeouts off the main thread."""

from __future__ import annotations

import threading

import math_verify
import pytest

from assay.core.records import Completion, Instance, ModelOutput, Reference, Request, RequestKind
from assay.evaluate.suite import parse_suite
from assay.scoring import math_equivalence as math_eq
from assay.scoring.math_equivalence import MathEquivalenceConfig, equivalent
from assay.scoring.scorecard import score_partition
from assay.scoring.scorer_runs import EntryScorer

# From math-verify's README (the usage example and the FAQ on asymmetry) and its regression
# tests (tests/test_all.py: numbers, fractions, sets and intervals, LaTeX notation, percent,
# relations, units), as (reference, answer, equivalent).
DOCUMENTED = [
    ("${1,3} \\cup {2,4}$", "${1,2,3,4}$", True),
    ("$1 < x < 2$", "$(1,2)$", True),
    ("$(1,2)$", "$1 < x < 2$", False),  # the gold leads: an inequality is not solved
    ("$101$", "$a+2z = 2z + a = 101$", True),
    ("$a+2z = 2z + a = 101$", "$101$", False),
    ("1000.99", "the number is not 10 which is 1,000.99€", True),
    ("7425000", "7,425,000", True),
    ("2", "AZYUK2A", False),
    ("10/9", "\\frac{10}{9}", True),
    ("$[0,9)$", "$[0,1)$", False),
    ("$(0,9)$", "$[0,9)$", False),
    ("$9$", "Answer \\[ 9 \\]", True),
    ("$1/3$", "$\\frac13 $", True),
    ("$1/3$", "$\\frac{1}{3} \\text{meters}$", True),
    ("$1/3$", "$k = \\frac{1}{3}$", True),
    ("$28\\%$", "28 percent", True),
    ("$28\\%$", "$\\boxed{28}$ pct", True),
    (
        "$15\\mbox{ cm}^2$",
        "the area is $$\\frac{1}{2}\\times 3 \\times 10 = \\boxed{15\\mbox{ cm}^2}.$$",
        True,
    ),
    ("$-2,1$", "the only integer roots are $\\boxed{-2,1}.$", True),
    ("$\\{1\\pm\\sqrt{5},-2\\}$", "so the answer is $\\boxed{\\{1\\pm\\sqrt{5},-2\\}}.$", True),
    (
        "$[-1, -\\frac{1}{2}) \\cup (-\\frac{1}{2}, 0) \\cup (0, 1) \\cup (1, \\infty)$",
        "The solution set is $\\boxed{[-1, -\\tfrac12) \\cup (-\\tfrac12, 0) \\cup (0, 1) "
        "\\cup (1, \\infty)}.$",
        True,
    ),
    ("$125$ miles", "The distance is $\\boxed{125\\textnormal{ miles}}.$", True),
    ("$x > 5$", "Therefore $x < 5$ is the solution.", False),
    ("$x \\leq 5$", "$5 \\geq x$", True),
    ("$\\frac{1}{12}$", "$0.0833333333333333$", True),
    ("$2$", "$\\frac{1+\\sqrt{5}}{2}$", False),
    ("$\\tan^2(y)+1$", "$\\sec^2(y)$", True),
    ("$34$", "Final Answer: The largest $n$ is 34.", True),
]

# Made by hand: references as MATH and GSM8K store them (no delimiters), answers as models
# write them.
EQUIVALENT = [
    ("\\frac{1}{2}", "The answer is $\\boxed{0.5}$"),
    ("0.5", "\\boxed{\\frac{1}{2}}"),
    ("\\frac{14}{3}", "So x = 14/3."),  # a sentence's period is not a decimal point
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),  # bare LaTeX, no delimiters
    ("18", "She makes 9 * $2 = $18 every day at the farmer's market.\n#### 18"),
    ("1000", "It costs 1,000 dollars."),
    ("25\\%", "The discount is 25%."),
    ("0.25", "The discount is 25%."),
    ("10\\%", "10"),
    ("1,2", "\\boxed{2, 1}"),  # MATH's list of solutions is a set
    (
        "(-\\infty,-2)\\cup(2,\\infty)",
        "so $x<-2$ or $x>2$: $\\boxed{(-\\infty,-2)\\cup(2,\\infty)}$",
    ),
    ("\\{-1, 1\\}", "\\boxed{\\pm 1}"),
    ("3\\sqrt{2}", "\\boxed{\\sqrt{18}}"),
    ("90^\\circ", "\\boxed{90}"),
    ("5\\text{ inches}", "The side is \\boxed{5 \\text{ in}}"),
    ("12", "\\boxed{12} \\text{ meters}"),
    ("\\dfrac{14}{3}", "\\boxed{\\frac{28}{6}}"),
    ("2", "the answer is 3, wait no: \\boxed{2}"),  # \boxed{} first
    ("(x+1)^2", "$x^2+2x+1$"),
    ("[2,5]", "$x \\in [2, 5]$"),
]
NOT_EQUIVALENT = [
    ("\\frac{14}{3}", "\\boxed{4.67}"),  # rounded: equal to 2 places, not to 6
    ("(-\\infty,-2)\\cup(2,\\infty)", "\\boxed{(-\\infty,-2]\\cup[2,\\infty)}"),  # closed ends
    ("\\{2, 3\\}", "$\\{3\\}$"),
    ("\\frac{1}{2}", "The answer is 2."),
    ("12", "12 apples. Answer: 13"),  # the stated answer, not the first number
    ("3", "I think 3 apples, or 4"),  # the last number
    ("\\pi", "3.14"),
    ("x^2", "y^2"),
    ("-5", "5"),
    ("(1,2)", "$1 < x < 2$"),
    ("\\frac{2}{3}", "0.67"),
    ("[0,1)", "$[0,1]$"),
    ("2\\sqrt{2}", "\\boxed{2.83}"),
    ("\\frac{1}{2}", ""),
    ("\\frac{1}{2}", "I don't know."),
]
# Pairs that read the same either way round (the others are led by the reference's form).
SYMMETRIC = [
    ("\\frac{1}{2}", "\\boxed{0.5}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("25\\%", "0.25"),
    ("\\{-1, 1\\}", "\\pm 1"),
    ("3\\sqrt{2}", "\\sqrt{18}"),
    ("\\dfrac{14}{3}", "\\frac{28}{6}"),
]


@pytest.mark.parametrize(("reference", "answer", "expected"), DOCUMENTED)
def test_math_verifys_documented_cases(reference: str, answer: str, expected: bool) -> None:
    assert equivalent(reference, answer) is expected


@pytest.mark.parametrize(("reference", "answer"), EQUIVALENT)
def test_tricky_pairs_that_are_equivalent(reference: str, answer: str) -> None:
    assert equivalent(reference, answer)


@pytest.mark.parametrize(("reference", "answer"), NOT_EQUIVALENT)
def test_tricky_pairs_that_are_not(reference: str, answer: str) -> None:
    assert not equivalent(reference, answer)


@pytest.mark.parametrize(("one", "other"), SYMMETRIC)
def test_symmetric_pairs_hold_both_ways(one: str, other: str) -> None:
    assert equivalent(one, other) and equivalent(other, one)
    assert not equivalent(one, "\\boxed{7}") and not equivalent("7", other)


def test_settings_are_math_verifys() -> None:
    # The gold leads (an interval answers an inequality, not the other way), unless allowed.
    allow = MathEquivalenceConfig(allow_set_relation_comp=True)
    assert not equivalent("(1,2)", "$1 < x < 2$")
    assert equivalent("(1,2)", "$1 < x < 2$", allow)
    assert equivalent("\\frac{2}{3}", "0.67", MathEquivalenceConfig(float_rounding=2))
    with pytest.raises(ValueError, match="cannot parse the reference"):
        equivalent("", "1")


def _answers(instance: Instance, texts: list[str], temperature: float = 0.0) -> list[ModelOutput]:
    return [
        ModelOutput(
            Request(
                instance.id,
                RequestKind.GENERATE,
                "p",
                template_id="t",
                method="generation",
                temperature=temperature,
                sample=k,
            ),
            Completion(text=text),
        )
        for k, text in enumerate(texts)
    ]


def test_the_scorer_in_a_partition_with_samples_and_a_bad_reference() -> None:
    half = Instance("half", "What is 1/2?", (Reference("\\frac{1}{2}", True),))
    gsm = Instance("gsm", "Eggs?", (Reference("18", True),), groups={"level": "easy"})
    broken = Instance("broken", "?", (Reference("no answer here", False),))  # no correct one
    outputs = [
        *_answers(half, ["$\\boxed{0.5}$", "1/3", "The answer is \\frac{2}{4}", "?"], 0.7),
        *_answers(gsm, ["She makes $18 a day.\n#### 18"]),
        *_answers(broken, ["1"]),
    ]
    scorer = EntryScorer.named("math_equivalence", MathEquivalenceConfig())
    scores = score_partition([half, gsm, broken], outputs, seed_key="k", scorer=scorer)
    value = {(s.instance_id, s.metric, s.group): s.value for s in scores.stats}
    assert value[("half", "math_equiv", "")] == pytest.approx(0.5)  # 2 of 4 samples
    assert value[("half", "pass@1", "")] == pytest.approx(0.5)
    assert value[("half", "pass@4", "")] == 1.0
    assert value[("gsm", "math_equiv", "")] == 1.0
    assert value[("gsm", "math_equiv", "level=easy")] == 1.0
    assert ("gsm", "pass@1", "") not in value  # greedy: no pass@k
    assert not [s for s in scores.stats if s.metric == "exact_match"]
    run = scores.scorer_run
    (failure,) = run.failures
    assert failure.instance_id == "broken"
    assert "scorer 'math_equivalence'" in failure.message
    assert "instance 'broken' has no correct reference" in failure.message
    assert run.figures == {"num_answers_unparsed": 1.0}  # "?"
    card = {(r.metric, r.group): r for r in scores.card if not r.perturbation}
    assert card[("math_equiv", "")].mean == pytest.approx(0.75)
    assert card[("scorer_failures", "scorer=math_equivalence")].mean == 1.0


def test_a_suite_entry_names_it() -> None:
    suite = parse_suite(
        {
            "scenarios": {
                "gsm": {
                    "scenario": "arithmetic_qa",
                    "adapter": {"method": "generation"},
                    "scorer": "math_equivalence",
                    "scorer_args": {"float_rounding": 4, "gold_format": "expr"},
                }
            }
        },
        "s.yaml",
    )
    assert suite["gsm"].metric == "math_equiv"
    assert suite["gsm"].scoring.args == MathEquivalenceConfig(float_rounding=4, gold_format="expr")
    with pytest.raises(ValueError, match=r"scorer_args\.gold_format: Input should be 'auto'"):
        parse_suite(
            {
                "scenarios": {
                    "gsm": {
                        "scenario": "arithmetic_qa",
                        "scorer": "math_equivalence",
                        "scorer_args": {"gold_format": "sympy"},
                    }
                }
            }
        )


def test_off_the_main_thread_the_timeouts_are_off_not_an_error(monkeypatch) -> None:
    # math-verify's own timeouts set signal.alarm, which only the main thread may do.
    caught: list[BaseException] = []

    def library_alone() -> None:
        try:
            math_verify.parse("$1$", parsing_timeout=5)
        except ValueError as exc:
            caught.append(exc)

    thread = threading.Thread(target=library_alone)
    thread.start()
    thread.join()
    assert caught and "threaded environment" in str(caught[0])

    timeouts: list[int | None] = []
    real_parse = math_eq.parse

    def spy(text, targets, parsing_timeout):
        timeouts.append(parsing_timeout)
        return real_parse(text, targets, parsing_timeout=parsing_timeout)

    monkeypatch.setattr(math_eq, "parse", spy)
    results: list[bool] = []
    config = MathEquivalenceConfig(timeout_s=3)
    worker = threading.Thread(target=lambda: results.append(equivalent("\\frac12", "0.5", config)))
    worker.start()
    worker.join()
    assert results == [True] and set(timeouts) == {None}
    timeouts.clear()
    assert equivalent("\\frac12", "0.5", config)  # the main thread keeps its bounds
    assert set(timeouts) == {3}
