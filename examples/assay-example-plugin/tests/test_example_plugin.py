"""The example plugin as assay sees it once installed: found by name through its entry points,
arguments checked by its models, and its scorer's stats in a scored partition."""

from __future__ import annotations

import pytest

from assay.core.records import Completion, Instance, ModelOutput, Reference, Request, RequestKind
from assay.core.scorers import get_scorer
from assay.evaluate.suite import parse_suite
from assay.scenarios import get_scenario
from assay.scoring.scorecard import score_partition
from assay.scoring.scorer_runs import EntryScorer
from assay_example_plugin.scenarios import UnitConversions
from assay_example_plugin.scorers import NumericToleranceArgs, last_number


def test_assay_finds_both_entry_points() -> None:
    scorer = get_scorer("numeric_tolerance")
    assert scorer.plugin.distribution == "assay-example-plugin"
    assert scorer.plugin.version == "0.1.0"
    assert scorer.metric == "within_tolerance"
    scenario = get_scenario("unit_conversions", n=3)
    assert scenario.plugin.entry == (
        "assay.scenarios: unit_conversions = assay_example_plugin.scenarios:UnitConversions"
    )


def test_the_scenario_is_deterministic() -> None:
    first, second = UnitConversions(n=30).load(), UnitConversions(n=30).load()
    assert first.digest == second.digest and first.revision == "unit-conversions-v1"
    assert len({i.id for i in first.instances}) == 30
    one = first.instances[1]
    assert one.input == "How many meters are in 8.5 kilometers?"
    assert one.gold_texts == ["8500"]


def test_a_suite_names_them_and_their_models_check_the_arguments() -> None:
    def suite(**entry: object):
        base = {"scenario": "unit_conversions", "adapter": {"method": "generation"}}
        return parse_suite({"scenarios": {"conv": {**base, **entry}}}, "s.yaml")

    config = suite(args={"n": 5}, scorer="numeric_tolerance", scorer_args={"rel_tol": 0.05})
    assert config["conv"].metric == "within_tolerance"
    assert config["conv"].scoring.args == NumericToleranceArgs(rel_tol=0.05)
    assert len(config["conv"].build().load().instances) == 5
    with pytest.raises(ValueError, match=r"scenarios\.conv\.args\.n: Input should be greater"):
        suite(args={"n": 0})
    with pytest.raises(ValueError, match=r"scenarios\.conv\.scorer_args\.rel_tol: Input should"):
        suite(scorer="numeric_tolerance", scorer_args={"rel_tol": 2})


def _answer(instance_id: str, text: str, perturbation: str = "") -> ModelOutput:
    request = Request(
        instance_id, RequestKind.GENERATE, "p", method="generation", perturbation=perturbation
    )
    return ModelOutput(request, Completion(text=text))


def test_the_scorer_in_a_partition() -> None:
    instances = [
        Instance("a", "?", (Reference("300", True),)),
        Instance("b", "?", (Reference("1,000", True),)),
        Instance("c", "?", (Reference("many", True),)),  # not a number: fails alone
    ]
    outputs = [
        _answer("a", "There are 300 centimeters."),
        _answer("b", "About 1,004 of them"),
        _answer("c", "12"),
        _answer("a", "no idea", perturbation="lowercase"),
    ]
    scorer = EntryScorer(get_scorer("numeric_tolerance"), NumericToleranceArgs(rel_tol=0.01))
    scores = score_partition(instances, outputs, scorer=scorer)
    value = {(s.instance_id, s.metric, s.perturbation): s.value for s in scores.stats}
    assert value[("a", "within_tolerance", "")] == 1.0
    assert value[("b", "within_tolerance", "")] == 1.0
    assert value[("b", "relative_error", "")] == pytest.approx(0.004)
    assert value[("a", "within_tolerance", "lowercase")] == 0.0
    # relative_error is lower-is-better: its worst case is the largest.
    assert value[("a", "relative_error", "robustness")] == 1.0
    (failure,) = scores.scorer_run.failures
    assert failure.instance_id == "c"
    assert "numeric_tolerance" in failure.message and "is not a non-zero number" in failure.message


def test_last_number() -> None:
    assert last_number("it is 1,250.5 or so") == 1250.5
    assert last_number("-3 then 4") == 4.0
    assert last_number("none") is None
