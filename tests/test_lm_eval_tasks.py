"""``scenario: lm_eval`` suite entries: groups, refusals and bad input, without a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from assay.evaluate.suite import parse_suite
from assay.scenarios.files import DataFileError
from assay.scenarios.lm_eval_tasks import ALLOW_INCLUDE_ENV, LmEvalTaskError, task_index

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "datasets"


def _suite(entry: dict, base_dir: Path = REPO) -> dict:
    return parse_suite({"scenarios": {"x": entry}}, "s.yaml", base_dir).scenarios


def test_a_group_is_one_entry_per_task_in_lm_evals_order() -> None:
    # lm-eval's own group file lists BBH's tasks; the suite keeps that order.
    group_file = task_index()["bbh"].yaml_path
    listed = yaml.safe_load(Path(group_file).read_text())["task"]
    entries = _suite({"scenario": "lm_eval", "args": {"task": "bbh", "data_dir": str(DATA)}})
    assert list(entries) == [f"x.{task}" for task in listed]
    assert {c.lm_eval.group for c in entries.values()} == {"bbh"}
    # MMLU: four category groups over tags, 57 subjects in all.
    mmlu = _suite({"scenario": "lm_eval", "args": {"task": "mmlu"}})
    assert len(mmlu) == 57 and "x.mmlu_anatomy" in mmlu
    assert {c.primary_metric for c in mmlu.values()} == {"acc"}


def test_a_group_can_be_narrowed_to_some_tasks() -> None:
    entries = _suite(
        {
            "scenario": "lm_eval",
            "args": {"task": "bbh", "tasks": ["bbh_cot_fewshot_date_understanding"]},
        }
    )
    assert list(entries) == ["x.bbh_cot_fewshot_date_understanding"]
    assert entries["x.bbh_cot_fewshot_date_understanding"].primary_metric == (
        "exact_match.get-answer"
    )
    with pytest.raises(ValueError, match=r"has no task.*'bbh_nope'"):
        _suite({"scenario": "lm_eval", "args": {"task": "bbh", "tasks": ["bbh_nope"]}})


def test_an_unknown_task_lists_the_nearest_names() -> None:
    with pytest.raises(ValueError) as caught:
        _suite({"scenario": "lm_eval", "args": {"task": "hellaswg"}})
    message = str(caught.value)
    assert "s.yaml: scenarios.x.args.task" in message and "'hellaswg'" in message
    assert "nearest: hellaswag" in message


def test_unknown_args_and_assay_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match=r"scenarios.x.args: unknown key\(s\) shots"):
        _suite({"scenario": "lm_eval", "args": {"task": "gsm8k", "shots": 5}})
    with pytest.raises(ValueError, match=r"scenarios\.x\.perturbations: an lm_eval entry"):
        _suite({"scenario": "lm_eval", "args": {"task": "gsm8k"}, "perturbations": ["lowercase"]})


@pytest.mark.parametrize("task", ["humaneval", "mbpp"])
def test_code_tasks_are_refused_unless_the_sandboxed_scorer_is_named(task: str) -> None:
    with pytest.raises(ValueError) as caught:
        _suite({"scenario": "lm_eval", "args": {"task": task}})
    message = str(caught.value)
    assert f"lm-eval task {task!r} is refused" in message
    assert "scorer: code_execution" in message
    # With the sandboxed scorer the entry is accepted, and the scorer scores it.
    entries = _suite({"scenario": "lm_eval", "args": {"task": task}, "scorer": "code_execution"})
    assert entries["x"].scoring.name == "code_execution"


def test_a_hub_dataset_offline_names_the_dataset_and_the_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task of the team's own (include_path) on a hub dataset that is never reachable here.
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "team_quiz.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "team_quiz",
                "dataset_path": "assay-tests/unpublished-quiz",
                "dataset_name": "main",
                "test_split": "test",
                "output_type": "multiple_choice",
                "doc_to_text": "{{question}}",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "label",
            }
        )
    )
    monkeypatch.setenv(ALLOW_INCLUDE_ENV, "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    entry = {"scenario": "lm_eval", "args": {"task": "team_quiz", "include_path": str(tasks)}}
    config = _suite(entry, tmp_path)["x"]
    with pytest.raises(LmEvalTaskError) as caught:
        config.build().load()
    message = str(caught.value)
    assert "'assay-tests/unpublished-quiz/main'" in message
    assert "args.data_files: {test: <test.jsonl>}" in message
    assert "assay-tests__unpublished-quiz/main/<split>.jsonl" in message


def test_include_path_needs_the_operators_consent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"include_path: not allowed.*{ALLOW_INCLUDE_ENV}=1"):
        _suite({"scenario": "lm_eval", "args": {"task": "x", "include_path": str(tmp_path)}})


def test_a_malformed_local_file_names_the_file_and_row(tmp_path: Path) -> None:
    source = DATA / "openai__gsm8k" / "main"
    folder = tmp_path / "openai__gsm8k" / "main"
    folder.mkdir(parents=True)
    shutil.copy(source / "train.jsonl", folder / "train.jsonl")
    lines = (source / "test.jsonl").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # row 3 cut in half
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    entry = {"scenario": "lm_eval", "args": {"task": "gsm8k", "data_dir": str(tmp_path)}}
    config = _suite(entry, tmp_path)["x"]
    with pytest.raises(DataFileError, match=r"test\.jsonl: row 3: not valid JSON"):
        config.build().load()


def test_a_split_without_a_file_names_it(tmp_path: Path) -> None:
    test = DATA / "openai__gsm8k" / "main" / "test.jsonl"
    entry = {
        "scenario": "lm_eval",
        "args": {"task": "gsm8k", "num_fewshot": 5, "data_files": {"test": str(test)}},
    }
    config = _suite(entry)["x"]
    with pytest.raises(LmEvalTaskError, match=r"reads split 'train'.*data_files: \{train:"):
        config.build().load()


def test_revision_names_lm_eval_the_config_and_the_files() -> None:
    def revision(shots: int) -> str:
        entry = {
            "scenario": "lm_eval",
            "args": {"task": "gsm8k", "num_fewshot": shots, "data_dir": str(DATA)},
        }
        return _suite(entry)["x"].build().load().revision

    import hashlib
    from importlib.metadata import version

    two, five = revision(2), revision(5)
    assert two.startswith(f"lm_eval=={version('lm_eval')};task=gsm8k;config=")
    test_sha = hashlib.sha256((DATA / "openai__gsm8k/main/test.jsonl").read_bytes()).hexdigest()
    assert f"test:{test_sha[:16]}" in two
    assert two != five  # the few-shot count is part of the task's config
    assert revision(2) == two


def test_instances_are_lm_evals_documents() -> None:
    entry = {"scenario": "lm_eval", "args": {"task": "hellaswag", "data_dir": str(DATA)}}
    instances = _suite(entry)["x"].build().load().instances
    rows = [json.loads(x) for x in (DATA / "Rowan__hellaswag/default/validation.jsonl").open()]
    assert [i.id for i in instances] == [str(n) for n in range(len(rows))]
    # hellaswag's gold is the row's label; its choices are the endings (lm-eval's cleanup).
    assert [i.correct_indices for i in instances] == [[int(r["label"])] for r in rows]
    assert len(instances[0].references) == len(rows[0]["endings"])


# lm-evaluation-harness's own expectation for mmlu_anatomy with five shots (its
# tests/test_prompt.py, MMLU_ANATOMY_FIVE_SHOT): the five dev rows, then the first test row.
MMLU_ANATOMY_FIVE_SHOT = (
    "The following are multiple choice questions (with answers) about anatomy.\n\n"
    + """What is the embryological origin of the hyoid bone?
