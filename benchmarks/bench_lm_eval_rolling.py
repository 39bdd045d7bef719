"""lm-eval perplexity (loglikelihood_rolling) tasks in assay: time and agreement against lm-eval.

Run from the repository root:  python benchmarks/bench_lm_eval_rolling.py [--repeats 3]

``wikitext`` on the 17 prose documents of ``tests/fixtures/lm_eval_rolling`` through lm-eval
(``simple_evaluate`` on its ``HFLM``, the bundled model exported to a Hugging Face directory,
fp32, batch 16, ``max_length`` W) and through assay (``scenario: lm_eval``, the transformers
client, batch 16, ``max_context`` W, scored by lm-eval's ``process_results``), both in this
process with the model loaded and warmed up first, at W = 64 (several rolling windows per
document) and W = 2048 (each document whole). Printed: median wall times over ``--repeats``
runs with the load average, their ratio, the largest difference between the two sides'
per-document log-likelihoods and between their corpus figures (word perplexity, byte
perplexity, bits per byte).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assay.evaluate.run import evaluate, select_instances  # noqa: E402
from assay.evaluate.suite import parse_suite  # noqa: E402
from assay.models.base import ModelSpec, ServingConfig  # noqa: E402
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path  # noqa: E402
from assay.models.factory import build_client  # noqa: E402
from assay.models.transformers_loading import converted_model_dir  # noqa: E402
from assay.scenarios.lm_eval_tasks import task_index  # noqa: E402
from assay.scoring.lm_eval_scores import score_lm_eval  # noqa: E402
from assay.scoring.scorecard import score_partition  # noqa: E402

PROSE = REPO / "tests" / "fixtures" / "lm_eval_rolling" / "prose.jsonl"
CACHE = REPO / ".assay" / "bench-cache"
N_DOCS = 17
BATCH = 16
METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def run_lm_eval(lm: Any, manager: Any) -> tuple[float, dict[int, float], dict[str, float]]:
    from lm_eval import simple_evaluate

    start = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=["wikitext"],
        task_manager=manager,
        limit=N_DOCS,
        log_samples=True,
        bootstrap_iters=0,
    )
    seconds = time.perf_counter() - start
    lls = {s["doc_id"]: float(s["resps"][0][0]) for s in out["samples"]["wikitext"]}
    figures = {m: float(out["results"]["wikitext"][f"{m},none"]) for m in METRICS}
    return seconds, lls, figures


def run_assay(client: Any) -> tuple[float, dict[int, float], dict[str, float]]:
    entry = {
        "scenario": "lm_eval",
        "args": {"task": "wikitext", "data_files": {"test": str(PROSE)}},
    }
    suite = parse_suite({"scenarios": {"t": entry}}, "bench", REPO)
    config = suite["t"]
    start = time.perf_counter()
    instances, _ = select_instances(config, config.build().load().instances, N_DOCS)
    outputs = evaluate(client, config, instances).outputs
    scored = score_lm_eval(config.lm_eval, instances, outputs)
    card = score_partition(instances, outputs, scored=scored).card
    seconds = time.perf_counter() - start
    lls = {int(o.request.instance_id): o.completion.choices[0].logprob for o in outputs}
    figures = {r.metric: r.mean for r in card if r.metric in METRICS and r.group == ""}
    return seconds, lls, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    print(
        f"lm-eval perplexity in assay (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    model_dir = converted_model_dir(bundled_gguf_path(), CACHE)
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "include": str(task_index()["wikitext"].yaml_path),
            "task": "wikitext",
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {
                "data_files": {s: str(PROSE) for s in ("train", "validation", "test")}
            },
        }
        (Path(tmp) / "wikitext.yaml").write_text(yaml.safe_dump(config))
        manager = TaskManager(include_path=tmp)
        for window in (64, 2048):
            lm = HFLM(
                pretrained=str(model_dir),
                dtype="float32",
                batch_size=BATCH,
                device="cpu",
                max_length=window,
            )
            serving = ServingConfig(batch_size=BATCH, max_context=window)
            client = build_client(ModelSpec(f"bench{window}@v1", BUNDLED_SOURCE, serving), CACHE)
            run_assay(client)  # warm-up: model load, lm-eval's index, the data
            run_lm_eval(lm, manager)
            times: dict[str, list[float]] = {"lm-eval": [], "assay": []}
            loads = []
            for _ in range(args.repeats):
                ref = run_lm_eval(lm, manager)
                ours = run_assay(client)
                times["lm-eval"].append(ref[0])
                times["assay"].append(ours[0])
                loads.append(os.getloadavg()[0])
            worst_ll = max(abs(ref[1][d] - ours[1][d]) for d in ref[1])
            worst_rel = max(abs(ref[2][m] - ours[2][m]) / abs(ref[2][m]) for m in METRICS)
            t_ref, t_ours = statistics.median(times["lm-eval"]), statistics.median(times["assay"])
            print(
                f"wikitext {N_DOCS} docs, window {window:4d}: lm-eval {t_ref:6.2f} s  assay "
                f"{t_ours:6.2f} s  ratio {t_ref / t_ours:5.2f}x  (medians of {args.repeats}, "
                f"load {min(loads):.1f}-{max(loads):.1f})  max |delta loglik| {worst_ll:.2e}  "
                f"max relative delta of the corpus figures {worst_rel:.1e}"
            )
            print(
                "   " + ", ".join(f"{m} {ref[2][m]:.4f} (assay {ours[2][m]:.4f})" for m in METRICS)
            )


if __name__ == "__main__":
    main()
