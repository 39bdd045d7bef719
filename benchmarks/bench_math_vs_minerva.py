"""MATH answers judged by assay's math_equivalence and by lm-eval's minerva_math checks, on the
bundled model's own answers to real MATH-500 problems.

Run from the repository root:  python benchmarks/bench_math_vs_minerva.py [--n 56]

lm-eval runs its ``minerva_math500`` task (4-shot Minerva prompts, greedy, until "Problem:")
in its own environment (``$ASSAY_LMEVAL_VENV``, default ``.peers/lmeval-venv``: ``make
lmeval-venv``) on the HF export of the bundled model, reading the problems from
tests/fixtures/datasets/HuggingFaceH4__MATH-500 instead of the hub, with ``max_gen_toks``
lowered to keep the run short on CPU. Each logged answer is then judged by assay's
``math_equivalence`` against the problem's ``answer`` field. Printed: how often each check
says right, the agreement of assay with Minerva's answer check (``exact_match``) and with
lm-eval's ``math_verify``, and every disagreement with both verdicts and the answer's end,
to judge by hand. Without the peer environment it prints a "skipped" line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from peers import DEFAULT_CACHE, REPO, find_peer, peer_model_dir, print_header, run_peer

from assay.scoring.math_equivalence import equivalent

TASK = "assay_minerva_math500_fixture"
FIXTURE = REPO / "tests" / "fixtures" / "datasets" / "HuggingFaceH4__MATH-500" / "default"

# Runs inside the lm-eval venv: argv = model dir, task folder, output path, limit, max tokens.
DRIVER = r"""
import json, logging, sys, time
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
model_dir, task_dir, out_path, limit, max_tokens = sys.argv[1:6]
lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=8, device="cpu")
start = time.perf_counter()
results = simple_evaluate(
    model=lm, tasks=["TASK"], task_manager=TaskManager(include_path=task_dir),
    log_samples=True, limit=int(limit), gen_kwargs=f"max_gen_toks={max_tokens}",
)
items = [
    {"problem": s["doc"]["problem"], "response": s["filtered_resps"][0],
     "exact_match": s["exact_match"], "math_verify": s["math_verify"]}
    for s in results["samples"]["TASK"]
]
json.dump({"eval_s": time.perf_counter() - start, "items": items}, open(out_path, "w"))
""".replace("TASK", TASK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=56, help="problems (the fixture holds 56)")
    parser.add_argument("--max-tokens", type=int, default=160, help="lm-eval's max_gen_toks")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()

    peer = find_peer(
        "lm-evaluation-harness",
        "ASSAY_LMEVAL_VENV",
        REPO / ".peers" / "lmeval-venv",
        "lm_eval.tasks.minerva_math.utils",
    )
    if peer is None:
        return
    print_header("MATH answer checks: assay's math_equivalence vs lm-eval's minerva_math")
    rows = [json.loads(line) for line in (FIXTURE / "test.jsonl").read_text().splitlines()]
    answers = {row["problem"]: row["answer"] for row in rows}
    model_dir = peer_model_dir(args.cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # lm-eval's own task, reading the fixture instead of the hub.
        included = next(
            peer.venv.glob(
                "lib/python*/site-packages/lm_eval/tasks/minerva_math/minerva_math500.yaml"
            )
        )
        (folder / f"{TASK}.yaml").write_text(
            f"include: {included}\n"
            f"task: {TASK}\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {FIXTURE / 'test.jsonl'}\n"
        )
        (folder / "driver.py").write_text(DRIVER)
        out = folder / "result.json"
        argv = [str(peer.python), str(folder / "driver.py"), str(model_dir), str(folder)]
        run = run_peer(peer, [*argv, str(out), str(args.n), str(args.max_tokens)], cwd=folder)
        result = json.loads(out.read_text())

    items = result["items"]
    for item in items:
        item["assay"] = int(equivalent(answers[item["problem"]], item["response"]))
    n = len(items)
    agree_em = sum(i["assay"] == i["exact_match"] for i in items)
    agree_mv = sum(i["assay"] == i["math_verify"] for i in items)
    print(
        f"{n} problems, 4-shot, greedy, max_gen_toks {args.max_tokens}; lm-eval evaluate "
        f"{result['eval_s']:.1f} s (process wall {run.wall_s:.1f} s)"
    )
    print(
        f"right: assay {sum(i['assay'] for i in items)}, Minerva exact_match "
        f"{sum(i['exact_match'] for i in items)}, lm-eval math_verify "
        f"{sum(i['math_verify'] for i in items)}"
    )
    print(f"assay vs Minerva's answer check: {agree_em}/{n} agree")
    print(f"assay vs lm-eval's math_verify:  {agree_mv}/{n} agree")
    for item in items:
        if item["assay"] != item["exact_match"] or item["assay"] != item["math_verify"]:
            print(
                f"- reference {answers[item['problem']]!r}: assay {item['assay']}, "
                f"exact_match {item['exact_match']}, math_verify {item['math_verify']}; "
                f"answer ends {item['response'][-160:]!r}"
            )


if __name__ == "__main__":
    main()
