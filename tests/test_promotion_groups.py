"""A ``promotion:`` criterion may name a group entry of the suite (an lm-eval group such as
``bbh``, whose tasks are the keys ``bbh.leaderboard_bbh_...``): it stands for one criterion per
task key, each judged, all in Holm's count. Checked on the shipped Open LLM Leaderboard v2
suite file with a promotion block added, and judged on stored per-instance scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.compare.decision import judge_promotion
from assay.core.records import InstanceStat
from assay.evaluate.suite import load_suite
from assay.scoring.summary import scorecard, scorecard_table
from assay.storage.parquet import ParquetStore

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
LEADERBOARD = REPO / "assay" / "evaluate" / "suites" / "open-llm-leaderboard-v2.yaml"
DATA = REPO / "tests" / "fixtures" / "datasets"


def _with_promotion(tmp_path: Path, text: str, block: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text + "\n" + block)
    return path


def test_a_group_key_stands_for_each_of_its_tasks(tmp_path: Path) -> None:
    block = """promotion:
  criteria:
    - {scenario: bbh, metric: acc_norm, margin: 0.02}
    - {scenario: ifeval, metric: prompt_level_strict_acc, at_least: 0.3}
"""
    suite = load_suite(_with_promotion(tmp_path, LEADERBOARD.read_text(), block))
    bbh_keys = [k for k in suite.keys if k.startswith("bbh.")]
    assert len(bbh_keys) == 24  # lm-eval's leaderboard_bbh: 24 subtasks
    criteria = suite.promotion.criteria
    # One criterion per BBH task, in the suite's order, then the plain key's as written.
    assert [c.scenario for c in criteria] == [*bbh_keys, "ifeval"]
    assert {(c.metric, c.margin) for c in criteria[:24]} == {("acc_norm", 0.02)}
    assert criteria[24].at_least == 0.3


def test_a_name_that_is_neither_a_key_nor_a_group_is_named(tmp_path: Path) -> None:
    block = """promotion:
  criteria:
    - {scenario: ifeval, metric: prompt_level_strict_acc, at_least: 0.3}
    - {scenario: bbhh, metric: acc_norm, at_least: 0.3}
"""
    path = _with_promotion(tmp_path, LEADERBOARD.read_text(), block)
    with pytest.raises(ValueError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert f"{path}: promotion.criteria[1].scenario: 'bbhh'" in message
    assert "neither a scenario key nor a group of the suite" in message
    assert "its keys: ifeval" in message and "bbh (24 tasks)" in message
    assert "math-hard (7 tasks)" in message
    # A task key of a group is a key like any other.
    ok = block.replace("bbhh", "bbh.leaderboard_bbh_navigate")
    suite = load_suite(_with_promotion(tmp_path, LEADERBOARD.read_text(), ok))
    assert [c.scenario for c in suite.promotion.criteria] == [
        "ifeval",
        "bbh.leaderboard_bbh_navigate",
    ]


SMALL = f"""scenarios:
  bbh:
    scenario: lm_eval
    args:
      task: leaderboard_bbh
      tasks: [leaderboard_bbh_boolean_expressions, leaderboard_bbh_date_understanding]
      data_dir: {DATA}
promotion:
  primary_metrics: false
  alpha: 0.05
  criteria:
    - {{scenario: bbh, metric: acc_norm, at_least: 0.5, "on": lower}}
"""


def test_each_task_is_judged_and_holm_counts_them_all(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SMALL)
    suite = load_suite(path)
    boolean, dates = (
        "bbh.leaderboard_bbh_boolean_expressions",
        "bbh.leaderboard_bbh_date_understanding",
    )
    assert suite.keys == [boolean, dates]
    # Per-instance acc_norm of the candidate: 36 of 40 right on one task, 22 of 40 on the other.
    values = {boolean: [1.0] * 36 + [0.0] * 4, dates: [1.0] * 22 + [0.0] * 18}
    store = ParquetStore(str(tmp_path / "storage"))
    for key, scores in values.items():
        stats = [InstanceStat(str(i), "acc_norm", v) for i, v in enumerate(scores)]
        where = {"model_version": "m@v2", "scenario": key}
        store.write("instance_scores", where, InstanceStat.to_table(stats))
        store.write("metric_tables", where, scorecard_table(scorecard(stats, "m@v2")))
    decision = judge_promotion(store, suite, "m@v2", None)
    results = {r.scenario: r for r in decision.criteria}
    assert set(results) == {boolean, dates}
    assert results[boolean].estimate == pytest.approx(0.9)
    assert results[dates].estimate == pytest.approx(0.55)
    # 0.9 over 40 clears 0.5 on its lower bound; 0.55 over 40 does not.
    assert results[boolean].outcome == "pass" and results[dates].outcome == "fail"
    assert not decision.approved
    # Holm over the two (by hand): the smaller p times 2, the larger times 1 (not below it).
    low, high = sorted((results[boolean], results[dates]), key=lambda r: r.p_value)
    assert low.p_adjusted == pytest.approx(min(1.0, 2 * low.p_value))
    assert high.p_adjusted == pytest.approx(max(low.p_adjusted, high.p_value))