A. The first pharyngeal arch
B. The first and second pharyngeal arches
C. The second pharyngeal arch
D. The second and third pharyngeal arches
Answer: D

Which of these branches of the trigeminal nerve contain somatic motor processes?
A. The supraorbital nerve
B. The infraorbital nerve
C. The mental nerve
D. None of the above
Answer: D

The pleura
A. have no sensory innervation.
B. are separated by a 2 mm space.
C. extend into the neck.
D. are composed of respiratory epithelium.
Answer: C

In Angle's Class II Div 2 occlusion there is
A. excess overbite of the upper lateral incisors.
B. negative overjet of the upper central incisors.
C. excess overjet of the upper lateral incisors.
D. excess overjet of the upper central incisors.
Answer: C

Which of the following is the body cavity that contains the pituitary gland?
A. Abdominal
B. Cranial
C. Pleural
D. Spinal
Answer: B

A lesion causing compression of the facial nerve at the stylomastoid foramen will cause ipsilateral
A. paralysis of the facial muscles.
B. paralysis of the facial muscles and loss of taste.
C. paralysis of the facial muscles, loss of taste and lacrimation.
D. paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.
Answer:"""
)


def test_mmlu_five_shot_prompt_is_lm_evals_own_expectation() -> None:
    """With the real dev pool, assay's request for the first anatomy question is the prompt
    lm-eval's own test expects, continued by the four answer letters."""
    from assay.scenarios.lm_eval_requests import requests_for
    from assay.scenarios.lm_eval_tasks import load_task

    entry = {
        "scenario": "lm_eval",
        "args": {"task": "mmlu_anatomy", "data_dir": str(DATA), "num_fewshot": 5},
        "max_instances": 1,
    }
    scenario = _suite(entry)["x"].build()
    instances = scenario.load().instances[:1]
    (request,) = requests_for(load_task(scenario.spec), instances)
    assert request.prompt == MMLU_ANATOMY_FIVE_SHOT
    assert request.continuations == (" A", " B", " C", " D")


