"""lm-eval tasks inside assay: time and agreement against lm-eval itself, and the catalogue.

Run from the repository root:  python benchmarks/bench_lm_eval_tasks.py [--repeats 3]

1. The same documents through lm-eval (``simple_evaluate`` on its ``HFLM``, the bundled model
   exported to a Hugging Face directory, fp32, batch 16) and through assay (``scenario:
   lm_eval``: lm-eval's requests through assay's transformers client, batch 16, scored by
   lm-eval's own filters and ``process_results``), both in this process with the model loaded
   and warmed up first: one log-likelihood task (truthfulqa_mc2, 12 documents, about 90
   continuations after a 6-example preamble of some 300 tokens) and one generation task
   (gsm8k, 2-shot, 10 documents, 48 new tokens at most). Printed: the median wall time of
   each over ``--repeats`` runs with the load average, their ratio, and agreement
   (documents whose metric values match; outputs identical: generated texts equal,
   log-likelihoods within the parity test's float tolerance, with the largest difference).
2. lm-eval's catalogue by what assay needs to run each task offline: every leaf task of
   lm-eval's index, classified from its config (refused: code execution without the
   sandbox, perplexity and multimodal tasks; a judge model; data built in code; a hub
   dataset, which runs with ``data_files``/``data_dir`` in its schema), and the tasks whose
   data the fixtures hold instantiated for real.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assay.core.nltk_data import use_bundled_nltk_data  # noqa: E402
from assay.evaluate.run import evaluate, select_instances  # noqa: E402
from assay.evaluate.suite import parse_suite  # noqa: E402
from assay.models.base import ModelSpec, ServingConfig  # noqa: E402
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path  # noqa: E402
from assay.models.factory import build_client  # noqa: E402
from assay.models.transformers_loading import converted_model_dir  # noqa: E402
from assay.scenarios.lm_eval_tasks import (  # noqa: E402
    LmEvalArgs,
    check_runnable,
    code_execution_reason,
    expand,
    load_task,
    metric_name,
    raw_config,
    task_index,
)
from assay.scoring.lm_eval_scores import score_lm_eval  # noqa: E402

DATA = REPO / "tests" / "fixtures" / "datasets"
CACHE = REPO / ".assay" / "bench-cache"
BATCH = 16
# task → (documents, few-shot, files by split for lm-eval's json loader, max_gen_toks)
CASES: dict[str, tuple[int, int, dict[str, Path], int | None]] = {
    "truthfulqa_mc2": (
        12,
        0,
        {"validation": DATA / "truthfulqa__truthful_qa/multiple_choice/validation.jsonl"},
        None,
    ),
    "gsm8k": (
        10,
        2,
        {
            "test": DATA / "openai__gsm8k/main/test.jsonl",
            "train": DATA / "openai__gsm8k/main/train.jsonl",
        },
        48,
    ),
}
_JUDGE = re.compile(r"judge|gpt-?4|openai|llm_as", re.IGNORECASE)
_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}


def _lm_eval_folder(folder: Path) -> None:
    for task, (_, shots, files, gen) in CASES.items():
        config: dict[str, Any] = {
            "include": str(task_index()[task].yaml_path),
            "task": task,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {s: str(p) for s, p in files.items()}},
            "num_fewshot": shots,
        }
        if gen is not None:
            kwargs = dict(raw_config(task).get("generation_kwargs") or {})
            config["generation_kwargs"] = {**kwargs, "max_gen_toks": gen}
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(config))


def run_lm_eval(lm: Any, manager: Any, task: str) -> tuple[float, dict[int, dict], list]:
    from lm_eval import simple_evaluate

    n = CASES[task][0]
    start = time.perf_counter()
    out = simple_evaluate(
        model=lm, tasks=[task], task_manager=manager, limit=n, log_samples=True, bootstrap_iters=0
    )
    seconds = time.perf_counter() - start
    metrics: dict[int, dict] = {}
    answers = []
    for sample in out["samples"][task]:
        for metric in sample["metrics"]:
            value = sample[metric]
            metrics.setdefault(sample["doc_id"], {})[metric_name(metric, sample["filter"])] = value
        if sample["filter"] == out["samples"][task][0]["filter"]:
            answers.append((sample["doc_id"], sample["resps"]))
    return seconds, metrics, sorted(answers, key=lambda a: a[0])


def run_assay(client: Any, task: str) -> tuple[float, dict[int, dict], list]:
    n, shots, _, gen = CASES[task]
    args: dict[str, Any] = {"task": task, "num_fewshot": shots, "data_dir": str(DATA)}
    if gen is not None:
        args["gen_kwargs"] = {"max_gen_toks": gen}
    suite = parse_suite({"scenarios": {"t": {"scenario": "lm_eval", "args": args}}}, "b", REPO)
    config = suite["t"]
    start = time.perf_counter()
    instances, _ = select_instances(config, config.build().load().instances, n)
    outputs = evaluate(client, config, instances).outputs
    scored = score_lm_eval(config.lm_eval, instances, outputs)
    seconds = time.perf_counter() - start
    metrics: dict[int, dict] = {}
    for stat in scored.stats:
        metrics.setdefault(int(stat.instance_id), {})[stat.metric] = stat.value
    answers: dict[int, list] = {}
    for output in outputs:
        doc = int(output.request.instance_id)
        if output.completion.choices:
            answers.setdefault(doc, []).extend(c.logprob for c in output.completion.choices)
        else:
            answers.setdefault(doc, []).append(output.completion.text)
    return seconds, metrics, sorted(answers.items())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        a = sum(map(float, a)) / len(a)
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=5e-4)


def agreement(ref: tuple, ours: tuple) -> tuple[int, int, int, int, float]:
    """(documents with equal metrics, documents, identical answers, documents, the largest
    log-likelihood difference). Log-likelihoods count as identical within the parity test's
    tolerance (5e-5 relative, 5e-4 absolute: two float32 forward passes)."""
    _, ref_metrics, ref_answers = ref
    _, our_metrics, our_answers = ours
    equal = sum(
        all(
            name in our_metrics.get(doc, {}) and _same(v, our_metrics[doc][name])
            for name, v in values.items()
            if not isinstance(v, list)
        )
        for doc, values in ref_metrics.items()
    )
    same_answers, worst = 0, 0.0
    for (_, resps), (_, mine) in zip(ref_answers, our_answers, strict=True):
        flat = [r[0] for r in resps]
        if flat and isinstance(flat[0], str):
            same_answers += flat == mine
        else:
            lls = [float(r[0]) for r in flat]
            worst = max([worst, *(abs(x - y) for x, y in zip(lls, mine, strict=True))])
            same_answers += all(
                math.isclose(x, y, rel_tol=5e-5, abs_tol=5e-4)
                for x, y in zip(lls, mine, strict=True)
            )
    return equal, len(ref_metrics), same_answers, len(ref_answers), worst


def side_by_side(repeats: int) -> None:
    import tempfile

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    use_bundled_nltk_data()
    model_dir = converted_model_dir(bundled_gguf_path(), CACHE)
    with tempfile.TemporaryDirectory() as tmp:
        _lm_eval_folder(Path(tmp))
        manager = TaskManager(include_path=tmp)
        lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=BATCH, device="cpu")
        client = build_client(
            ModelSpec("bench@v1", BUNDLED_SOURCE, ServingConfig(batch_size=BATCH)), CACHE
        )
        for task in CASES:
            run_assay(client, task)  # warm-up: model load, lm-eval's index, the data
            run_lm_eval(lm, manager, task)
            times: dict[str, list[float]] = {"lm-eval": [], "assay": []}
            loads = []
            for _ in range(repeats):
                ref = run_lm_eval(lm, manager, task)
                ours = run_assay(client, task)
                times["lm-eval"].append(ref[0])
                times["assay"].append(ours[0])
                loads.append(os.getloadavg()[0])
            equal, docs, same, total, worst = agreement(ref, ours)
            t_ref, t_ours = statistics.median(times["lm-eval"]), statistics.median(times["assay"])
            print(
                f"{task:16s} {CASES[task][0]:3d} docs  lm-eval {t_ref:7.2f} s  assay "
                f"{t_ours:7.2f} s  ratio {t_ref / t_ours:5.2f}x  (medians of {repeats}, load "
                f"{min(loads):.1f}-{max(loads):.1f})  metrics equal {equal}/{docs}  "
                f"outputs identical {same}/{total}"
                + (f"  max |delta loglik| {worst:.2e}" if worst else "")
            )
            print(
                f"{'':16s} runs: lm-eval {', '.join(f'{t:.1f}' for t in times['lm-eval'])}; "
                f"assay {', '.join(f'{t:.1f}' for t in times['assay'])}"
            )


def classify(name: str, entry: Any) -> str:
    """Why a leaf task can or cannot run offline in assay (one reason, the first that holds)."""
    from lm_eval.tasks._index import Kind

    try:
        config = raw_config(name)
    except Exception as exc:  # a YAML lm-eval itself cannot read
        return f"unreadable config ({type(exc).__name__})"
    if code_execution_reason(config):
        return "refused: executes model code (needs scorer: code_execution, the sandbox)"
    if config.get("doc_to_image") or config.get("doc_to_audio"):
        return "refused: multimodal"
    text = " ".join(str(m) for m in config.get("metric_list") or []) + str(
        config.get("process_results") or ""
    )
    if _JUDGE.search(text):
        return "needs a judge model"
    if entry.kind is Kind.PY_TASK or config.get("class"):
        return "Python task class (its own loading)"
    if config.get("custom_dataset"):
        return "builds its data in code (may download)"
    path = str(config.get("dataset_path") or "")
    if path in _LOCAL_BUILDERS and (config.get("dataset_kwargs") or {}).get("data_files"):
        return "offline as shipped (local files)"
    return "hub dataset: offline with data_files / data_dir"


def catalogue() -> None:
    from lm_eval.tasks._index import Kind

    index = task_index()
    leaves = {n: e for n, e in index.items() if e.kind in (Kind.TASK, Kind.PY_TASK)}
    start = time.perf_counter()
    reasons = Counter(classify(name, entry) for name, entry in sorted(leaves.items()))
    groups = sum(e.kind is Kind.GROUP for e in index.values())
    print(
        f"\nlm-eval {len(leaves)} leaf tasks ({groups} groups, classified in "
        f"{time.perf_counter() - start:.0f} s):"
    )
    for reason, count in reasons.most_common():
        print(f"  {count:6d}  {reason}")
    # Instantiated for real: every leaf task whose dataset the fixtures hold.
    built, failed = 0, []
    for name in sorted(leaves):
        config = raw_config(name) if classify(name, leaves[name]).startswith("hub") else {}
        folder = str(config.get("dataset_path") or "").replace("/", "__")
        sub = str(config.get("dataset_name") or "default")
        if not folder or not (DATA / folder / sub).is_dir():
            continue
        try:
            (spec,) = expand(LmEvalArgs(task=name, num_fewshot=0, data_dir=str(DATA)))
            check_runnable(spec, None, name)
            load_task(spec)
            built += 1
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {str(exc)[:120]}")
    print(f"  instantiated offline from tests/fixtures/datasets: {built} tasks built")
    for line in failed:
        print(f"    not built: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("lm-eval: not installed (pip install -e '.[lmeval]'); skipped")
        return
    print(
        f"lm-eval tasks in assay (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"
    )
    if not args.skip_timing:
        side_by_side(args.repeats)
    catalogue()


if __name__ == "__main__":
    main()
