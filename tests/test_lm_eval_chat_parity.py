"""Parity with lm-evaluation-harness run as itself with ``--apply_chat_template``.

lm-eval's own run (``simple_evaluate`` with its ``HFLM`` on the bundled model exported to a
Hugging Face directory, ``apply_chat_template=True``, ``log_samples=True``, the task's YAML
included and pointed at the same local files) is the reference; assay runs the same tasks as
``scenario: lm_eval`` entries with ``apply_chat_template: true`` and the bundled model as
``chat_template_from``. Two kinds, each with few-shot examples so the turns matter:

- ``mmlu_anatomy`` (log-likelihood multiple choice), 2-shot as chat turns;
- ``gsm8k`` (generation, lm-eval's regex filters), 2-shot in one user turn
  (``fewshot_as_multiturn: false``) under a system instruction.

Checked per document: the prompts and continuations sent, the answers (log-likelihoods to
float tolerance, texts exactly), every metric under every filter; and every aggregate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.core.records import InstanceStat, ModelOutput
from assay.evaluate.run import evaluate, select_instances
from assay.evaluate.suite import parse_suite
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.factory import build_client
from assay.models.transformers_loading import converted_model_dir
from assay.scenarios.lm_eval_tasks import metric_name, raw_config, task_index
from assay.scoring.lm_eval_scores import LM_EVAL_AGGREGATE_GROUP, score_lm_eval
from assay.scoring.scorecard import score_partition

# Runs lm-evaluation-harness itself beside assay: `make test-peers` (CI runs it).
pytestmark = pytest.mark.peers

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "datasets"
SEED = 1234
BATCH = 8
GEN_TOKENS = 32
SYSTEM = "You are a careful grade-school math tutor."
# As in test_lm_eval_parity: two float32 forward passes batched differently.
LL_REL = 5e-5
LL_ABS = 5e-4
METRIC_TOL = 5e-4

MMLU = DATA / "cais__mmlu" / "anatomy" / "test.jsonl"
GSM8K = DATA / "openai__gsm8k" / "main"


# task → (documents, shots, files by split, lm-eval's chat options)
TASKS: dict[str, tuple[int, int, dict[str, Path], dict[str, Any]]] = {
    "mmlu_anatomy": (
        6,
        2,
        {"test": MMLU, "dev": MMLU},
        {"fewshot_as_multiturn": True, "system_instruction": None},
    ),
    "gsm8k": (
        3,
        2,
        {"test": GSM8K / "test.jsonl", "train": GSM8K / "train.jsonl"},
        {"fewshot_as_multiturn": False, "system_instruction": SYSTEM},
    ),
}
GENERATION = {"gsm8k"}


def _lm_eval_yaml(task: str, folder: Path) -> None:
    """A task YAML including lm-eval's own, reading the local files with its json loader."""
    _, shots, files, _ = TASKS[task]
    config: dict[str, Any] = {
        "include": str(task_index()[task].yaml_path),
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path) for split, path in files.items()}},
        "num_fewshot": shots,
    }
    if task in GENERATION:
        gen = dict(raw_config(task).get("generation_kwargs") or {})
        config["generation_kwargs"] = {**gen, "max_gen_toks": GEN_TOKENS}
    (folder / f"{task}.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def lm_eval_results(model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """lm-eval's own run of each task with its chat options."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model_dir = converted_model_dir(bundled_gguf_path(), model_cache_dir)
    folder = tmp_path_factory.mktemp("lm_eval_chat_tasks")
    for task in TASKS:
        _lm_eval_yaml(task, folder)
    lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=BATCH, device="cpu")
    manager = TaskManager(include_path=str(folder))
    results = {}
    for task, (n, _, _, chat) in TASKS.items():
        out = simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=manager,
            limit=n,
            log_samples=True,
            fewshot_random_seed=SEED,
            bootstrap_iters=0,
            apply_chat_template=True,
            **chat,
        )
        results[task] = {"results": out["results"][task], "samples": out["samples"][task]}
    return results


