"""Parity with lm-evaluation-harness run as itself: same documents, same scores.

For six tasks of different kinds, lm-eval's own run (``lm_eval.simple_evaluate`` with its
``HFLM`` on the bundled model exported to a Hugging Face directory, ``log_samples=True``, the
task's YAML included and pointed at the same local files with lm-eval's ``json`` dataset
loader, ``limit`` documents, the same few-shot seed) is the reference. assay runs the same
tasks as ``scenario: lm_eval`` suite entries through its transformers client and scores the
stored outputs. Checked per document: the prompts sent, the answers (log-likelihoods to float
tolerance, generated texts exactly), every metric under every filter; and every aggregate.

Generation tasks are cut to a few dozen new tokens (``max_gen_toks``, overridden alike on both
sides: lm-eval's YAML, assay's ``gen_kwargs``) so the whole module runs in minutes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.core.nltk_data import use_bundled_nltk_data
from assay.core.records import InstanceStat, ModelOutput
from assay.evaluate.run import evaluate, select_instances
from assay.evaluate.suite import parse_suite
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.factory import build_client
from assay.models.transformers_loading import converted_model_dir
from assay.scenarios.lm_eval_tasks import metric_name, raw_config
from assay.scoring.lm_eval_scores import LM_EVAL_AGGREGATE_GROUP, score_lm_eval
from assay.scoring.scorecard import score_partition

# Runs lm-evaluation-harness itself beside assay: `make test-peers` (CI runs it).
pytestmark = pytest.mark.peers

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "datasets"
SEED = 1234
BATCH = 8
GEN_TOKENS = 40
# Two numerically different float32 forward passes (HFLM's padded batches, assay's shared
# context cache) over few-shot prompts of hundreds of tokens: log-likelihoods were seen to
# differ by up to 1.2e-5 relative (2.3e-4 absolute on -61.5), varying from run to run.
LL_REL = 5e-5
LL_ABS = 5e-4
METRIC_TOL = 5e-4  # metrics derived from them (truthfulqa_mc2's probability mass)

# task → (documents, few-shot examples or None for the task's own, files by split for lm-eval)
TASKS: dict[str, tuple[int, int | None, dict[str, Path]]] = {
    "hellaswag": (
        8,
        0,
        {
            "validation": DATA / "Rowan__hellaswag/default/validation.jsonl",
            "train": DATA / "Rowan__hellaswag/default/validation.jsonl",
        },
    ),
    "truthfulqa_mc2": (
        6,
        None,
        {"validation": DATA / "truthfulqa__truthful_qa/multiple_choice/validation.jsonl"},
    ),
    "mmlu_anatomy": (
        8,
        0,
        {
            "test": DATA / "cais__mmlu/anatomy/test.jsonl",
            "dev": DATA / "cais__mmlu/anatomy/test.jsonl",
        },
    ),
    "gsm8k": (
        4,
        2,
        {
            "test": DATA / "openai__gsm8k/main/test.jsonl",
            "train": DATA / "openai__gsm8k/main/train.jsonl",
        },
    ),
    "bbh_cot_fewshot_boolean_expressions": (
        4,
        None,
        {"test": DATA / "SaylorTwift__bbh/boolean_expressions/test.jsonl"},
    ),
    # Zero-shot: the slices hold no train split, which lm-eval still opens (given the same
    # file; no example is drawn from it).
    "arc_challenge": (
        8,
        0,
        {
            "test": DATA / "allenai__ai2_arc/ARC-Challenge/test.jsonl",
            "train": DATA / "allenai__ai2_arc/ARC-Challenge/test.jsonl",
            "validation": DATA / "allenai__ai2_arc/ARC-Challenge/test.jsonl",
        },
    ),
    "boolq": (
        6,
        0,
        {
            "validation": DATA / "aps__super_glue/boolq/validation.jsonl",
            "train": DATA / "aps__super_glue/boolq/validation.jsonl",
        },
    ),
}
IFEVAL_DATA = DATA / "google__IFEval" / "default" / "train.jsonl"
if IFEVAL_DATA.is_file():
    TASKS["ifeval"] = (4, None, {"train": IFEVAL_DATA})
GENERATION = {"gsm8k", "bbh_cot_fewshot_boolean_expressions", "ifeval"}


def _lm_eval_yaml(task: str, folder: Path) -> None:
    """A task YAML that includes lm-eval's own and reads the local files with lm-eval's
    ``json`` loader: lm-eval's documented way to run a built-in task offline."""
    from assay.scenarios.lm_eval_tasks import task_index

    _, shots, files = TASKS[task]
    config: dict[str, Any] = {
        "include": str(task_index()[task].yaml_path),
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path) for split, path in files.items()}},
    }
    if shots is not None:
        config["num_fewshot"] = shots
    if task in GENERATION:
        gen = dict(raw_config(task).get("generation_kwargs") or {})
        config["generation_kwargs"] = {**gen, "max_gen_toks": GEN_TOKENS}
    (folder / f"{task}.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def model_dir(model_cache_dir: Path) -> Path:
    return converted_model_dir(bundled_gguf_path(), model_cache_dir)


@pytest.fixture(scope="module")
def lm_eval_results(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """lm-eval's own run of every task, in one ``simple_evaluate`` call."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    use_bundled_nltk_data()  # IFEval's checks tokenize with the Punkt data assay ships
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    for task in TASKS:
        _lm_eval_yaml(task, folder)
    lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=BATCH, device="cpu")
    results = {}
    manager = TaskManager(include_path=str(folder))
    for limit in sorted({n for n, _, _ in TASKS.values()}):
        tasks = [t for t, (n, _, _) in TASKS.items() if n == limit]
        out = simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=manager,
            limit=limit,
            log_samples=True,
            fewshot_random_seed=SEED,
            bootstrap_iters=0,
        )
        for task in tasks:
            results[task] = {"results": out["results"][task], "samples": out["samples"][task]}
    return results


@pytest.fixture(scope="module")
def assay_runs(model_cache_dir: Path) -> dict[str, tuple[list[ModelOutput], Any]]:
    """assay's run of every task: suite entries, the transformers client, lm-eval scoring."""
    entries = {}
    for task, (n, shots, _) in TASKS.items():
        args: dict[str, Any] = {"task": task, "data_dir": str(DATA), "fewshot_seed": SEED}
        if shots is not None:
            args["num_fewshot"] = shots
        if task in GENERATION:
            args["gen_kwargs"] = {"max_gen_toks": GEN_TOKENS}
        entries[task.replace("_", "-")] = {
            "scenario": "lm_eval",
            "args": args,
            "max_instances": n,
        }
    suite = parse_suite({"scenarios": entries}, "parity.yaml", REPO)
    spec = ModelSpec("parity@v1", BUNDLED_SOURCE, ServingConfig(batch_size=BATCH))
    client = build_client(spec, model_cache_dir)
    runs = {}
    for config in suite.scenarios.values():
        every = config.build().load().instances
        instances, train = select_instances(config, every)
        outputs = evaluate(client, config, instances, train).outputs
        scored = score_lm_eval(config.lm_eval, instances, outputs)
        card = score_partition(instances, outputs, scored=scored)
        runs[config.lm_eval.task] = (outputs, card)
    return runs


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _doc_value(value: Any) -> float:
    if isinstance(value, list | tuple):
        return sum(map(float, value)) / len(value)
    return float(value)


@pytest.mark.parametrize("task", list(TASKS))
def test_same_prompts_answers_and_scores_as_lm_eval(
    task: str, lm_eval_results: dict, assay_runs: dict
) -> None:
    reference = lm_eval_results[task]
    outputs, scores = assay_runs[task]
    n = TASKS[task][0]
    samples = reference["samples"]
    assert {s["doc_id"] for s in samples} == set(range(n))

    # The prompts and answers, document by document.
    by_doc: dict[str, list[ModelOutput]] = {}
    for output in outputs:
        by_doc.setdefault(output.request.instance_id, []).append(output)
    for sample in (s for s in samples if s["filter"] == samples[0]["filter"]):
        ours = by_doc[str(sample["doc_id"])]
        if task in GENERATION:
            assert [o.request.prompt for o in ours] == [a[0] for a in sample["arguments"]]
            texts = [o.completion.text for o in ours]
            assert texts == [r[0] for r in sample["resps"]], f"doc {sample['doc_id']}"
        else:
            pairs = [
                (o.request.prompt, c.text, c.logprob) for o in ours for c in o.completion.choices
            ]
            assert [(p, c) for p, c, _ in pairs] == [tuple(a[:2]) for a in sample["arguments"]]
            for (_, _, ll), resp in zip(pairs, sample["resps"], strict=True):
                assert math.isclose(ll, float(resp[0][0]), rel_tol=LL_REL, abs_tol=LL_ABS), (
                    f"doc {sample['doc_id']}"
                )

    # Every metric of every document under every filter.
    stats: dict[tuple[str, str], InstanceStat] = {
        (s.instance_id, s.metric): s for s in scores.stats if s.template_id == "lm_eval"
    }
    compared = 0
    for sample in samples:
        for metric in sample["metrics"]:
            name = metric_name(metric, sample["filter"])
            doc = str(sample["doc_id"])
            if isinstance(sample[metric], list | tuple):  # pooled over documents: sum, count
                total, count = stats[(doc, f"{name}_sum")].value, stats[(doc, f"{name}_n")].value
                assert count == len(sample[metric]), (name, doc)
                assert _close(total / count, _doc_value(sample[metric]), METRIC_TOL), (name, doc)
            else:
                ours = stats[(doc, name)].value
                assert _close(ours, _doc_value(sample[metric]), METRIC_TOL), (name, doc)
            compared += 1
    assert compared >= n

    # Every aggregate lm-eval reports.
    card = {(r.metric, r.group): r for r in scores.card if not r.perturbation}
    for key, value in reference["results"].items():
        if "," not in key or key.endswith("_stderr") or "_stderr," in key or key == "alias":
            continue
        metric, filter_key = key.split(",", 1)
        name = metric_name(metric, filter_key)
        row = card.get((name, LM_EVAL_AGGREGATE_GROUP)) or card[(name, "")]
        assert _close(row.mean, float(value), METRIC_TOL), (name, row.mean, value)
        assert row.count == n
