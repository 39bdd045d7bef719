"""Multiple-choice log-likelihood scoring: assay against lm-evaluation-harness, same items.

Run from the repository root:  python benchmarks/bench_vs_lm_eval.py [--n 110]

The default suite's ``facts-mc`` entry (``facts_mc``, multiple_choice_separate) is built by
assay; its requests' exact prompt and continuation strings are written to a JSONL file with an
lm-eval task YAML (``doc_to_text: prompt``, ``doc_to_choice: choices``, empty target
delimiter), so both tools score identical strings. lm-eval runs in its own venv
(``$ASSAY_LMEVAL_VENV``, default ``/work/peers/lmeval-venv``) on the HF export of the bundled
model (fp32, batch 16, HF backend) through its Python API, which lets the model load be timed
apart from the scoring. assay scores with ``TransformersClient`` (batch 16) in this process,
after loading the model and a warm-up. Printed: both scoring times and their ratio, both
accuracies, the fraction of items where the argmax choice agrees, and the largest difference
of a choice log-likelihood; the same for the llama.cpp client when ``llama_cpp`` imports.
Without lm-eval installed it prints a "skipped" line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from peers import DEFAULT_CACHE, find_peer, peer_model_dir, print_header, run_peer

from assay.core.records import Request
from assay.evaluate.run import select_instances
from assay.evaluate.suite import load_suite
from assay.models.base import ModelClient, ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.factory import build_client

TASK = "assay_facts_mc"
BATCH_SIZE = 16

# Runs inside the lm-eval venv: argv = model dir, task folder, output JSON path.
LMEVAL_DRIVER = r"""
import json, sys, time
start = time.perf_counter()
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
imported = time.perf_counter()
model_dir, task_dir, out_path, task, batch = sys.argv[1:6]
lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=int(batch), device="cpu")
loaded = time.perf_counter()
results = simple_evaluate(
    model=lm, tasks=[task], task_manager=TaskManager(include_path=task_dir), log_samples=True
)
evaluated = time.perf_counter()
items = [
    {"doc_id": s["doc_id"], "lls": [float(r[0]) for r in s["filtered_resps"]], "acc": s["acc"]}
    for s in results["samples"][task]
]
json.dump(
    {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "eval_s": evaluated - loaded,
        "acc": results["results"][task]["acc,none"],
        "items": items,
    },
    open(out_path, "w"),
)
"""


@dataclass(frozen=True, slots=True)
class Scored:
    """One tool's scores: per item, the log-likelihood of every choice."""

    name: str
    seconds: float
    lls: list[list[float]]

    def argmax(self) -> list[int]:
        return [max(range(len(row)), key=row.__getitem__) for row in self.lls]

    def acc(self, gold: list[int]) -> float:
        return sum(a == g for a, g in zip(self.argmax(), gold, strict=True)) / len(gold)


def write_task(requests: list[Request], gold: list[int], folder: Path) -> None:
    """The items as JSONL plus an lm-eval task YAML that scores exactly these strings."""
    data = folder / "items.jsonl"
    with data.open("w") as out:
        for request, label in zip(requests, gold, strict=True):
            row = {
                "id": request.instance_id,
                "prompt": request.prompt,
                "choices": list(request.continuations),
                "label": label,
            }
            out.write(json.dumps(row) + "\n")
    (folder / f"{TASK}.yaml").write_text(
        "\n".join(
            [
                f"task: {TASK}",
                "dataset_path: json",
                f"dataset_kwargs: {{data_files: {{test: {json.dumps(str(data))}}}}}",
                "test_split: test",
                "output_type: multiple_choice",
                "doc_to_text: prompt",
                "doc_to_choice: choices",
                "doc_to_target: label",
                # The continuations already carry their leading space.
                'target_delimiter: ""',
                "metric_list:",
                "  - metric: acc",
                "    aggregation: mean",
                "    higher_is_better: true",
                "",
            ]
        )
    )


