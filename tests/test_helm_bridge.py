"""The HELM bridge: HELM scenarios as assay instances, and assay prompts byte-identical to HELM's.

Tests marked by the ``helm`` fixture run HELM itself, in the interpreter of ``$ASSAY_HELM_VENV``
(or this one when the ``helm`` extra is installed), and skip saying so when there is none.
crfm-helm cannot share this project's environment (it pins pandas 2 and an older fsspec), so
CI needs a separate virtual environment with crfm-helm and ASSAY_HELM_VENV pointing at it.
Expected layouts without HELM are written out by hand from HELM's adapter rules: blocks
(instructions, examples, eval instance) joined by ``instance_prefix``; an example is
``input_prefix + input + input_suffix [+ choices] + output_prefix + answer + output_suffix``;
the eval block ends with ``output_prefix`` right-stripped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess

import pytest

from assay.adapters import (
    AdapterSpec,
    Method,
    build_requests,
    from_helm_adapter_spec,
    helm_train_examples,
)
from assay.adapters.helm_prompts import HELM_ADAPTER_DEFAULTS
from assay.core.records import Instance, Reference
from assay.scenarios import get_scenario
from assay.scenarios.helm_bridge import (
    VENV_ENV,
    HelmRuntime,
    HelmScenarioData,
    HelmUnavailableError,
    find_helm,
    helm_prompts,
    instance_from_helm,
    instances_from_helm,
    load_helm_scenario,
)

N_EVAL = 6  # eval instances compared per HELM scenario (half valid, half test)


def _gen(id_: str, text: str, answer: str, split: str = "test") -> Instance:
    return Instance(id_, text, (Reference(answer, True),), split=split)


def _mc(id_: str, text: str, choices: list[str], answer: str, split: str) -> Instance:
    return Instance(id_, text, tuple(Reference(c, c == answer) for c in choices), split=split)


# --- without HELM ---------------------------------------------------------------------------


def test_generation_layout_follows_helm_rules() -> None:
    helm_spec = {
        "method": "generation",
        "instructions": "Solve.",
        "input_prefix": "Q: ",
        "output_prefix": "A:\n",
        "instance_prefix": "\n\n",
        "global_prefix": "<<",
        "global_suffix": ">>",
        "max_train_instances": 1,
        "sample_train": False,
        "stop_sequences": ["\n\n"],
        "max_tokens": 7,
    }
    spec = from_helm_adapter_spec(helm_spec)
    train = [_gen("t", "1+1", "2", "train")]
    (request,) = build_requests(spec, [_gen("e", "2+2", "4")], train)
    # blocks: "Solve." | "Q: 1+1\n" + "A:\n" + "2" + "\n" | "Q: 2+2\n" + "A:"
    assert request.prompt == "<<Solve.\n\nQ: 1+1\nA:\n2\n\n\nQ: 2+2\nA:>>"
    assert request.stop == ("\n\n",) and request.max_tokens == 7


def test_joint_layout_follows_helm_rules() -> None:
    helm_spec = {
        "method": "multiple_choice_joint",
        "input_prefix": "Question: ",
        "reference_prefix": "(A) ",
        "output_prefix": "Answer: ",
        "max_train_instances": 1,
        "stop_sequences": ["\n"],
    }
    spec = from_helm_adapter_spec(helm_spec)
    train = [_mc("t", "Sky?", ["green", "blue"], "blue", "train")]
    (request,) = build_requests(
        spec, [_mc("e", "Grass?", ["red", "green"], "green", "test")], train
    )
    assert request.prompt == (
        "Question: Sky?\n(A) green\n(B) blue\nAnswer: B\n\n"
        "Question: Grass?\n(A) red\n(B) green\nAnswer:"
    )
    assert request.stop == ()  # HELM's joint adapter sends no stop sequences


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "multiple_choice_separate_original"),
        ("substitutions", [{"source": "\n", "target": ";\n"}]),
        ("reference_prefix_characters", ["1", "2"]),
        ("multi_label", True),
        ("reference_prefix", "a) "),
    ],
)
def test_helm_settings_without_an_assay_equivalent_name_the_field(field: str, value) -> None:
    helm_spec = {"method": "multiple_choice_joint", field: value}
    with pytest.raises(ValueError, match=rf"HELM adapter_spec\.{field}"):
        from_helm_adapter_spec(helm_spec)


def test_sequential_helm_examples_take_the_trials_block_without_wrapping() -> None:
    train = [_gen(f"t{i}", str(i), str(i), "train") for i in range(5)]
    # HELM slices train[n * trial : n * (trial + 1)]: with n = 2, trial 2 is train[4:6].
    assert helm_train_examples(train, 2, 1, sample_train=False) == train[2:4]
    assert helm_train_examples(train, 2, 2, sample_train=False) == train[4:5]


def test_new_layout_fields_keep_existing_template_ids() -> None:
    data = AdapterSpec().to_dict()
    assert not {"answer_separator", "global_suffix", "few_shot_scheme"} & set(data)
    changed = AdapterSpec(few_shot_scheme="helm")
    assert changed.to_dict()["few_shot_scheme"] == "helm"
    assert changed.template_id != AdapterSpec().template_id
    with pytest.raises(ValueError, match="few_shot_scheme"):
        AdapterSpec.from_dict({"few_shot_scheme": "lm-eval"})


def test_missing_helm_names_the_extra_and_the_variable(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(VENV_ENV, raising=False)
    if importlib.util.find_spec("helm") is not None:
        pytest.skip("HELM is importable here, so there is no missing-HELM error to see")
    with pytest.raises(HelmUnavailableError, match=rf"{VENV_ENV}.*make helm-venv"):
        get_scenario("helm_scenario", run_spec="synthetic_reasoning").load()
    monkeypatch.setenv(VENV_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(HelmUnavailableError, match=rf"{VENV_ENV}=.*nowhere"):
        find_helm()


def test_helm_dict_instances_convert_and_bad_ones_are_named() -> None:
    items = [
        {
            "input": {"text": "Q1"},
            "references": [
                {"output": {"text": "a"}, "tags": ["correct"]},
                {"output": {"text": "b"}, "tags": []},
            ],
            "split": "valid",
            "sub_split": None,
            "id": "x",
        },
        {"input": {"text": "Q2"}, "references": [], "split": "test", "id": None},
    ]
    first, second = instances_from_helm(items)
    # One id missing: every instance gets HELM runner's positional id.
    assert (first.id, second.id) == ("id0", "id1")
    assert first.references == (Reference("a", True), Reference("b", False))
    assert (first.split, first.sub_split, second.references) == ("valid", "", ())
    assert instance_from_helm(items[0]).id == "x"
    no_text = {
        "input": {"text": "", "multimedia_content": {"media_objects": [{}]}},
        "split": "test",
    }
    with pytest.raises(ValueError, match=r"HELM instance '#1': input has no text"):
        instances_from_helm([items[0], no_text])
    with pytest.raises(ValueError, match="id 'x' occurs more than once"):
        instances_from_helm([items[0], items[0]])


# --- with HELM --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> HelmRuntime:
    try:
        return find_helm()
    except HelmUnavailableError as exc:
        pytest.skip(f"needs HELM: {exc}")


def _in_helm(runtime: HelmRuntime, code: str):
    """Run ``code`` in the HELM interpreter; it prints one JSON value last."""
    done = subprocess.run(
        [runtime.python, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pattern_match(helm: HelmRuntime, tmp_path_factory) -> HelmScenarioData:
    out = tmp_path_factory.mktemp("helm")
    return load_helm_scenario("synthetic_reasoning", {"mode": "pattern_match"}, output_dir=out)


def _eval_and_train(data: HelmScenarioData) -> tuple[list[Instance], list[Instance]]:
    instances = data.data.instances
    valid = [i for i in instances if i.split == "valid"][: N_EVAL // 2]
    test = [i for i in instances if i.split == "test"][: N_EVAL // 2]
    return valid + test, [i for i in instances if i.split == "train"]


def _colour_items() -> tuple[list[Instance], list[Instance]]:
    colours = ["red", "green", "blue", "yellow", "purple"]
    # Labels (first correct text) red x4, green x3, blue x2, yellow x1, purple x1: a tie to
    # break by HELM's shuffle, and labels with several examples to draw from at random.
    answers = ["red", "green", "blue", "red", "green", "red", "yellow", "blue", "red", "green"]
    answers.append("purple")
    train = [
        _mc(f"t{i}", f"Colour of thing {i}?", colours[i % 5 :] + colours[: i % 5], a, "train")
        for i, a in enumerate(answers)
    ]
    evaluated = [
        _mc(f"e{i}", f"Colour of item {i}?", colours[::-1][: 2 + i], colours[::-1][1 + i], "test")
        for i in range(3)
    ]
    return evaluated, train


JOINT_SPECS = [
    {
        "method": "multiple_choice_joint",
        "instructions": "The following are multiple choice questions about colours.",
        "input_prefix": "Question: ",
        "input_suffix": "\n",
        "output_prefix": "Answer: ",
        "max_train_instances": 4,
        "num_train_trials": 3,
        "max_tokens": 1,
    },
    {
        "method": "multiple_choice_joint",
        "global_prefix": "### ",
        "global_suffix": " ###",
        "input_prefix": "",
        "reference_prefix": "(A) ",
        "output_prefix": "Answer:\n",
        "instance_prefix": "\n\n",
        "max_train_instances": 3,
        "num_train_trials": 2,
        "sample_train": False,
    },
]


@pytest.fixture(scope="module")
def helm_rendered(helm: HelmRuntime, pattern_match: HelmScenarioData):
    """HELM's prompts for the pattern-match run spec (2 trials) and both joint specs."""
    evaluated, train = _eval_and_train(pattern_match)
    generation = {**pattern_match.helm_adapter_spec, "num_train_trials": 2}
    colours_eval, colours_train = _colour_items()
    cases = [(generation, train + evaluated)]
    cases += [(spec, colours_train + colours_eval) for spec in JOINT_SPECS]
    return helm_prompts(cases)


