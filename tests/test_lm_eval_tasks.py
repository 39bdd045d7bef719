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