@pytest.fixture(scope="module")
def assay_runs(model_cache_dir: Path) -> dict[str, tuple[list[ModelOutput], Any]]:
    """assay's run of each task: a chat-templated suite entry, the transformers client."""
    entries = {}
    for task, (n, shots, files, chat) in TASKS.items():
        args: dict[str, Any] = {
            "task": task,
            "num_fewshot": shots,
            "fewshot_seed": SEED,
            "data_files": {split: str(path) for split, path in files.items()},
            "apply_chat_template": True,
            "chat_template_from": BUNDLED_SOURCE,
            **{k: v for k, v in chat.items() if v is not None},
        }
        if task in GENERATION:
            args["gen_kwargs"] = {"max_gen_toks": GEN_TOKENS}
        entries[task.replace("_", "-")] = {"scenario": "lm_eval", "args": args, "max_instances": n}
    suite = parse_suite({"scenarios": entries}, "chat-parity.yaml", REPO)
    spec = ModelSpec("chat-parity@v1", BUNDLED_SOURCE, ServingConfig(batch_size=BATCH))
    client = build_client(spec, model_cache_dir)
    runs = {}
    for config in suite.scenarios.values():
        every = config.build().load().instances
        instances, train = select_instances(config, every)
        outputs = evaluate(client, config, instances, train).outputs
        scored = score_lm_eval(config.lm_eval, instances, outputs)
        runs[config.lm_eval.task] = (outputs, score_partition(instances, outputs, scored=scored))
    return runs


def _scored(context: str, continuation: str) -> tuple[str, str]:
    """The pair lm-eval's HFLM scores (``_encode_pair``): the context's trailing whitespace
    (the newline after the template's assistant header) goes to the continuation."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def _close(a: float, b: float, tol: float = METRIC_TOL) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


@pytest.mark.parametrize("task", list(TASKS))
def test_same_chat_prompts_answers_and_scores_as_lm_eval(
    task: str, lm_eval_results: dict, assay_runs: dict
) -> None:
    reference = lm_eval_results[task]
    outputs, scores = assay_runs[task]
    n = TASKS[task][0]
    samples = reference["samples"]
    assert {s["doc_id"] for s in samples} == set(range(n))

    by_doc: dict[str, list[ModelOutput]] = {}
    for output in outputs:
        by_doc.setdefault(output.request.instance_id, []).append(output)
    for sample in (s for s in samples if s["filter"] == samples[0]["filter"]):
        ours = by_doc[str(sample["doc_id"])]
        prompts = [o.request.prompt for o in ours]
        assert all(p.startswith("<|im_start|>") for p in prompts)  # templated on both sides
        if task in GENERATION:
            assert prompts == [a[0] for a in sample["arguments"]]
            assert prompts[0].startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
            texts = [o.completion.text for o in ours]
            assert texts == [r[0] for r in sample["resps"]], f"doc {sample['doc_id']}"
        else:
            pairs = [
                (o.request.prompt, c.text, c.logprob) for o in ours for c in o.completion.choices
            ]
            assert [(p, c) for p, c, _ in pairs] == [_scored(*a[:2]) for a in sample["arguments"]]
            assert prompts[0].count("<|im_start|>assistant\n") == 2  # two shots, then the doc
            assert prompts[0].endswith("<|im_start|>assistant")
            for (_, _, ll), resp in zip(pairs, sample["resps"], strict=True):
                assert math.isclose(ll, float(resp[0][0]), rel_tol=LL_REL, abs_tol=LL_ABS), (
                    f"doc {sample['doc_id']}"
                )

    stats: dict[tuple[str, str], InstanceStat] = {
        (s.instance_id, s.metric): s for s in scores.stats if s.template_id == "lm_eval"
    }
    compared = 0
    for sample in samples:
        for metric in sample["metrics"]:
            ours = stats[(str(sample["doc_id"]), metric_name(metric, sample["filter"]))].value
            assert _close(ours, float(sample[metric])), (metric, sample["doc_id"])
            compared += 1
    assert compared >= n

    card = {(r.metric, r.group): r for r in scores.card if not r.perturbation}
    checked = 0
    for key, value in reference["results"].items():
        if "," not in key or key.endswith("_stderr") or "_stderr," in key or key == "alias":
            continue
        metric, filter_key = key.split(",", 1)
        name = metric_name(metric, filter_key)
        row = card.get((name, LM_EVAL_AGGREGATE_GROUP)) or card[(name, "")]
        assert _close(row.mean, float(value)), (name, row.mean, value)
        assert row.count == n
        checked += 1
    assert checked >= 1