def test_helm_scenario_converts_pattern_match(
    helm: HelmRuntime, pattern_match: HelmScenarioData, tmp_path
) -> None:
    version = _in_helm(
        helm, "import importlib.metadata as m, json; print(json.dumps(m.version('crfm-helm')))"
    )
    data = pattern_match.data
    assert data.revision == f"crfm-helm=={version}" == f"crfm-helm=={pattern_match.helm_version}"
    assert pattern_match.scenario_class.endswith("SyntheticReasoningScenario")
    assert {i.split for i in data.instances} == {"train", "valid", "test"}
    assert [i.id for i in data.instances[:3]] == ["id0", "id1", "id2"]
    for instance in data.instances[:50]:
        # "Rules: r1 | r2 | r3 | r4 | Result: …": the one gold reference is among the rules.
        rules = instance.input.split(" | Result: ")[0].removeprefix("Rules: ").split(" | ")
        assert len(instance.gold_texts) == 1 and instance.gold_texts[0] in rules
    # Through the scenario registry, in a fresh HELM process: the same data.
    again = get_scenario(
        "helm_scenario",
        run_spec="synthetic_reasoning",
        args={"mode": "pattern_match"},
        output_dir=str(tmp_path),
    ).load()
    assert again.digest == data.digest and again.revision == data.revision


