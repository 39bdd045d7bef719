"""The transformers backend on a CUDA GPU: batching, half precision, device_map, OOM halving.

Run from the repository root on a machine with CUDA:
    python benchmarks/bench_gpu.py [--source hf:/dir | --random-weights DIR]

The model is the bundled one by default. ``--random-weights DIR`` is for a GPU machine the
weights cannot reach: DIR holds a model's ``config.json`` and tokenizer files (no weights);
weights are drawn from the architecture's own initializer with a fixed seed and saved in a
temporary copy, so every check below still runs the real loading and batching code.

Printed, each measured in this run on the same requests:
- generation (greedy, stop "\\n") and 4-way log-likelihood in float32 with the configured batch
  against batch size 1: requests/s, their ratio, and the agreement of the answers (identical
  completions; largest log-probability difference);
- bfloat16 against float32: requests/s, ratio and agreement (half precision changes numbers,
  so agreement is reported, not expected to be total);
- ``device_map="auto"`` against ``device="cuda"``: the same answers (accelerate's placement);
- out-of-memory halving: the same long-prompt requests with the process capped to a fraction
  of the GPU's memory, starting from a batch bound that cannot fit. The batch sizes the
  completions report, and their agreement with the uncapped run, show the halving at work.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from assay.core.records import Completion, Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.transformers_backend import TransformersClient
from assay.models.transformers_batching import release_cached_memory

REPO = Path(__file__).resolve().parent.parent


def random_weights_model(template: Path, out: Path) -> Path:
    """A copy of ``template`` (config + tokenizer) with seeded random weights saved in ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shutil.copytree(template, out, dirs_exist_ok=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out))
    model.save_pretrained(out)
    return out


def generation_requests(n: int, shots: int, max_tokens: int) -> list[Request]:
    """Arithmetic questions after ``shots`` worked examples (prompt lengths vary with ``i``)."""
    requests = []
    for i in range(n):
        examples = "".join(
            f"Q: What is {j} plus {2 * j + 1}?\nA: {3 * j + 1}\n" for j in range(shots + i % 7)
        )
        prompt = f"{examples}Q: What is {i} plus {i + 5}?\nA:"
        requests.append(
            Request(f"gen-{i}", RequestKind.GENERATE, prompt, max_tokens=max_tokens, stop=("\n",))
        )
    return requests


def loglikelihood_requests(n: int) -> list[Request]:
    """Four-way questions whose choices differ in length."""
    choices = (" red", " green and blue", " a colour", " none of them at all")
    return [
        Request(
            f"ll-{i}",
            RequestKind.LOGLIKELIHOOD,
            f"Item {i}: the colour most often named for the sky in picture {i * 7} is",
            continuations=choices,
        )
        for i in range(n)
    ]