@pytest.mark.parametrize(
    ("task", "folder"),
    [("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")],
)
def test_arc_documents_are_the_real_slice(task: str, folder: str) -> None:
    """ARC through lm-eval's own task on the real slice: its question, its choices, the gold
    the file's ``answerKey`` names."""
    entry = {"scenario": "lm_eval", "args": {"task": task, "data_dir": str(DATA)}}
    instances = _suite(entry)["x"].build().load().instances
    rows = [json.loads(x) for x in (DATA / "allenai__ai2_arc" / folder / "test.jsonl").open()]
    assert len(instances) == len(rows) == 40
    for instance, row in zip(instances, rows, strict=True):
        assert [r.text for r in instance.references] == row["choices"]["text"]
        assert instance.correct_indices == [row["choices"]["label"].index(row["answerKey"])]


def test_boolq_documents_are_the_real_slice() -> None:
    """lm-eval's ``boolq`` (SuperGLUE's schema) on the real BoolQ rows: choices no/yes, the
    gold the row's label; the same rows as the native loader's hub-schema slice."""
    entry = {"scenario": "lm_eval", "args": {"task": "boolq", "data_dir": str(DATA)}}
    instances = _suite(entry)["x"].build().load().instances
    rows = [json.loads(x) for x in (DATA / "aps__super_glue/boolq/validation.jsonl").open()]
    hub = [json.loads(x) for x in (DATA / "google__boolq/default/validation.jsonl").open()]
    assert len(instances) == len(rows) == len(hub) == 40
    for instance, row, hub_row in zip(instances, rows, hub, strict=True):
        assert [r.text for r in instance.references] == ["no", "yes"]
        assert instance.correct_indices == [row["label"]] == [int(hub_row["answer"])]
        assert row["passage"] in instance.input and row["question"] in instance.input


def test_a_code_task_with_the_sandboxed_scorer_runs_its_programs_in_the_sandbox(
    tmp_path: Path,
) -> None:
    """HumanEval through lm-eval's own task (its prompts, its tests as doc_to_target) and
    assay's code_execution scorer: the canonical solutions pass, a wrong body fails."""
    from assay.core.records import Completion, ModelOutput
    from assay.core.sandbox import Sandbox, SandboxUnavailable
    from assay.evaluate.run import select_instances
    from assay.scoring.scorecard import score_partition
    from assay.scoring.scorer_runs import EntryScorer

    try:
        Sandbox().check()
    except SandboxUnavailable as exc:
        pytest.skip(f"the sandbox cannot run here: {exc}")
    slice_ = REPO / "tests" / "fixtures" / "scenarios" / "humaneval_test.jsonl"
    rows = [json.loads(line) for line in slice_.open()]
    entry = {
        "scenario": "lm_eval",
        "args": {"task": "humaneval", "data_files": {"test": str(slice_)}},
        "scorer": "code_execution",
    }
    config = _suite(entry)["x"]
    instances, _ = select_instances(config, config.build().load().instances)
    requests = config.build_requests(instances)
    assert [r.prompt for r in requests] == [row["prompt"] for row in rows]
    answers = [row["canonical_solution"] for row in rows]
    answers[1] = "    return None\n"  # wrong
    outputs = [ModelOutput(r, Completion(text=a)) for r, a in zip(requests, answers, strict=True)]
    scorer = EntryScorer.named("code_execution", config.scoring.args)
    scores = score_partition(instances, outputs, scorer=scorer)
    passed = {s.instance_id: s.value for s in scores.stats if s.metric == "pass"}
    assert passed == {str(i): float(i != 1) for i in range(len(rows))}
    # Nothing was matched against the references as text.
    assert not [s for s in scores.stats if s.metric == "exact_match"]