def test_generation_prompts_are_helms_bytes(pattern_match: HelmScenarioData, helm_rendered):
    evaluated, train = _eval_and_train(pattern_match)
    theirs = helm_rendered[0]
    spec = dataclasses.replace(pattern_match.adapter_spec(), num_trials=2)
    ours = build_requests(spec, evaluated, train)
    assert [(p.instance_id, p.trial) for p in theirs] == [(r.instance_id, r.trial) for r in ours]
    assert len(theirs) == 2 * N_EVAL
    assert all(p.num_train_instances == 5 and not p.truncated for p in theirs)
    assert [r.prompt for r in ours] == [p.prompt for p in theirs]
    assert {r.stop for r in ours} == {("\n",)} and {r.max_tokens for r in ours} == {50}


@pytest.mark.parametrize("case", range(len(JOINT_SPECS)))
def test_joint_prompts_are_helms_bytes(helm_rendered, case: int) -> None:
    evaluated, train = _colour_items()
    theirs = helm_rendered[1 + case]
    spec = from_helm_adapter_spec(JOINT_SPECS[case])
    assert spec.method is Method.MULTIPLE_CHOICE_JOINT
    ours = build_requests(spec, evaluated, train)
    assert [(p.instance_id, p.trial) for p in theirs] == [(r.instance_id, r.trial) for r in ours]
    assert not any(p.truncated for p in theirs)
    assert [r.prompt for r in ours] == [p.prompt for p in theirs]


def test_helm_defaults_table_matches_helm(helm: HelmRuntime) -> None:
    defaults = _in_helm(
        helm,
        "import dataclasses, json\n"
        "from helm.benchmark.adaptation.adapter_spec import AdapterSpec\n"
        "print(json.dumps(dataclasses.asdict(AdapterSpec())))",
    )
    assert {k: defaults[k] for k in HELM_ADAPTER_DEFAULTS} == HELM_ADAPTER_DEFAULTS


def test_instances_built_by_helm_convert(helm: HelmRuntime) -> None:
    made = _in_helm(
        helm,
        "import dataclasses, json\n"
        "from helm.benchmark.scenarios.scenario import (\n"
        "    CORRECT_TAG, VALID_SPLIT, TEST_SPLIT, Input, Instance, Output, Reference)\n"
        "items = [\n"
        "    Instance(Input(text='Is water wet?'), references=[\n"
        "        Reference(Output(text='yes'), tags=[CORRECT_TAG]),\n"
        "        Reference(Output(text='no'), tags=[])],\n"
        "        split=VALID_SPLIT, sub_split='physics', id='q1'),\n"
        "    Instance(Input(text='2+2?'), references=[\n"
        "        Reference(Output(text='4'), tags=[CORRECT_TAG]),\n"
        "        Reference(Output(text='four'), tags=[CORRECT_TAG])], split=TEST_SPLIT),\n"
        "]\n"
        "print(json.dumps({'items': [dataclasses.asdict(i) for i in items],\n"
        "    'correct': [[r.is_correct for r in i.references] for i in items]}))",
    )
    water, four = instances_from_helm(made["items"])
    assert [[r.correct for r in i.references] for i in (water, four)] == made["correct"]
    assert (water.id, water.input, water.split, water.sub_split) == (
        "id0",
        "Is water wet?",
        "valid",
        "physics",
    )
    assert (four.id, four.split, four.sub_split, four.gold_texts) == (
        "id1",
        "test",
        "",
        ["4", "four"],
    )
    assert instance_from_helm(made["items"][0]).id == "q1"
