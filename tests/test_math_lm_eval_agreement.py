"""assay's math_equivalence against lm-evaluation-harness's MATH answer checks, on the same
answers to 56 real MATH-500 problems (tests/fixtures/datasets/HuggingFaceH4__MATH-500).

lm-eval's checks are those of its ``minerva_math`` tasks (``lm_eval.tasks.minerva_math.utils
.process_results``): ``exact_match``, Minerva's answer check (the text after "Final Answer: The
final answer is", normalized, compared with the solution's last ``\\boxed{}`` by SymPy's
LaTeX parser), and ``math_verify`` (math-verify on the whole solution against the whole
answer). They need ANTLR 4.11, which assay's environment cannot share (math-verify there
needs 4.13), so they run in the lm-eval peer environment (``make lmeval-venv``, or
``$ASSAY_LMEVAL_VENV``); without it the test is skipped with the reason.

Answers, for each problem: the reference answer in Minerva's answer line (``answer``), the
solution's own last boxed expression there (``boxed``: often written differently from the
answer field), the answer with ``\\dfrac`` for ``\\frac`` (``dfrac``, where there is one),
the next problem's answer (``wrong``), and the whole worked solution (``solution``: free text
ending in a boxed answer, for ``math_verify``; Minerva's check needs its answer line, so it
does not apply). assay compares each with the problem's ``answer`` field, as a MATH scenario
stores it.

Every disagreement is listed in ``DISAGREEMENTS`` with the verdict judged right by hand and
why; the test fails on any other (or if a listed one goes away).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from assay.scoring.math_equivalence import equivalent

# Runs lm-evaluation-harness itself beside assay: `make test-peers` (CI runs it).
pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "datasets" / "HuggingFaceH4__MATH-500" / "default"
VENV = Path(os.environ.get("ASSAY_LMEVAL_VENV") or REPO / ".peers" / "lmeval-venv")

# Runs in lm-eval's environment: argv[1] = the MATH-500 rows (JSONL). Builds each answer and
# prints lm-eval's verdicts on it as JSON.
DRIVER = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)
from lm_eval.tasks.minerva_math import utils


def final(answer):
    return f"Final Answer: The final answer is ${answer}$. I hope it is correct."

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
out = []
for n, row in enumerate(rows):
    boxed = utils.remove_boxed(utils.last_boxed_only_string(row["solution"]))
    # The document as the task's process_docs makes it.
    doc = {"problem": row["problem"], "solution": row["solution"],
           "answer": utils.normalize_final_answer(boxed)}
    answers = {
        "answer": final(row["answer"]),
        "boxed": final(boxed),
        "wrong": final(rows[(n + 1) % len(rows)]["answer"]),
        "solution": row["solution"],
    }
    if "\\frac" in row["answer"]:
        answers["dfrac"] = final(row["answer"].replace("\\frac", "\\dfrac"))
    for variant, text in answers.items():
        verdict = utils.process_results(doc, [text])
        out.append({"row": n, "variant": variant, "text": text, **verdict})
json.dump(out, sys.stdout)
"""

# (row, variant) -> (which check is right, why), judged by hand.
DISAGREEMENTS = {
    (0, "dfrac"): (
        "assay",
        "the reference is the point (3, \\frac{\\pi}{2}) and the answer writes it with "
        "\\dfrac, the same fraction in display style. Minerva's normalization keeps \\dfrac, "
        "SymPy's LaTeX parser cannot parse a tuple, and the strings differ, so it says wrong; "
        "math-verify reads both as the same pair.",
    ),
    (35, "wrong"): (
        "assay",
        "the reference is 3 and the answer is the list '3, 5, 7'. Minerva's check parses "
        "'3,5,7' with SymPy's LaTeX parser, which keeps the first element and finds it equal "
        "to 3; math-verify reads a list of three numbers, which is not 3.",
    ),
}


def _lm_eval_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"lm-eval's peer environment is not at {VENV} (make lmeval-venv)")
    probe = subprocess.run(
        [str(python), "-c", "import lm_eval.tasks.minerva_math.utils"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"{VENV} cannot import lm-eval's minerva_math checks: {last}")
    return python


@pytest.fixture(scope="module")
def verdicts() -> list[dict]:
    python = _lm_eval_python()
    done = subprocess.run(
        [str(python), "-c", DRIVER, str(FIXTURE / "test.jsonl")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (FIXTURE / "test.jsonl").read_text().splitlines()]
    items = json.loads(done.stdout)
    for item in items:
        item["assay"] = int(equivalent(rows[item["row"]]["answer"], item["text"]))
    return items


def test_minervas_answer_check_agrees_but_where_listed(verdicts: list[dict]) -> None:
    applies = [v for v in verdicts if v["variant"] != "solution"]
    assert len(applies) > 3 * 56  # answer, boxed and wrong for every problem, dfrac for some
    found = {(v["row"], v["variant"]) for v in applies if v["assay"] != v["exact_match"]}
    assert found == set(DISAGREEMENTS)
    for key, (right, _) in DISAGREEMENTS.items():
        item = next(v for v in applies if (v["row"], v["variant"]) == key)
        assert item["assay" if right == "assay" else "exact_match"] == (
            0 if key[1] == "wrong" else 1
        )
    # Elsewhere both recognise every restatement of the reference as right.
    for item in applies:
        if item["variant"] in ("answer", "boxed", "dfrac") and item["assay"] == item["exact_match"]:
            assert item["assay"] == 1, item


def test_lm_evals_math_verify_agrees_on_every_answer(verdicts: list[dict]) -> None:
    # lm-eval's second metric runs math-verify on the whole solution as the gold; assay runs
    # it on the answer field. On the worked solutions themselves, free text, both say right.
    disagree = [v for v in verdicts if v["assay"] != v["math_verify"]]
    assert disagree == []
    solutions = [v for v in verdicts if v["variant"] == "solution"]
    assert len(solutions) == 56
    assert all(v["assay"] == 1 and v["exact_match"] == 0 for v in solutions)
