"""Greedy generation: assay against HELM on the same scenario, prompts and model.

Run from the repository root:  python benchmarks/bench_vs_helm.py [--n 32]

HELM (its own venv: ``$ASSAY_HELM_VENV``, default ``/work/peers/helm-venv``) runs
``synthetic_reasoning:mode=pattern_match`` (generated locally, no download) on the HF export
of the bundled model, one request at a time (``-n 1``), with a fresh cache. Its
``scenario_state.json`` gives every request's exact prompt, ``max_tokens`` and stop
sequences, and HELM's completion; assay's ``TransformersClient`` then runs exactly those
prompts with the same settings (each prompt a user turn of the chat template, as HELM does
for a tokenizer with one), and so does the llama.cpp client when ``llama_cpp`` imports.

Printed: HELM's request execution time (the sum of its per-request times, which with one
thread is the wall time of execution) against assay's ``complete`` wall time on the same
requests, the ratio (target for llama.cpp: >= 10x), and answer agreement: the fraction of
identical completions, raw and after both are cut at the first stop sequence or
end-of-sequence token text and stripped of surrounding white space (HELM's Hugging Face client
samples at temperature 1e-7 rather than taking the argmax, decodes special tokens into the
text, and ends at a stop token by treating it as end-of-sequence).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from peers import DEFAULT_CACHE, PEER_MODEL_NAME, find_peer, peer_model_dir, print_header, run_peer

from assay.core.records import Completion, Request, RequestKind
from assay.models.base import ModelClient, ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.factory import build_client

RUN_ENTRY = f"synthetic_reasoning:mode=pattern_match,model=huggingface/{PEER_MODEL_NAME}"
SUITE = "assay-bench"
END_TEXTS = ("<|im_end|>", "<|endoftext|>")  # SmolLM2's end-of-sequence token texts


def helm_requests(state: dict) -> tuple[list[Request], list[str], list[float]]:
    """assay requests for HELM's request states, HELM's completions and request times."""
    requests, answers, times = [], [], []
    for k, item in enumerate(state["request_states"]):
        request, result = item["request"], item["result"]
        if not result.get("success", False):
            raise RuntimeError(f"HELM request {k} failed: {result.get('error')}")
        requests.append(
            Request(
                instance_id=item["instance"].get("id") or f"helm-{k}",
                kind=RequestKind.GENERATE,
                prompt=request["prompt"],
                max_tokens=int(request["max_tokens"]),
                stop=tuple(request.get("stop_sequences") or ()),
            )
        )
        answers.append(result["completions"][0]["text"])
        times.append(float(result["request_time"]))
    return requests, answers, times


def normalized(text: str, stops: Sequence[str]) -> str:
    """The answer as a metric sees it: cut at a stop sequence or end text, white space off."""
    for marker in (*stops, *END_TEXTS):
        if marker and marker in text:
            text = text[: text.index(marker)]
    return text.strip()


def agreement(ours: list[Completion], theirs: list[str], requests: list[Request]) -> str:
    failed = [c.error for c in ours if not c.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed, first: {failed[0]}")
    n = len(theirs)
    raw = sum(c.text == t for c, t in zip(ours, theirs, strict=True))
    norm = sum(
        normalized(c.text, r.stop) == normalized(t, r.stop)
        for c, t, r in zip(ours, theirs, requests, strict=True)
    )
    return (
        f"identical completions {raw}/{n} = {raw / n:.3f}, "
        f"after normalizing {norm}/{n} = {norm / n:.3f}"
    )


def timed_complete(client: ModelClient, requests: list[Request]) -> tuple[float, float, list]:
    """(load + warm-up seconds, complete() seconds, completions)."""
    start = time.perf_counter()
    client.complete([Request("warm-up", RequestKind.GENERATE, "Hello", max_tokens=1)])
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    completions = client.complete(requests)
    return load_s, time.perf_counter() - start, completions


def llama_cpp_floor(client, requests: list[Request], completions: list[Completion]) -> str:
    """The token work the llama.cpp client did and the time llama.cpp alone needs for it.

    Work: every prompt position once (shared prefixes count once, as the client runs them)
    plus every generated token. Rate: one bare ``llama_decode`` of 512 prompt tokens on the
    client's own context, the fastest way llama.cpp evaluates tokens here.
    """
    import llama_cpp
    import numpy as np

    from assay.models.llamacpp_backend import _set_entry
    from assay.models.local_requests import common_prefix_len

    lm = client._loaded()
    prompts = sorted(client._prepare(lm, i, r).prompt_ids for i, r in enumerate(requests))
    positions = len(prompts[0]) + sum(
        len(b) - common_prefix_len(a, b) for a, b in itertools.pairwise(prompts)
    )
    generated = sum(c.completion_tokens for c in completions)
    tokens = np.random.default_rng(0).integers(100, 30000, 512)
    with lm.lock:
        for position, token in enumerate(tokens):
            _set_entry(lm.batch, position, int(token), position, 0, position == len(tokens) - 1)
        lm.batch.n_tokens = len(tokens)
        start = time.perf_counter()
        llama_cpp.llama_decode(lm.ctx, lm.batch)
        rate = len(tokens) / (time.perf_counter() - start)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(lm.ctx), True)
    work = positions + generated
    return (
        f"{positions} prompt positions (shared prefixes once) + {generated} generated tokens = "
        f"{work} token evaluations; bare llama_decode runs {rate:.0f} tokens/s here, so "
        f"llama.cpp alone needs >= {work / rate:.1f} s for them"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="HELM eval instances (-m)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--reuse-helm", action="store_true", help="reuse HELM's last run instead of rerunning it"
    )
    parser.add_argument("--show", type=int, default=3, help="print this many answer pairs")
    args = parser.parse_args()

    peer = find_peer("HELM", "ASSAY_HELM_VENV", Path("/work/peers/helm-venv"), "helm.benchmark")
    if peer is None:
        return
    print_header("greedy generation: assay vs HELM (synthetic_reasoning pattern_match)")
    model_dir = peer_model_dir(args.cache_dir)
    # Kept after the run, so HELM's prompts and answers can be read; emptied before each run.
    work = args.cache_dir / "helm-run"
    state_files = list((work / "benchmark_output" / "runs" / SUITE).glob("*/scenario_state.json"))
    if args.reuse_helm and len(state_files) == 1:
        wall = float("nan")
        print(f"reusing HELM's previous run in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        argv = [
            str(peer.bin("helm-run")),
            "--run-entries",
            RUN_ENTRY,
            "--enable-local-huggingface-models",
            str(model_dir),
            "--suite",
            SUITE,
            "-m",
            str(args.n),
            "-n",
            "1",
            "--output-path",
            str(work / "benchmark_output"),
            "--local-path",
            str(work / "prod_env"),
        ]
        wall = run_peer(peer, argv, cwd=work).wall_s
        state_files = list(
            (work / "benchmark_output" / "runs" / SUITE).glob("*/scenario_state.json")
        )
    if len(state_files) != 1:
        raise RuntimeError(f"expected one HELM run under {work}, found {len(state_files)}")
    requests, answers, times = helm_requests(json.loads(state_files[0].read_text()))
    helm_s = sum(times)
    prompt_chars = sum(len(r.prompt) for r in requests) / len(requests)
    print(
        f"{len(requests)} requests, max_tokens {requests[0].max_tokens}, stop "
        f"{list(requests[0].stop)}, mean prompt {prompt_chars:.0f} chars"
    )
    print(f"HELM     request execution {helm_s:7.2f} s   (helm-run process wall {wall:.1f} s)")

    # HELM wraps every prompt as one user turn of the tokenizer's chat template when the
    # tokenizer has one (SmolLM2-Instruct does); assay's serving config does the same.
    serving = ServingConfig(chat_template=True)
    assay = build_client(ModelSpec("bench@v1", BUNDLED_SOURCE, serving), args.cache_dir)
    load_s, assay_s, ours = timed_complete(assay, requests)
    print(
        f"assay    complete          {assay_s:7.2f} s   (load+warm-up {load_s:.2f} s, "
        f"batch {serving.batch_size})   HELM / assay = {helm_s / assay_s:.2f}"
    )
    print(f"assay vs HELM: {agreement(ours, answers, requests)}")
    for request, answer, completion in list(zip(requests, answers, ours, strict=True))[: args.show]:
        print(f"  {request.instance_id}: HELM {answer!r}  assay {completion.text!r}")

    try:
        llama = build_client(
            ModelSpec("bench-llamacpp@v1", "llamacpp:" + BUNDLED_SOURCE, serving), args.cache_dir
        )
        load_s, llama_s, llama_out = timed_complete(llama, requests)
    except ImportError as exc:
        print(f"llama.cpp: {exc}; skipped")
        return
    ratio = helm_s / llama_s
    print(
        f"llama.cpp complete          {llama_s:7.2f} s   (load+warm-up {load_s:.2f} s)   "
        f"HELM / llama.cpp = {ratio:.2f} (target >= 10: {'met' if ratio >= 10 else 'NOT met'})"
    )
    print(f"llama.cpp token work: {llama_cpp_floor(llama, requests, llama_out)}")
    print(f"  (10x HELM would be {helm_s / 10:.1f} s)")
    print(f"llama.cpp vs HELM: {agreement(llama_out, answers, requests)}")
    print(
        f"llama.cpp vs assay transformers: {agreement(llama_out, [c.text for c in ours], requests)}"
    )


if __name__ == "__main__":
    main()
