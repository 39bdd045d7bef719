"""A suite of lm-eval tasks evaluated by a promotion under the real ``dagster-daemon``.

The suite holds lm-eval tasks of four kinds on the real fixture slices: MMLU anatomy
(log-likelihood multiple choice), the same under the bundled model's chat template, GSM8K
(generation with lm-eval's regex filters) and wikitext on prose (perplexity, lm-eval's
``loglikelihood_rolling``).
Moving an alias with the ``assay`` CLI makes the promotion sensor launch the evaluation run;
its metric tables carry lm-eval's metrics with intervals, ``rankings`` ranks on them and the
explorer shows them with their intervals; a
second alias moved onto the same version re-evaluates it with every answer from the request
cache.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from explorer_browser import scenario_views
from live_deployment import REPO, TERMINAL, deployment, wait_for

from assay.models.bundled import BUNDLED_SOURCE
from assay.report.links import slug
from assay.storage.parquet import ParquetStore
from sensors.promotion import MODEL_VERSION_TAG

pytest.importorskip("lm_eval")

SENSOR = "model_promotion_sensor"
DATA = REPO / "tests" / "fixtures" / "datasets"
PROSE = REPO / "tests" / "fixtures" / "lm_eval_rolling" / "prose.jsonl"
SUITE = f"""
scenarios:
  anatomy:
    scenario: lm_eval
    args: {{task: mmlu_anatomy, num_fewshot: 0, data_dir: {DATA}}}
    max_instances: 6
  anatomy-chat:
    scenario: lm_eval
    args:
      task: mmlu_anatomy
      num_fewshot: 0
      data_dir: {DATA}
      apply_chat_template: true
      chat_template_from: "{BUNDLED_SOURCE}"
    max_instances: 3
  wikitext:
    scenario: lm_eval
    args: {{task: wikitext, data_files: {{test: {PROSE}}}}}
    max_instances: 2
  gsm8k:
    scenario: lm_eval
    args: {{task: gsm8k, num_fewshot: 1, data_dir: {DATA}, gen_kwargs: {{max_gen_toks: 6}}}}
    max_instances: 3
"""


def _materialize(env: dict[str, str], select: str, partition: str | None) -> None:
    config = '{"execution": {"config": {"in_process": {}}}}'
    command = [
        *(sys.executable, "-m", "dagster", "asset", "materialize"),
        *("-f", "definitions.py", "--select", select),
        *(("--partition", partition) if partition else ()),
        *("--config-json", config),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_promotion_evaluates_lm_eval_tasks_and_a_rerun_is_cached(
    tmp_path: Path, model_cache_dir: Path
) -> None:
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=1) as deployed:
        Path(deployed.env["ASSAY_SUITE"]).write_text(SUITE)
        store = ParquetStore(deployed.env["ASSAY_STORAGE_URL"])
        for scenario in ("anatomy", "anatomy-chat", "gsm8k", "wikitext"):
            _materialize(deployed.env, "scenario_instances", scenario)
        deployed.assay("create", "small")
        deployed.assay("register", "small", "bundled:smollm2-135m-instruct")
        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)
        deployed.assay("alias", "set", "small", "champion", "1")

        def finished(count: int):
            def check():
                runs = deployed.runs(**{MODEL_VERSION_TAG: "small@v1"})
                done = [r for r in runs if r.status in TERMINAL]
                return runs if len(done) >= count and len(done) == len(runs) else None

            return check

        (run,) = wait_for(finished(1), 600, "the promotion's run to finish", deployed.log)
        assert run.status is DagsterRunStatus.SUCCESS

        part = {"model_version": "small@v1"}
        expected = {
            "anatomy": ("acc", 6),
            "anatomy-chat": ("acc", 3),
            "gsm8k": ("exact_match.strict-match", 3),
            "wikitext": ("word_perplexity", 2),
        }
        for scenario, (metric, n) in expected.items():
            card = store.read("metric_tables", {**part, "scenario": scenario}).to_pylist()
            rows = {r["metric"]: r for r in card if not r["group"] and not r["perturbation"]}
            row = rows[metric]
            assert row["count"] == n and row["ci_low"] <= row["mean"] <= row["ci_high"]
            assert not math.isnan(row["ci_low"])
            outputs = store.read("model_outputs", {**part, "scenario": scenario})
            assert set(outputs["method"].to_pylist()) == {"lm_eval"}
            assert not any(outputs["cached"].to_pylist())

        # The chat entry's prompts are in the bundled model's chat template (their exact
        # text is checked in test_lm_eval_chat.py), the plain entry's are not; wikitext asks
        # for rolling log-likelihoods of whole documents.
        def outputs_of(scenario: str) -> dict[str, list]:
            return store.read("model_outputs", {**part, "scenario": scenario}).to_pydict()

        plain, chat = outputs_of("anatomy"), outputs_of("anatomy-chat")
        assert all(p.startswith("<|im_start|>") for p in chat["prompt"])
        assert not any("<|im_start|>" in p for p in plain["prompt"])
        assert set(outputs_of("wikitext")["kind"]) == {"loglikelihood_rolling"}
        # gsm8k's two filters are two metrics, as lm-eval reports them.
        gsm8k = store.read("metric_tables", {**part, "scenario": "gsm8k"})["metric"].to_pylist()
        assert {"exact_match.strict-match", "exact_match.flexible-extract"} <= set(gsm8k)

        today = dt.datetime.now(dt.UTC).date().isoformat()
        _materialize(deployed.env, "rankings", today)
        board = store.read("rankings", {"day": today}).to_pylist()
        (row,) = board
        for scenario, (metric, _) in expected.items():
            card = store.read("metric_tables", {**part, "scenario": scenario}).to_pylist()
            mean = next(r["mean"] for r in card if r["metric"] == metric and not r["group"])
            assert math.isclose(row[f"score.{scenario}"], mean)

        # The explorer shows each task's scorecard with its interval (its export is the page's
        # table as data) and a page per task.
        _materialize(deployed.env, "dashboard", None)
        site = Path(deployed.env["ASSAY_STORAGE_URL"]) / "explorer"
        views = scenario_views(site, list(expected))
        for scenario, (metric, _) in expected.items():
            assert not views[scenario].errors
            exported = json.loads(views[scenario].exports[f"scorecards-{slug(scenario)}.json"])
            card = store.read("metric_tables", {**part, "scenario": scenario}).to_pylist()
            stored = next(r for r in card if r["metric"] == metric and not r["group"])
            (shown,) = [
                r
                for r in exported
                if r["metric"] == metric and not r["group"] and not r["perturbation"]
            ]
            assert (shown["ci_low"], shown["mean"], shown["ci_high"]) == (
                stored["ci_low"],
                stored["mean"],
                stored["ci_high"],
            )

        # The same version promoted again: re-evaluated, every answer from the request cache.
        deployed.assay("alias", "set", "small", "challenger", "1")
        runs = wait_for(finished(2), 600, "the second promotion's run", deployed.log)
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        for scenario in expected:
            outputs = store.read("model_outputs", {**part, "scenario": scenario})
            assert all(outputs["cached"].to_pylist()) and outputs.num_rows > 0