def score_with(client: ModelClient, name: str, requests: list[Request]) -> tuple[Scored, float]:
    """Score after a warm-up (model load), returning the scores and the load time."""
    start = time.perf_counter()
    client.complete(requests[:1])
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    completions = client.complete(requests)
    seconds = time.perf_counter() - start
    failed = [c.error for c in completions if not c.ok]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} requests failed, first: {failed[0]}")
    lls = [[c.logprob for c in completion.choices] for completion in completions]
    return Scored(name, seconds, lls), load_s


def compare(reference: Scored, other: Scored, gold: list[int]) -> str:
    agree = sum(a == b for a, b in zip(reference.argmax(), other.argmax(), strict=True))
    worst = max(
        abs(x - y)
        for ra, rb in zip(reference.lls, other.lls, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )
    return (
        f"argmax agreement {agree}/{len(gold)} = {agree / len(gold):.3f}, "
        f"acc {reference.acc(gold):.4f} vs {other.acc(gold):.4f}, "
        f"max |delta loglik| {worst:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=110, help="facts_mc items (the suite uses 110)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()

    peer = find_peer(
        "lm-evaluation-harness",
        "ASSAY_LMEVAL_VENV",
        Path("/work/peers/lmeval-venv"),
        "lm_eval.models.huggingface",
    )
    if peer is None:
        return
    print_header("multiple-choice log-likelihoods: assay vs lm-evaluation-harness")
    config = load_suite()["facts-mc"]
    instances, train = select_instances(config, config.build().load().instances, args.n)
    requests = config.build_requests(instances, train)
    gold = [instance.correct_indices[0] for instance in instances]
    model_dir = peer_model_dir(args.cache_dir)

    serving = ServingConfig(batch_size=BATCH_SIZE)
    assay_client = build_client(ModelSpec("bench@v1", BUNDLED_SOURCE, serving), args.cache_dir)
    assay, assay_load = score_with(assay_client, "assay", requests)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_task(requests, gold, folder)
        (folder / "driver.py").write_text(LMEVAL_DRIVER)
        out = folder / "result.json"
        argv = [str(peer.python), str(folder / "driver.py"), str(model_dir), str(folder)]
        run = run_peer(peer, [*argv, str(out), TASK, str(BATCH_SIZE)], cwd=folder)
        result = json.loads(out.read_text())
    items = sorted(result["items"], key=lambda item: item["doc_id"])
    lmeval = Scored("lm-eval", result["eval_s"], [item["lls"] for item in items])

    print(
        f"{len(requests)} items, {sum(len(r.continuations) for r in requests)} choices, "
        f"fp32, batch {BATCH_SIZE}, model dir {model_dir}"
    )
    print(f"assay   load+warm-up {assay_load:6.2f} s   scoring {assay.seconds:7.2f} s")
    print(
        f"lm-eval import {result['import_s']:6.2f} s   load {result['load_s']:6.2f} s   "
        f"evaluate {lmeval.seconds:7.2f} s   (process wall {run.wall_s:.1f} s)"
    )
    print(f"lm-eval evaluate / assay scoring = {lmeval.seconds / assay.seconds:.2f}")
    print(f"lm-eval reported acc {result['acc']:.4f}")
    print(f"assay vs lm-eval: {compare(assay, lmeval, gold)}")

    try:
        llamacpp_client = build_client(
            ModelSpec("bench-llamacpp@v1", "llamacpp:" + BUNDLED_SOURCE, serving), args.cache_dir
        )
        llamacpp, llamacpp_load = score_with(llamacpp_client, "llama.cpp", requests)
    except ImportError as exc:
        print(f"llama.cpp: {exc}; skipped")
        return
    print(
        f"llama.cpp load+warm-up {llamacpp_load:.2f} s   scoring {llamacpp.seconds:.2f} s   "
        f"lm-eval evaluate / llama.cpp = {lmeval.seconds / llamacpp.seconds:.2f}"
    )
    print(f"assay (transformers) vs llama.cpp: {compare(assay, llamacpp, gold)}")


if __name__ == "__main__":
    main()