def timed(client: TransformersClient, requests: Sequence[Request]) -> tuple[float, list]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = client.complete(requests)
    torch.cuda.synchronize()
    failed = [c.error for c in out if not c.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed, first: {failed[0]}")
    return time.perf_counter() - start, out


def same_text(a: Sequence[Completion], b: Sequence[Completion]) -> str:
    n = sum(x.text == y.text for x, y in zip(a, b, strict=True))
    return f"identical completions {n}/{len(a)}"


def logprob_gap(a: Sequence[Completion], b: Sequence[Completion]) -> str:
    gaps = [
        abs(x.logprob - y.logprob)
        for ca, cb in zip(a, b, strict=True)
        for x, y in zip(ca.choices, cb.choices, strict=True)
    ]
    picks = sum(
        max(range(len(ca.choices)), key=lambda k: ca.choices[k].logprob)
        == max(range(len(cb.choices)), key=lambda k: cb.choices[k].logprob)
        for ca, cb in zip(a, b, strict=True)
    )
    return f"max |logprob diff| {max(gaps):.2e}, same top choice {picks}/{len(a)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=BUNDLED_SOURCE)
    parser.add_argument("--random-weights", type=Path, help="config + tokenizer directory")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".assay" / "bench-cache")
    parser.add_argument("--n", type=int, default=128, help="requests per kind")
    parser.add_argument("--batch", type=int, default=64, help="batch bound of the batched runs")
    parser.add_argument("--memory-fraction", type=float, default=0.03)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: CUDA is not available on this machine; nothing to measure")
        return
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="assay-gpu-"))
    source = args.source
    if args.random_weights is not None:
        source = f"hf:{random_weights_model(args.random_weights, work / 'model')}"
        # Local model files must lie under the model roots; the random model is written here.
        roots = [r for r in (os.environ.get("ASSAY_MODEL_ROOTS"), str(work)) if r]
        os.environ["ASSAY_MODEL_ROOTS"] = os.pathsep.join(roots)
    props = torch.cuda.get_device_properties(0)
    print(
        f"== GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}; "
        f"model {source}"
    )

    def client(key: str, **serving) -> TransformersClient:
        config = ServingConfig(**{"batch_size": args.batch, **serving})
        return TransformersClient(ModelSpec(f"gpu-{key}@v1", source, config), args.cache_dir)

    gen = generation_requests(args.n, shots=3, max_tokens=24)
    ll = loglikelihood_requests(args.n)
    warm = [Request("warm", RequestKind.GENERATE, "Hello", max_tokens=2)]
    runs: dict[str, tuple[float, list, float, list]] = {}
    for key, serving in {
        "fp32-b1": {"batch_size": 1},
        "fp32": {},
        "bf16": {"dtype": "bfloat16"},
        "fp16": {"dtype": "float16"},
        "device_map": {"device_map": "auto"},
    }.items():
        c = client(key, **serving)
        c.complete(warm)
        gen_s, gen_out = timed(c, gen)
        ll_s, ll_out = timed(c, ll)
        runs[key] = (gen_s, gen_out, ll_s, ll_out)
        device = next(c._loaded().model.parameters()).device
        dtype = next(c._loaded().model.parameters()).dtype
        print(
            f"{key:<11} on {device} {dtype}: generation {args.n / gen_s:8.1f} req/s "
            f"({sum(o.completion_tokens for o in gen_out) / gen_s:8.0f} tok/s), "
            f"log-likelihood {args.n / ll_s:8.1f} req/s; batch sizes seen "
            f"{sorted(Counter(o.batch_size for o in gen_out))}"
        )

    for key, reference in (
        ("fp32", "fp32-b1"),
        ("bf16", "fp32"),
        ("fp16", "fp32"),
        ("device_map", "fp32"),
    ):
        r, ref = runs[key], runs[reference]
        print(
            f"{key} vs {reference}: generation x{ref[0] / r[0]:.2f} speed, "
            f"{same_text(r[1], ref[1])}; log-likelihood x{ref[2] / r[2]:.2f} speed, "
            f"{logprob_gap(r[3], ref[3])}"
        )

    # Out-of-memory halving: long prompts, a batch bound that cannot fit under the cap.
    long_gen = generation_requests(args.n // 2, shots=90, max_tokens=4)
    reference = client("fp32", batch_size=8)
    _, ref_out = timed(reference, long_gen)
    release_cached_memory()
    fraction = args.memory_fraction
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    capped = client("fp32", batch_size=len(long_gen))
    try:
        capped_s, capped_out = timed(capped, long_gen)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    prompt_tokens = sum(o.prompt_tokens for o in capped_out) / len(capped_out)
    sizes = dict(sorted(Counter(o.batch_size for o in capped_out).items()))
    print(
        f"OOM halving: {len(long_gen)} prompts of ~{prompt_tokens:.0f} tokens, memory capped "
        f"at {fraction:.0%} ({fraction * props.total_memory / 2**30:.1f} GiB), bound "
        f"{len(long_gen)}: batch sizes run {sizes}, "
        f"{capped_s:.1f} s; vs uncapped batch 8: {same_text(capped_out, ref_out)}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
