"""MATH-hard (lm-eval's ``leaderboard_math_hard``) built offline from local files, without a
model: its seven tasks read the real level-5 MATH problems of
tests/fixtures/datasets/DigitalLearningGmbH__MATH-lighteval through ``data_dir``.

Its scoring runs in lm-eval's peer environment (assay.scoring.lm_eval_peer); that it equals
lm-eval's own is tests/test_math_hard_lm_eval_agreement.py (``make test-peers``). Here: the
task builds, its documents and references are the fixture's, and without the peer it is
refused before any request is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.evaluate.suite import parse_suite
from assay.scoring.lm_eval_peer import VENV_ENV, LmEvalPeerError, needs_peer

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "datasets"
FIXTURE = DATA / "DigitalLearningGmbH__MATH-lighteval"
# lm-eval's task of each MATH-lighteval config (lm_eval/tasks/leaderboard/math/*.yaml).
TASKS = {
    "algebra": "leaderboard_math_algebra_hard",
    "counting_and_probability": "leaderboard_math_counting_and_prob_hard",
    "geometry": "leaderboard_math_geometry_hard",
    "intermediate_algebra": "leaderboard_math_intermediate_algebra_hard",
    "number_theory": "leaderboard_math_num_theory_hard",
    "prealgebra": "leaderboard_math_prealgebra_hard",
    "precalculus": "leaderboard_math_precalculus_hard",
}


def last_boxed(solution: str) -> str:
    """The content of a solution's last ``\\boxed{...}`` (balanced braces), by hand."""
    start = solution.rindex("\\boxed{") + len("\\boxed{")
    depth, at = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(solution[at], 0)
        at += 1
    return solution[start : at - 1]


def _rows(config: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURE / config / "test.jsonl").open()]


@pytest.fixture(scope="module")
def entries() -> dict:
    suite = {
        "scenarios": {
            "math-hard": {
                "scenario": "lm_eval",
                "args": {"task": "leaderboard_math_hard", "data_dir": str(DATA)},
            }
        }
    }
    return parse_suite(suite, "s.yaml", REPO).scenarios


def test_math_hard_is_seven_tasks_built_from_the_local_slice(entries: dict) -> None:
    assert set(entries) == {f"math-hard.{task}" for task in TASKS.values()}
    for config, task in TASKS.items():
        entry = entries[f"math-hard.{task}"]
        assert entry.primary_metric == "exact_match"
        data = entry.build().load()
        rows = _rows(config)
        # Every fixture row is level 5, so lm-eval's process_docs keeps them all, in order.
        # Its input is lm-eval's doc_to_text of the problem (utils.doc_to_text).
        assert [i.input for i in data.instances] == [
            f"Problem:\n{r['problem']}\n\nSolution:" for r in rows
        ]
        # The gold is the solution's last boxed answer (lm-eval's doc_to_target).
        assert [i.references[0].text for i in data.instances] == [
            last_boxed(r["solution"]) for r in rows
        ]
        assert "test:" in data.revision and "train" not in data.revision


def test_a_fixed_few_shot_list_needs_no_training_file(
    tmp_path: Path,
) -> None:
    # The task's four examples are in its config, so no train split is read; its test split
    # still must be there.
    (tmp_path / "DigitalLearningGmbH__MATH-lighteval" / "algebra").mkdir(parents=True)
    suite = {
        "scenarios": {
            "m": {
                "scenario": "lm_eval",
                "args": {"task": "leaderboard_math_algebra_hard", "data_dir": str(tmp_path)},
            }
        }
    }
    with pytest.raises(Exception, match=r"no files for dataset 'DigitalLearningGmbH/MATH-"):
        parse_suite(suite, "s.yaml", tmp_path).scenarios["m"].build().load()
    # One task from data_files: the test file alone.
    test_file = FIXTURE / "algebra" / "test.jsonl"
    suite["scenarios"]["m"]["args"] = {
        "task": "leaderboard_math_algebra_hard",
        "data_files": {"test": str(test_file)},
    }
    data = parse_suite(suite, "s.yaml", REPO).scenarios["m"].build().load()
    assert len(data.instances) == len(_rows("algebra")) == 3


def test_without_lm_evals_environment_no_request_is_built(
    entries: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from assay.evaluate.run import select_instances
    from assay.scenarios.lm_eval_tasks import load_task

    entry = entries["math-hard.leaderboard_math_algebra_hard"]
    assert needs_peer(load_task(entry.lm_eval).task)
    monkeypatch.setenv(VENV_ENV, str(tmp_path / "no-venv"))
    instances, _ = select_instances(entry, entry.build().load().instances)
    with pytest.raises(LmEvalPeerError) as caught:
        entry.build_requests(instances)
    message = str(caught.value)
    assert "'leaderboard_math_algebra_hard'" in message
    assert f"{VENV_ENV}={tmp_path / 'no-venv'}" in message and "make lmeval-venv" in message


def test_other_generation_tasks_score_in_process(entries: dict) -> None:
    # gsm8k's scoring is plain string matching: no peer.
    from assay.scenarios.lm_eval_tasks import load_task

    suite = {"scenarios": {"g": {"scenario": "lm_eval", "args": {"task": "gsm8k"}}}}
    suite["scenarios"]["g"]["args"]["data_dir"] = str(DATA)
    gsm8k = parse_suite(suite, "s.yaml", REPO).scenarios["g"]
    assert not needs_peer(load_task(gsm8k.lm_eval).task)
