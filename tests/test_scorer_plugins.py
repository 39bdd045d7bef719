"""Scorer and scenario plugins found through entry points (``assay.core.plugins``): named in a
suite like built-ins, arguments checked by the plugin's pydantic model, stats turned into rows
by one host (``assay.scoring.scorer_runs``), and broken plugins named in their errors."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import BaseModel

from assay.core.pinned_prices import pin_prices
from assay.core.plugins import PluginError
from assay.core.records import Completion, Instance, ModelOutput, Reference, Request, RequestKind
from assay.core.scorers import BUILTIN_SCORERS, NOTE_MAX_CHARS, Stat, get_scorer, scorer_names
from assay.evaluate.suite import parse_suite
from assay.registry import Registry
from assay.scenarios import get_scenario, scenario_names
from assay.scoring.metrics.directions import lower_is_better_in
from assay.scoring.partition import SuiteScorer
from assay.scoring.scorecard import score_partition
from assay.scoring.scorer_runs import EntryScorer, ScorerError
from assay.scoring.summary import scorecard_table

SCORERS = "assay.scorers"
SCENARIOS = "assay.scenarios"

LENGTH = textwrap.dedent(
    """
    from pydantic import BaseModel, ConfigDict

    from assay.core.scorers import Scored, Stat


    class LengthArgs(BaseModel):
        model_config = ConfigDict(strict=True)
        max_chars: int = 10


    class Length:
        metric = "short_enough"
        Args = LengthArgs

        def score(self, instances, outputs, args):
            stats = []
            for o in outputs:
                n = len(o.completion.text)
                i, t = o.request.instance_id, o.request.trial
                stats.append(Stat(i, "short_enough", float(n <= args.max_chars), trial=t))
                # an accuracy metric where smaller is better: worst cases take the largest
                stats.append(Stat(i, "overshoot", max(0, n - args.max_chars), "lower", trial=t))
                stats.append(Stat(i, "chars", n, "lower", family="efficiency", trial=t))
            return Scored(stats, {"num_answers": len(outputs)})
    """
)
FLAKY = textwrap.dedent(
    """
    from assay.core.scorers import Stat


    class Flaky:
        metric = "flaky"

        def score(self, instances, outputs, args):
            for instance in instances:
                if "boom" in instance.input:
                    raise RuntimeError("cannot score " + instance.input)
                yield Stat(instance.id, "flaky", 1.0)
    """
)
SHAPES = textwrap.dedent(
    """
    from assay.core.scorers import Stat


    class Dicts:
        metric = "m"

        def score(self, instances, outputs, args):
            return [{"instance_id": i.id, "metric": "m", "value": 1.0} for i in instances]


    class Nothing:
        metric = "m"

        def score(self, instances, outputs, args):
            return None


    class Stranger:
        metric = "m"

        def score(self, instances, outputs, args):
            return [Stat("someone-else", "m", 1.0)]


    class BadRatio:
        metric = "m"
        ratios = {"rate": ("rate", "n")}

        def score(self, instances, outputs, args):
            return []


    class Squatter:
        metric = "m"

        def score(self, instances, outputs, args):
            return [Stat(i.id, "latency_s", 1.0) for i in instances]


    class NoScore:
        metric = "m"
    """
)


def _instances() -> list[Instance]:
    return [
        Instance("q1", "short one", (Reference("a", True),), groups={"dialect": "us"}),
        Instance("q2", "boom here", (Reference("b", True),), groups={"dialect": "uk"}),
        Instance("q3", "third", (Reference("c", True),), groups={"dialect": "us"}),
    ]


def _answer(
    instance_id: str, text: str, template: str = "t0", perturbation: str = ""
) -> ModelOutput:
    request = Request(
        instance_id,
        RequestKind.GENERATE,
        "prompt",
        template_id=template,
        perturbation=perturbation,
        method="generation",
    )
    return ModelOutput(request, Completion(text=text))


@pytest.fixture
def length(fake_plugins) -> EntryScorer:
    fake_plugins.install(
        "acme-length", {"acme_length": LENGTH}, {SCORERS: {"length": "acme_length:Length"}}
    )
    loaded = get_scorer("length")
    return EntryScorer(loaded, loaded.validate({"max_chars": 3}, "args"))


def test_a_plugin_is_named_in_a_suite_like_a_built_in(length) -> None:
    assert {"code_execution", "math_equivalence", "length"} <= set(scorer_names())

    def suite(**fields: object):
        entry = {"scenario": "arithmetic_qa", "adapter": {"method": "generation"}, **fields}
        return parse_suite({"scenarios": {"q": entry}}, "s.yaml")

    entry = suite(scorer="length", scorer_args={"max_chars": 4})["q"]
    assert entry.scoring is not None
    assert (entry.scoring.name, entry.scoring.args.max_chars, entry.metric) == (
        "length",
        4,
        "short_enough",
    )
    assert suite(scorer="length")["q"].scoring.args.max_chars == 10  # the model's default
    for fields, message in [
        (
            {"scorer_args": {"max_chars": "4"}},
            r"s\.yaml: scenarios\.q\.scorer_args\.max_chars: Input should be a valid integer",
        ),
        (
            {"scorer_args": {"width": 4}},
            r"scenarios\.q\.scorer_args: unknown key\(s\) width; known: max_chars",
        ),
        (
            {"adapter": {"method": "multiple_choice_joint"}},
            r"scenarios\.q\.scorer: a scorer reads generated answers",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            suite(scorer="length", **fields)


def test_a_plugins_stats_become_rows_with_layouts_perturbations_and_groups(length) -> None:
    instances = _instances()
    outputs = [
        _answer("q1", "ab"),
        _answer("q2", "abcdef"),
        _answer("q1", "abcd", template="t1"),  # a prompt variant
        _answer("q1", "abcdefgh", perturbation="lowercase"),  # robustness
        _answer("q2", "a", perturbation="gender_pronouns:target=female"),  # fairness
    ]
    scores = score_partition(instances, outputs, seed_key="k", scorer=length)
    rows = {
        (s.instance_id, s.metric, s.template_id, s.perturbation, s.group, s.family): s.value
        for s in scores.stats
    }
    assert rows[("q1", "short_enough", "t0", "", "", "accuracy")] == 1.0
    assert rows[("q1", "short_enough", "t0", "", "dialect=us", "accuracy")] == 1.0
    assert rows[("q2", "short_enough", "t0", "", "dialect=uk", "accuracy")] == 0.0
    assert rows[("q1", "short_enough", "t1", "", "", "accuracy")] == 0.0
    assert rows[("q1", "short_enough", "t0", "lowercase", "", "robustness")] == 0.0
    assert (
        rows[("q2", "short_enough", "t0", "gender_pronouns:target=female", "", "fairness")] == 1.0
    )
    # Efficiency stats of the scorer keep their family and are not repeated per group.
    assert rows[("q1", "chars", "t0", "", "", "efficiency")] == 2.0
    assert ("q1", "chars", "t0", "", "dialect=us", "efficiency") not in rows
    # Worst cases follow each metric's direction: the smallest short_enough, the largest
    # overshoot, over the original and the robustness inputs.
    worst = {
        (s.instance_id, s.metric): s.value for s in scores.stats if s.perturbation == "robustness"
    }
    assert worst[("q1", "short_enough")] == 0.0 and worst[("q1", "overshoot")] == 5.0
    # The scorer replaced reference matching on these rows.
    assert not [s for s in scores.stats if s.metric == "exact_match"]
    card = {(r.metric, r.group, r.perturbation): r for r in scores.card}
    # q1: 1 on t0 and 0 on t1, averaged per instance first; q2: 0.
    assert card[("short_enough", "", "")].mean == pytest.approx(0.25)
    failures = card[("scorer_failures", "scorer=length (acme-length 1.0)", "")]
    assert (failures.mean, failures.count) == (0.0, 5)
    assert scores.scorer_run.figures == {"num_answers": 5.0}
    # The stored scorecard says which way each metric goes, for rankings and gates to read.
    table = scorecard_table(scores.card)
    flags = {r["metric"]: r["lower_is_better"] for r in table.to_pylist() if not r["group"]}
    assert flags["overshoot"] and flags["chars"] and flags["latency_s"]
    assert not flags["short_enough"] and flags["failed"]
    lower = lower_is_better_in(table)
    assert {"overshoot", "chars"} <= lower and "short_enough" not in lower
    assert "overshoot" not in lower_is_better_in(table.drop(["lower_is_better"]))  # older tables


def test_one_instances_exception_fails_that_instance_only(fake_plugins) -> None:
    fake_plugins.install(
        "acme-flaky", {"acme_flaky": FLAKY}, {SCORERS: {"flaky": "acme_flaky:Flaky"}}
    )
    suite = parse_suite(
        {
            "scenarios": {
                "q": {
                    "scenario": "arithmetic_qa",
                    "adapter": {"method": "generation"},
                    "scorer": "flaky",
                }
            }
        }
    )
    instances = _instances()
    outputs = pin_prices(ModelOutput.to_table([_answer(i.id, "x") for i in instances]), None)

    def no_registry() -> Registry:
        raise AssertionError("a plugin scorer needs no registry")

    scored = SuiteScorer(suite, no_registry, lambda spec: no_registry()).score(
        "m@v1", "q", Instance.to_table(instances), outputs, seed_key="m@v1|q"
    )
    values = {
        s.instance_id: s.value for s in scored.scores.stats if s.metric == "flaky" and not s.group
    }
    assert values == {"q1": 1.0, "q3": 1.0}
    (failure,) = scored.scorer_failures
    assert failure.instance_id == "q2"
    for part in (
        "scorer 'flaky'",
        "entry point assay.scorers: flaky = acme_flaky:Flaky",
        "from acme-flaky 1.0",
        "instance 'q2'",
        "RuntimeError: cannot score boom here",
    ):
        assert part in failure.message
    figures = scored.figures()
    assert (figures["scorer"], figures["num_scorer_failures"]) == ("flaky (acme-flaky 1.0)", 1)
    card = {(r.metric, r.group, r.perturbation): r for r in scored.scores.card}
    assert card[("scorer_failures", "scorer=flaky (acme-flaky 1.0)", "")].mean == 1.0
    assert card[("flaky", "", "")].count == 2  # the failed instance is absent, not 0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("dicts", r"instance 'q1'.*item 0 is dict, not assay\.core\.scorers\.Stat"),
        ("nothing", r"score\(\) returned NoneType, not an iterable"),
        ("stranger", r"instance 'someone-else'.*a stat for an instance it was not given"),
        ("squatter", r"metric 'latency_s' is assay's own"),
    ],
)
def test_a_return_of_the_wrong_shape_fails_the_partition_naming_the_plugin(
    fake_plugins, name, message
) -> None:
    entries = {
        "dicts": "Dicts",
        "nothing": "Nothing",
        "stranger": "Stranger",
        "squatter": "Squatter",
    }
    fake_plugins.install(
        "acme-shapes",
        {"acme_shapes": SHAPES},
        {SCORERS: {n: f"acme_shapes:{cls}" for n, cls in entries.items()}},
    )
    with pytest.raises(ScorerError, match=message) as caught:
        score_partition(_instances(), [_answer("q1", "x")], scorer=EntryScorer.named(name))
    assert f"entry point assay.scorers: {name} = acme_shapes:{entries[name]}" in str(caught.value)
    assert "from acme-shapes 1.0" in str(caught.value)


def test_a_plugin_that_cannot_load_is_named_when_the_suite_is_read(fake_plugins) -> None:
    fake_plugins.install(
        "acme-broken",
        {"acme_broken": "import not_a_module_anywhere\n", "acme_shapes": SHAPES},
        {
            SCORERS: {
                "broken": "acme_broken:Broken",
                "noscore": "acme_shapes:NoScore",
                "badratio": "acme_shapes:BadRatio",
            }
        },
    )

    def suite(scorer: str):
        entry = {"scenario": "arithmetic_qa", "adapter": {"method": "generation"}, "scorer": scorer}
        return parse_suite({"scenarios": {"q": entry}}, "s.yaml")

    with pytest.raises(ValueError) as caught:
        suite("broken")
    assert str(caught.value) == (
        "s.yaml: scenarios.q.scorer: scorer 'broken' (entry point assay.scorers: broken = "
        "acme_broken:Broken, from acme-broken 1.0) failed to load: ModuleNotFoundError: "
        "No module named 'not_a_module_anywhere'"
    )
    with pytest.raises(ValueError, match=r"scorer 'noscore' .* is not a scorer: it has no score"):
        suite("noscore")
    with pytest.raises(ValueError, match=r"scorer 'badratio' .* its ratio 'rate' is not"):
        suite("badratio")
    # Installed but unused, a broken plugin breaks nothing else.
    assert suite("math_equivalence")["q"].metric == "math_equiv"


def test_two_plugins_of_one_name_are_refused_naming_both(fake_plugins) -> None:
    fake_plugins.install("acme-one", {"acme_one": LENGTH}, {SCORERS: {"length": "acme_one:Length"}})
    fake_plugins.install("acme-two", {"acme_two": LENGTH}, {SCORERS: {"length": "acme_two:Length"}})
    with pytest.raises(
        PluginError, match=r"'length' is declared more than once.*acme-one 1\.0.*acme-two 1\.0"
    ):
        get_scorer("length")
    fake_plugins.install(
        "acme-shadow", {"acme_shadow": LENGTH}, {SCORERS: {"code_execution": "acme_shadow:Length"}}
    )
    with pytest.raises(
        PluginError, match=r"'code_execution' is declared more than once.*assay \(built in\)"
    ):
        get_scorer("code_execution")


def test_built_in_scorers_load_through_the_plugin_path() -> None:
    assert [p.name for p in BUILTIN_SCORERS] == ["code_execution", "ifeval", "math_equivalence"]
    for plugin in BUILTIN_SCORERS:
        loaded = get_scorer(plugin.name)
        assert loaded.plugin == plugin and loaded.plugin.builtin
        if plugin.name == "ifeval":  # IFEval's checks take no settings
            assert loaded.args_model is None
        else:
            assert issubclass(loaded.args_model, BaseModel)


# --------------------------------------------------------------------------- scenarios

QUIZ = textwrap.dedent(
    """
    from pydantic import BaseModel, Field

    from assay.core.records import Instance, Reference
    from assay.scenarios import Scenario


    class QuizArgs(BaseModel):
        n: int = Field(default=2, ge=1)


    class Quiz(Scenario):
        Args = QuizArgs

        def __init__(self, n=2):
            self.n = n

        def load(self):
            return [
                Instance(f"q{i}", f"{i}+{i}?", (Reference(str(2 * i), True),))
                for i in range(self.n)
            ]


    class Twice(Scenario):
        def load(self):
            return [Instance("same", "x", ()), Instance("same", "y", ())]


    class Strings(Scenario):
        def load(self):
            return [Instance("ok", "x", ()), "not an instance"]


    class Raises(Scenario):
        def load(self):
            raise OSError("the quiz server is down")


    class NotAScenario:
        pass
    """
)


@pytest.fixture
def quiz(fake_plugins) -> None:
    fake_plugins.install(
        "acme-quiz",
        {"acme_quiz": QUIZ},
        {
            SCENARIOS: {
                "quiz": "acme_quiz:Quiz",
                "twice": "acme_quiz:Twice",
                "strings": "acme_quiz:Strings",
                "raises": "acme_quiz:Raises",
                "notascenario": "acme_quiz:NotAScenario",
            }
        },
    )


def test_a_scenario_plugins_args_are_checked_by_its_model(quiz) -> None:
    assert {"quiz", "twice", "facts_mc"} <= set(scenario_names())
    suite = parse_suite({"scenarios": {"quiz": {"scenario": "quiz", "args": {"n": 3}}}}, "s.yaml")
    data = suite["quiz"].build().load()
    assert [i.gold_texts for i in data.instances] == [["0"], ["2"], ["4"]]
    assert data.revision == "acme-quiz==1.0"  # a bare list: the plugin's version is the revision
    with pytest.raises(
        ValueError,
        match=r"s\.yaml: scenarios\.quiz\.args\.n: Input should be greater than or equal to 1",
    ):
        parse_suite({"scenarios": {"quiz": {"scenario": "quiz", "args": {"n": 0}}}}, "s.yaml")
    with pytest.raises(ValueError, match=r"scenarios\.quiz\.args: unknown key\(s\) size; known: n"):
        parse_suite({"scenarios": {"quiz": {"scenario": "quiz", "args": {"size": 3}}}}, "s.yaml")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("twice", r"instance 'same' appears twice"),
        ("strings", r"load\(\) item 1 is str, not an Instance"),
        ("raises", r"load\(\) failed: OSError: the quiz server is down"),
        (
            "notascenario",
            r"names <class 'acme_quiz\.NotAScenario'>, not a subclass of assay's Scenario",
        ),
    ],
)
def test_a_broken_scenario_plugin_names_itself(quiz, name, message) -> None:
    with pytest.raises(PluginError, match=message) as caught:
        get_scenario(name).load()
    assert f"scenario '{name}' (entry point assay.scenarios: {name} = acme_quiz:" in str(
        caught.value
    )
    assert "from acme-quiz 1.0" in str(caught.value)


def test_a_scenario_plugin_may_not_shadow_a_built_in(fake_plugins) -> None:
    fake_plugins.install(
        "acme-shadow", {"acme_quiz": QUIZ}, {SCENARIOS: {"facts_mc": "acme_quiz:Quiz"}}
    )
    with pytest.raises(
        PluginError, match=r"scenario name 'facts_mc' is built into assay and also declared by"
    ):
        get_scenario("facts_mc")


def test_a_stats_note_is_checked_and_capped() -> None:
    assert Stat("q1", "m", 1.0, note="why").note == "why"
    with pytest.raises(ValueError, match=r"Stat\.note must be a string"):
        Stat("q1", "m", 1.0, note=3)  # type: ignore[arg-type]
    long = Stat("q1", "m", 1.0, note="x" * 5000).note
    assert len(long) == NOTE_MAX_CHARS and long.endswith("…")
