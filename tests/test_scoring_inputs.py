"""What scoring is fed: suite perturbations and toxicity settings, perturbed inputs and the
requests built from them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from assay.core.records import Instance, Reference
from assay.evaluate.run import (
    PERTURBED_SCHEMA,
    perturb_eval_instances,
    perturbed_from_table,
    perturbed_requests,
)
from assay.evaluate.suite import load_suite, parse_suite


def _suite(entry: dict, **top) -> dict:
    return {"scenarios": {"quiz": {"scenario": "arithmetic_qa", **entry}}, **top}


def test_perturbation_specs_are_normalized_in_order() -> None:
    suite = parse_suite(_suite({"perturbations": ["lowercase", "typos:prob=0.1", "dialect"]}))
    assert suite["quiz"].perturbations == ("lowercase", "typos:prob=0.1", "dialect:prob=1.0")
    assert [p.family for p in suite["quiz"].build_perturbations()] == [
        "robustness",
        "robustness",
        "fairness",
    ]


@pytest.mark.parametrize(
    ("perturbations", "message"),
    [
        (["tpyos"], r"s\.yaml: scenarios\.quiz\.perturbations\[0\]: unknown perturbation"),
        (["lowercase", "typos:prob=2"], r"perturbations\[1\]: .*prob must be between 0 and 1"),
        (["typos:p"], r"perturbations\[0\]: argument 'p'"),
        (["lowercase", "lowercase"], r"perturbations\[1\]: duplicate perturbation"),
        ("lowercase", r"scenarios\.quiz\.perturbations: expected a list"),
        ([3], r"perturbations\[0\]: expected a spec string"),
    ],
)
def test_bad_perturbations_name_the_file_and_key(perturbations, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_suite(_suite({"perturbations": perturbations}), "s.yaml")


def test_toxicity_setting() -> None:
    suite = parse_suite(_suite({}, toxicity={"classifier_dir": "/models/tox", "toxic_label": "T"}))
    assert (suite.toxicity.classifier_dir, suite.toxicity.toxic_label) == ("/models/tox", "T")
    assert parse_suite(_suite({})).toxicity is None
    with pytest.raises(ValueError, match=r"s\.yaml: toxicity: expected a mapping"):
        parse_suite(_suite({}, toxicity="yes"), "s.yaml")
    with pytest.raises(ValueError, match=r"s\.yaml: toxicity: unknown field\(s\): scorer"):
        parse_suite(_suite({}, toxicity={"classifier_dir": "x", "scorer": "y"}), "s.yaml")
    with pytest.raises(ValueError, match=r"toxicity: give exactly one of 'classifier', 'class"):
        parse_suite(_suite({}, toxicity={"classifier_dir": "x", "judge": "m@v1"}), "s.yaml")
    with pytest.raises(ValueError, match=r"s\.yaml: unknown top-level field\(s\): scenario"):
        parse_suite({**_suite({}), "scenario": {}}, "s.yaml")


def _items() -> list[Instance]:
    return [
        Instance("a", "What is 1 + 1?", (Reference("2", True),)),
        Instance("b", "what is 2 + 2?", (Reference("4", True),)),  # already lowercase
        Instance("c", "What is 3 + 3?", (Reference("6", True),)),
    ]


def test_perturbed_inputs_drop_and_count_unchanged_and_round_trip() -> None:
    config = parse_suite(_suite({"perturbations": ["lowercase"]}))["quiz"]
    perturbed = perturb_eval_instances(config, _items())
    assert [(r.original_id, r.input) for r in perturbed.rows] == [
        ("a", "what is 1 + 1?"),
        ("c", "what is 3 + 3?"),
    ]
    assert perturbed.unchanged == {"lowercase": 1}
    table = perturbed.table()
    assert table.schema == PERTURBED_SCHEMA
    back = perturbed_from_table(table, _items())
    assert [(p.original_id, p.perturbation, p.family, p.input) for p in back] == [
        (r.original_id, r.perturbation, r.family, r.input) for r in perturbed.rows
    ]
    assert back[0].instance.references == _items()[0].references  # joined to the original


def test_a_perturbed_row_of_an_unknown_instance_is_named() -> None:
    table = pa.table(
        {
            "id": ["a", "zz"],
            "perturbation": ["lowercase"] * 2,
            "family": ["robustness"] * 2,
            "input": ["x", "y"],
        },
        schema=PERTURBED_SCHEMA,
    )
    with pytest.raises(ValueError, match=r"perturbed_instances row 1: id 'zz'"):
        perturbed_from_table(table, _items())
    with pytest.raises(ValueError, match=r"lacks column\(s\) family"):
        perturbed_from_table(table.drop(["family"]), _items())


def test_perturbed_requests_use_the_base_layout_and_the_evaluated_instances() -> None:
    entry = {
        "args": {"n_test": 3, "n_train": 2},
        "adapter": {"method": "generation", "variant": "base", "num_train": 1},
        "variants": [{"variant": "zero-shot", "num_train": 0}],
        "perturbations": ["lowercase", "extra_spaces:max_spaces=2"],
    }
    config = parse_suite(_suite(entry))["quiz"]
    data = config.build().load().instances
    test = [i for i in data if i.split == "test"]
    train = [i for i in data if i.split == "train"]
    perturbed = perturb_eval_instances(config, test).rows
    requests = perturbed_requests(config, perturbed, train, evaluated=test[:2])
    # Only the first two instances, base template, in suite order of perturbations.
    assert {r.instance_id for r in requests} <= {i.id for i in test[:2]}
    assert {r.template_id for r in requests} == {config.adapter.template_id}
    specs = [r.perturbation for r in requests]
    assert specs == sorted(specs, key=list(config.perturbations).index)
    kept = {(p.original_id, p.perturbation): p.input for p in perturbed}
    kept = {k: v for k, v in kept.items() if k[0] in {i.id for i in test[:2]}}
    assert len(requests) == len(kept)
    for request in requests:
        assert kept[(request.instance_id, request.perturbation)] in request.prompt
        assert train[0].input in request.prompt  # few-shot examples stay unperturbed


def test_default_suite_perturbations_stay_within_the_demo_budget() -> None:
    """The default suite's perturbed requests add at most ~250 per model version."""
    suite = load_suite()
    total = 0
    for key in suite.keys:
        config = suite[key]
        if not config.perturbations:
            continue
        instances = config.build().load().instances
        evaluated = [i for i in instances if i.split == config.eval_split][: config.max_instances]
        rows = perturb_eval_instances(config, evaluated).rows
        total += len(perturbed_requests(config, rows, evaluated=evaluated))
    assert 0 < total <= 250
