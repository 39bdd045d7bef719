"""The ifeval scorer and scenario: hand-made answers whose verdicts are worked out by hand from
IFEval's instruction definitions (both ways, strict and loose), the instruction-level ratio
against a hand count, and the scenario on the real IFEval prompts (tests/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.core.records import (
    Completion,
    Instance,
    ModelOutput,
    Reference,
    Request,
    RequestKind,
)
from assay.core.scorers import get_scorer
from assay.scenarios import DataFileError, get_scenario
from assay.scenarios.ifeval import instruction_spec
from assay.scoring.ifeval import INST_LOOSE, INST_STRICT, IFEval, follows
from assay.scoring.scorecard import score_partition
from assay.scoring.scorer_runs import EntryScorer

FIXTURE = (
    Path(__file__).parent / "fixtures" / "datasets" / "google__IFEval" / "default" / "train.jsonl"
)
END = "Is there anything else I can help with?"


def _instance(key: int, prompt: str, ids: list[str], kwargs: list[dict]) -> Instance:
    return Instance(str(key), prompt, (Reference(instruction_spec(key, ids, kwargs), True),))


def _answer(instance: Instance, text: str, sample: int = 0, temperature: float = 0.0):
    request = Request(
        instance.id,
        RequestKind.GENERATE,
        instance.input,
        template_id="t",
        method="generation",
        temperature=temperature,
        sample=sample,
    )
    return ModelOutput(request, Completion(text=text))


NO_COMMA = _instance(1, "Write without commas.", ["punctuation:no_comma"], [{}])
QUOTED = _instance(2, "Wrap it in quotes.", ["startend:quotation"], [{}])
ENDING = _instance(3, "End with the phrase.", ["startend:end_checker"], [{"end_phrase": END}])
LOWER = _instance(4, "All lowercase, please.", ["change_case:english_lowercase"], [{}])
JSON = _instance(5, "Answer in JSON.", ["detectable_format:json_format"], [{}])
TWO = _instance(
    6,
    "Fewer than 5 words, with a P.S.",
    ["length_constraints:number_words", "detectable_content:postscript"],
    [{"relation": "less than", "num_words": 5}, {"postscript_marker": "P.S."}],
)
HIGHLIGHTS = _instance(
    7,
    "Highlight two parts.",
    ["detectable_format:number_highlighted_sections"],
    [{"num_highlights": 2}],
)

# (instance, answer, strict per instruction, loose per instruction), each worked out by hand.
CASES = [
    (NO_COMMA, "Hello world and goodbye.", [True], [True]),
    (NO_COMMA, "Hello, world.", [False], [False]),  # a comma survives every loose variant
    (NO_COMMA, "", [False], [False]),  # an empty answer follows nothing, not even "no comma"
    (NO_COMMA, "  \n ", [False], [False]),
    (QUOTED, '"A quoted answer."', [True], [True]),
    (QUOTED, "An answer without quotes.", [False], [False]),
    # Loose drops the first line: the quotes then wrap what is left.
    (QUOTED, 'Here you go:\n"A quoted answer."', [False], [True]),
    (ENDING, f"Done. {END}", [True], [True]),
    # Markdown bold after the phrase: strict sees "?**", loose removes the asterisks.
    (ENDING, f"Done. **{END}**", [False], [True]),
    (ENDING, f"{END} Thanks!", [False], [False]),
    (LOWER, "hello there my friend, i hope you are doing well today.", [True], [True]),
    # A capitalised preamble line: strict fails, loose drops the first line.
    (LOWER, "Sure!\nhello there my friend, i hope you are doing well today.", [False], [True]),
    (LOWER, "Hello there my friend, i hope you are doing well today.", [False], [False]),
    (JSON, '{"answer": 42}', [True], [True]),
    (JSON, '```json\n{"answer": 42}\n```', [True], [True]),  # lm-eval strips the fences
    (JSON, "{answer: 42}", [False], [False]),
    # Words are runs of \w: "Short answer here. P.S. ok" has Short, answer, here, P, S, ok
    # (6, not fewer than 5); the P.S. line is there. Loose checks each instruction on every
    # variant: without the last line, "Short answer here." has 3 words.
    (TWO, "Short answer here.\nP.S. ok", [False, True], [True, True]),
    (TWO, "Short.\nP.S. ok", [True, True], [True, True]),  # Short, P, S, ok: 4 words
    (TWO, "Short.\nok", [True, False], [True, False]),  # no postscript
    (HIGHLIGHTS, "This is *one* and *two*.", [True], [True]),
    (HIGHLIGHTS, "This is *one* only.", [False], [False]),
    (HIGHLIGHTS, "This is ** and *one*.", [False], [False]),  # an empty highlight counts not
]


@pytest.mark.parametrize(
    ("instance", "text", "strict", "loose"),
    CASES,
    ids=[f"{c[0].id}-{n}" for n, c in enumerate(CASES)],
)
def test_verdicts_match_the_hand_worked_ones(instance, text, strict, loose):
    verdict = follows(instance, text)
    assert verdict["inst_level_strict_acc"] == strict
    assert verdict["inst_level_loose_acc"] == loose
    assert verdict["prompt_level_strict_acc"] == all(strict)
    assert verdict["prompt_level_loose_acc"] == all(loose)


def test_the_partition_scorecard_pools_instructions_as_lm_eval_does():
    # Two prompts: TWO (2 instructions) answered with 1 followed, NO_COMMA (1) followed.
    # Prompt level: (0 + 1) / 2 = 0.5. Instruction level pools: (1 + 1) / (2 + 1) = 2/3, where
    # a mean of per-prompt fractions would give (1/2 + 1) / 2 = 0.75.
    outputs = [
        _answer(TWO, "Short answer here.\nP.S. ok"),
        _answer(NO_COMMA, "Hello world."),
    ]
    scores = score_partition([TWO, NO_COMMA], outputs, scorer=EntryScorer.named("ifeval"))
    card = {(r.metric, r.group, r.perturbation): r for r in scores.card}
    assert card[("prompt_level_strict_acc", "", "")].mean == 0.5
    assert card[(INST_STRICT, "", "")].mean == pytest.approx(2 / 3)
    assert card[(INST_STRICT, "", "")].count == 2
    # Loose follows both of TWO's (the word count without the P.S. line): (2 + 1) / 3.
    assert card[(INST_LOOSE, "", "")].mean == 1.0
    assert card[("prompt_level_loose_acc", "", "")].mean == 1.0
    low, high = card[(INST_STRICT, "", "")].ci_low, card[(INST_STRICT, "", "")].ci_high
    # Resampling two prompts: each resample's ratio is 1/2, 2/3 or 1.
    assert 0.5 <= low <= 2 / 3 <= high <= 1.0
    assert card[("instructions", "", "")].mean == 1.5
    by_instance = {(s.instance_id, s.metric): s.value for s in scores.stats}
    assert by_instance[("6", "inst_level_strict_followed")] == 1.0
    assert by_instance[("6", "instructions")] == 2.0


def test_sampled_answers_are_averaged_per_prompt():
    outputs = [
        _answer(NO_COMMA, "Hello world.", 0, 0.7),
        _answer(NO_COMMA, "Hello, world.", 1, 0.7),
        _answer(NO_COMMA, "Hi there.", 2, 0.7),
        _answer(NO_COMMA, "Hi, there.", 3, 0.7),
    ]
    stats = IFEval().score([NO_COMMA], outputs, None).stats
    values = {s.metric: s.value for s in stats}
    assert values["prompt_level_strict_acc"] == 0.5
    assert values["inst_level_strict_followed"] == 0.5
    assert values["instructions"] == 1.0


def test_a_prompt_that_repeats_itself_is_checked_against_its_own_text():
    prompt = "Say hi. First repeat the request word for word without change."
    spec = [{"prompt_to_repeat": "Say hi."}]
    repeat = _instance(8, prompt, ["combination:repeat_prompt"], spec)
    assert follows(repeat, "Say hi. Hi!")["prompt_level_strict_acc"] is True
    assert follows(repeat, "Hi! Say hi.")["prompt_level_strict_acc"] is False


def test_unknown_instructions_and_bad_references_name_the_instance():
    odd = _instance(9, "?", ["detectable_format:sonnet"], [{}])
    with pytest.raises(ValueError, match=r"instance '9'.*'detectable_format:sonnet'"):
        follows(odd, "text")
    plain = Instance("10", "?", ())
    with pytest.raises(ValueError, match=r"instance '10': an IFEval instance has one reference"):
        follows(plain, "text")
    broken = Instance("11", "?", (Reference("not json", True),))
    with pytest.raises(ValueError, match=r"instance '11'.*not an IFEval instruction spec"):
        follows(broken, "text")


def test_a_broken_instance_fails_alone_in_the_partition():
    broken = Instance("12", "?", ())
    outputs = [_answer(NO_COMMA, "Hello world."), _answer(broken, "x")]
    scores = score_partition([NO_COMMA, broken], outputs, scorer=EntryScorer.named("ifeval"))
    assert [f.instance_id for f in scores.scorer_run.failures] == ["12"]
    assert "ifeval" in scores.scorer_run.failures[0].message
    card = {(r.metric, r.group): r for r in scores.card}
    assert card[("prompt_level_strict_acc", "")].mean == 1.0
    assert card[("prompt_level_strict_acc", "")].count == 1


def test_the_scorer_is_built_in_and_takes_no_arguments():
    loaded = get_scorer("ifeval")
    assert loaded.metric == "prompt_level_strict_acc"
    assert loaded.ratios == {
        INST_STRICT: ("inst_level_strict_followed", "instructions"),
        INST_LOOSE: ("inst_level_loose_followed", "instructions"),
    }
    with pytest.raises(ValueError, match="takes no arguments"):
        loaded.validate({"strict": True}, "suite.yaml: scenarios.x.scorer_args")


def test_the_scenario_reads_the_real_prompts():
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    data = get_scenario("ifeval", data_files={"test": str(FIXTURE)}).load()
    assert [i.id for i in data.instances] == [str(r["key"]) for r in rows]
    assert len(data.instances) == 69
    for instance, row in zip(data.instances, rows, strict=True):
        assert instance.input == row["prompt"]
        assert instance.split == "test"
        spec = json.loads(instance.gold_texts[0])
        assert spec == {k: row[k] for k in ("key", "instruction_id_list", "kwargs")}
    ids = {i for r in rows for i in r["instruction_id_list"]}
    assert len(ids) == 25  # every IFEval instruction type


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "instruction_id_list": [], "kwargs": []}, "field 'instruction_id_list'"),
        (
            {"prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []},
            r"field 'kwargs': expected a list of 1 mappings",
        ),
        (
            {"prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [[1]]},
            r"field 'kwargs\[0\]'",
        ),
        ({"prompt": "", "instruction_id_list": ["a:b"], "kwargs": [{}]}, "field 'prompt'"),
        ({"prompt": "p", "kwargs": [{}]}, "missing field 'instruction_id_list'"),
    ],
)
def test_bad_rows_are_refused_naming_the_row_and_field(tmp_path, row, message):
    good = {"key": 1, "prompt": "p", "instruction_id_list": ["a:b"], "kwargs": [{}]}
    path = tmp_path / "ifeval.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"key": 2, **row}) + "\n")
    with pytest.raises(DataFileError, match=rf"ifeval: {path}: row 2: .*{message}"):
        get_scenario("ifeval", data_files={"test": str(path)}).load()


def test_ratio_rows_pool_instances_and_say_why_when_undefined():
    from assay.core.records import InstanceStat
    from assay.scoring.summary import ratio_rows

    def stat(instance, metric, value, trial=0, perturbation=""):
        return InstanceStat(instance, metric, value, perturbation=perturbation, trial=trial)

    stats = [
        stat("a", "hits", 1.0),
        stat("a", "n", 2.0),
        # two trials of "b": averaged first, 2 of 3
        stat("b", "hits", 1.0, trial=0),
        stat("b", "hits", 3.0, trial=1),
        stat("b", "n", 3.0, trial=0),
        stat("b", "n", 3.0, trial=1),
        stat("c", "hits", 5.0),  # no denominator: left out
        stat("a", "hits", 0.0, perturbation="typos"),
        stat("a", "n", 0.0, perturbation="typos"),
    ]
    rows = {(r.metric, r.perturbation): r for r in ratio_rows(stats, {"rate": ("hits", "n")})}
    assert rows[("rate", "")].mean == pytest.approx((1 + 2) / (2 + 3))
    assert rows[("rate", "")].count == 2
    # Resamples of {a: 1/2, b: 2/3} give 1/2, 3/5 or 2/3.
    assert 0.5 <= rows[("rate", "")].ci_low <= 0.6 <= rows[("rate", "")].ci_high <= 2 / 3
    assert (
        rows[("rate", "typos")].reason == "the denominators of rate sum to 0: a ratio is undefined"
    )


def test_a_check_lm_eval_draws_at_random_is_the_same_on_every_run():
    import random

    # IFEval row 1122: "at least 4 '#'"; lm-eval accepts only a-z and counts a random letter.
    hashtags = _instance(
        1122,
        "Include at least 4 hashtags, starting with '#'",
        ["keywords:letter_frequency"],
        [{"let_relation": "at least", "letter": "#", "let_frequency": 4}],
    )
    text = "#aaaa #bbbb #cccc #dddd #eeee"
    random.seed(1)
    before = random.getstate()
    verdicts = {json.dumps(follows(hashtags, text)) for _ in range(20)}
    assert len(verdicts) == 1
    assert random.getstate() == before  # the caller's random state is left alone


def test_a_suite_entry_is_generated_and_scored(tmp_path, model_cache_dir):
    from assay.evaluate.run import evaluate
    from assay.evaluate.suite import load_suite
    from assay.models.base import ModelSpec, ServingConfig
    from assay.models.bundled import BUNDLED_SOURCE
    from assay.models.transformers_backend import TransformersClient

    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        "scenarios:\n"
        "  ifeval:\n"
        "    scenario: ifeval\n"
        f"    args: {{data_files: {{test: {FIXTURE}}}}}\n"
        "    adapter: {method: generation, max_tokens: 12}\n"
        "    scorer: ifeval\n"
    )
    config = load_suite(suite_file)["ifeval"]
    assert config.metric == "prompt_level_strict_acc"
    instances = [i for i in config.build().load().instances if i.split == "test"][:4]
    spec = ModelSpec("m@v1", BUNDLED_SOURCE, ServingConfig(batch_size=4))
    done = evaluate(TransformersClient(spec, model_cache_dir), config, instances)
    assert len(done.outputs) == 4 and all(o.completion.ok for o in done.outputs)
    scorer = EntryScorer.named(config.scoring.name, config.scoring.args)
    scores = score_partition(instances, done.outputs, scorer=scorer)
    card = {r.metric: r for r in scores.card if not r.group and not r.perturbation}
    # Each figure is what lm-eval's checks say of the same answers, pooled as lm-eval pools.
    answers = {o.request.instance_id: o.completion.text for o in done.outputs}
    verdicts = [follows(i, answers[i.id]) for i in instances]
    for metric in ("prompt_level_strict_acc", "prompt_level_loose_acc"):
        assert card[metric].mean == sum(v[metric] for v in verdicts) / 4
    for metric in (INST_STRICT, INST_LOOSE):
        flat = [x for v in verdicts for x in v[metric]]
        assert card[metric].mean == sum(flat) / len(flat)
    assert "exact_match" not in card  # the scorer replaced reference matching


def test_without_lm_eval_the_check_says_how_to_install_it(monkeypatch):
    import sys

    from assay.scoring import ifeval as module

    module._lm_eval_checks.cache_clear()
    # A None entry makes the import fail as if lm-eval were not installed.
    monkeypatch.setitem(sys.modules, "lm_eval.tasks.ifeval.utils", None)
    try:
        with pytest.raises(module.IFEvalUnavailable, match=r"pip install 'assay\[lmeval\]'"):
            IFEval().check(None)
        outputs = [_answer(NO_COMMA, "Hello world.")]
        with pytest.raises(
            module.IFEvalUnavailable, match="raised by the check of scorer 'ifeval'"
        ):
            score_partition([NO_COMMA], outputs, scorer=EntryScorer.named("ifeval"))
    finally:
        module._lm_eval_checks.cache_clear()
