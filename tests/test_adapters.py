"""Adapters: prompt layout per method, few-shot sampling, prompt budget and digest stability."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from assay.adapters import (
    UNCONDITIONED,
    AdapterSpec,
    Method,
    build_requests,
    build_variant_requests,
    fit_prompt,
    joint_answer_map,
    select_train_examples,
)
from assay.core.records import Instance, Reference, RequestKind


def _mc(id_: str, question: str, choices: list[str], correct: int, split: str = "test"):
    refs = tuple(Reference(c, i == correct) for i, c in enumerate(choices))
    return Instance(id_, question, refs, split=split)


def test_generation_prompt_layout_is_exactly_the_spec_fields() -> None:
    spec = AdapterSpec(
        instructions="Add.",
        input_prefix="Q: ",
        input_suffix="\n",
        output_prefix="A:",
        output_suffix="\n",
        instance_separator="\n",
        global_prefix="## ",
        num_train=1,
    )
    train = [Instance("t", "1+1", (Reference("2", True),), split="train")]
    (request,) = build_requests(spec, [Instance("e", "2+2", (Reference("4", True),))], train)
    assert request.prompt == "## Add.\nQ: 1+1\nA: 2\n\nQ: 2+2\nA:"
    assert request.kind is RequestKind.GENERATE and request.method == "generation"
    assert request.template_id == spec.template_id and request.max_tokens == spec.max_tokens


def test_joint_letters_choices_and_answers_with_the_letter() -> None:
    spec = AdapterSpec(method=Method.MULTIPLE_CHOICE_JOINT, num_train=1, max_tokens=1)
    train = [_mc("t", "Sky colour?", ["green", "blue"], 1, "train")]
    item = _mc("e", "Grass colour?", ["red", "green", "blue"], 1)
    (request,) = build_requests(spec, [item], train)
    assert request.prompt == (
        "Question: Sky colour?\nA. green\nB. blue\nAnswer: B\n\n"
        "Question: Grass colour?\nA. red\nB. green\nC. blue\nAnswer:"
    )
    assert request.kind is RequestKind.GENERATE and request.method == "multiple_choice_joint"
    assert joint_answer_map(item) == {"A": 0, "B": 1, "C": 2}


def test_joint_reference_prefix_letter_placeholder() -> None:
    spec = AdapterSpec(method=Method.MULTIPLE_CHOICE_JOINT, reference_prefix="(A) ")
    (request,) = build_requests(spec, [_mc("e", "Q", ["x", "y"], 0)])
    assert "(A) x\n(B) y\n" in request.prompt


def test_separate_and_calibrated_log_likelihood_requests() -> None:
    item = _mc("e", "Grass colour?", ["red", "green"], 1)
    (separate,) = build_requests(AdapterSpec(method=Method.MULTIPLE_CHOICE_SEPARATE), [item])
    assert separate.kind is RequestKind.LOGLIKELIHOOD
    assert separate.continuations == (" red", " green")
    main, prior = build_requests(
        AdapterSpec(method=Method.MULTIPLE_CHOICE_CALIBRATED, output_prefix="Answer:"), [item]
    )
    assert main.prompt == separate.prompt and main.part == ""
    assert prior.prompt == "Answer:" and prior.part == UNCONDITIONED
    assert prior.continuations == main.continuations
    assert {main.template_id, main.trial} == {prior.template_id, prior.trial}


def test_language_modeling_windows_cover_each_character_once() -> None:
    text = "abcdefghijklmnopqrstuvwxyz0123456789"
    spec = AdapterSpec(method=Method.LANGUAGE_MODELING, lm_window_chars=10, lm_context_chars=4)
    requests = build_requests(spec, [Instance("doc", text, ())])
    assert "".join(r.continuations[0] for r in requests) == text
    assert [r.part for r in requests] == ["window-0", "window-1", "window-2", "window-3"]
    # Each window's prompt is the text just before it, at most lm_context_chars long.
    assert [r.prompt for r in requests] == ["", "ghij", "qrst", "0123"]
    assert all(r.kind is RequestKind.LOGLIKELIHOOD for r in requests)


def _yes_no_pool() -> list[Instance]:
    labels = ["yes"] * 6 + ["no"] * 2 + ["maybe"]
    return [
        Instance(f"t{i}", f"q{i}", (Reference(label, True),), split="train")
        for i, label in enumerate(labels)
    ]


def test_few_shot_is_class_balanced_round_robin() -> None:
    pool = _yes_no_pool()
    for trial in range(5):
        # Labels by frequency: yes (6), no (2), maybe (1); round-robin from the most frequent.
        three = select_train_examples(pool, 3, trial)
        assert Counter(e.gold_texts[0] for e in three) == {"yes": 1, "no": 1, "maybe": 1}
        six = select_train_examples(pool, 6, trial)
        # Rounds: yes,no,maybe | yes,no | yes → maybe and no run out, yes fills in.
        assert Counter(e.gold_texts[0] for e in six) == {"yes": 3, "no": 2, "maybe": 1}
        assert six[0].gold_texts == ["yes"] and len({e.id for e in six}) == 6


def test_few_shot_seeded_by_trial() -> None:
    pool = _yes_no_pool()
    assert select_train_examples(pool, 4, 1) == select_train_examples(pool, 4, 1)
    draws = {tuple(e.id for e in select_train_examples(pool, 4, t)) for t in range(6)}
    assert len(draws) > 1, "different trials draw different examples"
    in_order = select_train_examples(pool, 2, 1, balanced=False)
    assert [e.id for e in in_order] == ["t2", "t3"]


def test_trials_each_get_their_own_examples() -> None:
    spec = AdapterSpec(num_train=2, num_trials=3)
    requests = build_requests(spec, [Instance("e", "q", (Reference("a", True),))], _yes_no_pool())
    assert [r.trial for r in requests] == [0, 1, 2]
    assert len({r.prompt for r in requests}) > 1


def test_budget_drops_examples_from_the_end_then_cuts_the_input_start() -> None:
    train = [Instance(f"t{i}", f"ex{i}", (Reference("y", True),), split="train") for i in range(3)]
    item = Instance("e", "0123456789" * 3, (Reference("y", True),))
    base = AdapterSpec(num_train=3, sample_train=False)
    full = fit_prompt(base, item, train)
    example_len = len("Question: ex0\nAnswer: y\n\n")  # each example block is the same length
    assert not full.truncated and full.num_examples == 3

    fits_two = AdapterSpec(num_train=3, sample_train=False, max_prompt_chars=len(full.text) - 1)
    two = fit_prompt(fits_two, item, train)
    assert (two.num_examples, two.examples_dropped, two.input_chars_cut) == (2, 1, 0)
    assert "ex0" in two.text and "ex1" in two.text and "ex2" not in two.text
    assert len(two.text) == len(full.text) - example_len

    no_room = AdapterSpec(num_train=3, sample_train=False, max_prompt_chars=len(full.text) - 80)
    cut = fit_prompt(no_room, item, train)
    # All examples gone (3 * 25 chars), then 5 more characters off the input's start.
    assert (cut.num_examples, cut.input_chars_cut) == (0, 5)
    assert cut.text == "Question: " + item.input[5:] + "\nAnswer:"
    assert len(cut.text) == no_room.max_prompt_chars

    (request,) = build_requests(no_room, [item], train)
    assert request.truncated and request.prompt == cut.text
    (untouched,) = build_requests(base, [item], train)
    assert not untouched.truncated


def test_budget_reserves_room_for_the_longest_choice() -> None:
    item = _mc("e", "x" * 20, ["short", "a much longer choice"], 0)
    spec = AdapterSpec(method=Method.MULTIPLE_CHOICE_SEPARATE, max_prompt_chars=40)
    (request,) = build_requests(spec, [item])
    assert len(request.prompt) + len(" a much longer choice") <= 40 and request.truncated


def test_prompt_that_cannot_fit_is_an_error_naming_the_instance() -> None:
    spec = AdapterSpec(instructions="x" * 50, max_prompt_chars=20)
    with pytest.raises(ValueError, match=r"instance 'e'.*max_prompt_chars=20"):
        build_requests(spec, [Instance("e", "q", (Reference("a", True),))])


def test_variants_carry_their_own_template_ids() -> None:
    base = AdapterSpec(variant="zero-shot")
    terse = base.override({"variant": "terse", "instructions": "Be brief."})
    item = Instance("e", "q", (Reference("a", True),))
    requests = build_variant_requests([base, terse], [item])
    assert [r.template_id for r in requests] == [base.template_id, terse.template_id]
    assert requests[1].prompt.startswith("Be brief.\n")
    with pytest.raises(ValueError, match="share a template id"):
        build_variant_requests([base, base], [item])


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"here\.num_train: expected int"):
        AdapterSpec.from_dict({"num_train": "3"}, "here")
    with pytest.raises(ValueError, match="unknown adapter field"):
        AdapterSpec.from_dict({"num_shots": 3})
    with pytest.raises(ValueError, match="unknown method 'cloze'"):
        AdapterSpec.from_dict({"method": "cloze"})


_DIGEST_SCRIPT = """
import json
from assay.adapters import AdapterSpec, Method, build_requests
from assay.scenarios import get_scenario, split

data = get_scenario("facts_mc").load().instances
arith = get_scenario("arithmetic_qa", n_test=5, n_train=8).load().instances
out = []
for method in Method:
    spec = AdapterSpec(method=method, num_train=2, num_trials=2, variant=method.value)
    source = arith if method is Method.GENERATION else data[:5]
    train = split(arith, "train") if method is Method.GENERATION else data[5:9]
    for r in build_requests(spec, split(source, "test")[:5], train):
        out.append([r.template_id, r.prompt_digest, r.digest])
print(json.dumps(out))
"""


def test_prompts_are_byte_identical_across_processes() -> None:
    # Two fresh interpreters (different hash seeds) must produce the same prompts and ids.
    runs = [
        subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    first, second = (json.loads(r) for r in runs)
    assert first == second and len(first) > 20
    assert len({template for template, _, _ in first}) == len(Method)
