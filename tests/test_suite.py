"""The suite file: default suite limits, prompt variants and custom-file column mappings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from assay.adapters import Method
from assay.core.records import RequestKind
from assay.evaluate.suite import load_suite, parse_suite
from assay.scenarios import split


def test_default_suite_keeps_its_keys_and_exercises_every_method_within_limits() -> None:
    suite = load_suite()
    assert suite.keys[:2] == ["arithmetic", "facts-mc"]
    methods = {spec.method for key in suite.keys for spec in suite[key].adapters}
    assert methods == set(Method)
    for key in suite.keys[2:]:  # the entries added for the offline demo stay small
        config = suite[key]
        instances = config.build().load().instances
        evaluated = split(instances, config.eval_split)[: config.max_instances]
        assert 1 <= len(evaluated) <= 40, key
        requests = config.build_requests(evaluated, split(instances, config.train_split))
        assert {r.template_id for r in requests} == {s.template_id for s in config.adapters}
        # Tokens the entry may generate per version: short answers, or the few sampled
        # stories the bias and toxicity families read.
        budget = sum(r.max_tokens for r in requests if r.kind is RequestKind.GENERATE)
        assert budget <= 2400, key
        assert max(len(r.prompt) for r in requests) < 600, key
    # Toxicity has a scorer, and HELM's aggregates over k samples a sampled entry to read.
    assert suite.toxicity is not None and suite.toxicity.classifier == "alt-profanity-check"
    sampled = [k for k in suite.keys if suite[k].adapter.num_samples > 1]
    assert sampled == ["stories"] and suite["stories"].adapter.temperature > 0


def _suite(entry: dict) -> dict:
    return {"scenarios": {"quiz": entry}}


def test_variants_override_the_base_adapter() -> None:
    suite = parse_suite(
        _suite(
            {
                "scenario": "arithmetic_qa",
                "args": {"n_test": 3, "n_train": 4},
                "adapter": {"num_train": 2, "variant": "2-shot", "max_tokens": 4},
                "variants": [
                    {"variant": "zero-shot", "num_train": 0},
                    {"variant": "instructed", "instructions": "Compute."},
                ],
            }
        )
    )
    config = suite["quiz"]
    base, zero, instructed = config.adapters
    assert (zero.num_train, zero.max_tokens) == (0, 4)  # unspecified fields come from the base
    assert (instructed.num_train, instructed.instructions) == (2, "Compute.")
    data = config.build().load().instances
    requests = config.build_requests(split(data, "test"), split(data, "train"))
    by_template = {r.template_id for r in requests}
    assert by_template == {base.template_id, zero.template_id, instructed.template_id}
    assert len(requests) == 9


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"variant": "x"}, "expected a list"),
        ([{"num_train": 1}], r"variants\[0\]: each variant needs a 'variant' name"),
        ([{"variant": "default"}], "duplicate variant name"),
        ([{"variant": "v", "num_shots": 1}], r"variants\[0\]: unknown adapter field"),
    ],
)
def test_bad_variants_name_the_entry(variants: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_suite(_suite({"scenario": "facts_mc", "variants": variants}), "s.yaml")


def test_custom_file_columns_in_the_suite(tmp_path: Path) -> None:
    data = tmp_path / "quiz.jsonl"
    data.write_text(json.dumps({"q": "2+2?", "opts": ["4", "5"], "gold": 0, "d": "us"}) + "\n")
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            _suite(
                {
                    "scenario": "custom_file",
                    "args": {"path": str(data)},
                    "columns": {
                        "input": "q",
                        "choices": "opts",
                        "answer_index": "gold",
                        "groups": ["d"],
                    },
                    "adapter": {"method": "multiple_choice_separate"},
                }
            )
        )
    )
    config = load_suite(suite_file)["quiz"]
    json.dumps(config.args)  # args stay plain data
    (instance,) = config.build().load().instances
    assert instance.gold_texts == ["4"] and instance.groups == {"d": "us"}
    assert config.metric == "acc"


def test_bad_column_mapping_is_refused_when_the_suite_is_read() -> None:
    entry = {"scenario": "custom_file", "args": {"path": "x.jsonl"}, "columns": {"text": "q"}}
    with pytest.raises(ValueError, match=r"s\.yaml: scenarios\.quiz\.columns: unknown key"):
        parse_suite(_suite(entry), "s.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["not", "a", "mapping"], r"^s\.yaml: expected a mapping with a 'scenarios' mapping$"),
        ({"scenarios": []}, r"^s\.yaml: expected a mapping with a 'scenarios' mapping$"),
        (_suite(3), r"^s\.yaml: scenarios\.quiz: expected a mapping with a 'scenario' name$"),
        (_suite({"args": {}}), r"^s\.yaml: scenarios\.quiz: expected a mapping with a 'scenario'"),
        (_suite({"scenario": 5}), r"^s\.yaml: scenarios\.quiz\.scenario: expected a string$"),
        (
            _suite({"scenario": "facts_mc", "max_instances": "3"}),
            r"^s\.yaml: scenarios\.quiz\.max_instances: expected a positive integer$",
        ),
        (
            _suite({"scenario": "facts_mc", "max_instances": 0}),
            r"^s\.yaml: scenarios\.quiz\.max_instances: expected a positive integer$",
        ),
        (_suite({"scenario": "facts_mc", "args": [1]}), r"scenarios\.quiz\.args: expected a map"),
        (
            _suite({"scenario": "facts_mc", "eval_split": 1}),
            r"^s\.yaml: scenarios\.quiz\.eval_split: expected a string$",
        ),
        (
            _suite({"scenario": "facts_mc", "zz": 1, "aa": 2}),
            r"^s\.yaml: scenarios\.quiz: unknown field\(s\): aa, zz$",
        ),
    ],
)
def test_malformed_suite_files_name_the_file_and_key(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_suite(data, "s.yaml")
