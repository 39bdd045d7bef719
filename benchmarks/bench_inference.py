"""Throughput of the local transformers client against the bare model, and of the cache.

Run from the repository root:  python benchmarks/bench_inference.py [--n 32] [--max-tokens 8]

Prints, all measured in this one run on the bundled SmolLM2-135M-Instruct:
(a) requests/s of ``TransformersClient.complete`` for greedy generation and log-likelihood;
(b) the bare model doing the same work on the same token ids, in the same batches, with none
    of the client's bookkeeping (generation: prefill + the same number of greedy steps on a KV
    cache; log-likelihood: one padded forward per batch of prompt+choice rows, which is how a
    client without prompt sharing would score them), and the ratio client / bare;
(c) a cold run and a warm rerun through ``CachedClient`` on a fresh SQLite cache.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from assay.core.records import Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.cache import CachedClient, RequestCache
from assay.models.transformers_backend import TransformersClient
from assay.models.transformers_loading import load_model

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["The river", "My neighbour's old dog", "A small red kite", "Every winter the lake"]
VERBS = ["flows past", "sleeps beside", "drifts above", "freezes near"]
PLACES = ["the mill", "the quiet harbour at dawn", "our school", "the long stone bridge"]
CHOICES = (" yes", " no", " maybe later", " it depends on the weather")


def prompts(n: int) -> list[str]:
    """Deterministic short prompts of varied length."""
    return [
        f"{SUBJECTS[i % 4]} {VERBS[(i // 4) % 4]} {PLACES[(i // 16) % 4]}, and then"
        for i in range(n)
    ]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@torch.inference_mode()
def bare_generation(client: TransformersClient, texts: list[str], steps: int, batch: int):
    """Prefill + ``steps`` greedy decode steps per batch, straight on the model."""
    lm = load_model(client.model_dir, client.spec.serving.dtype)
    from transformers import DynamicCache

    encoded = sorted((lm.tokenizer(t).input_ids for t in texts), key=len, reverse=True)
    for start in range(0, len(encoded), batch):
        rows = encoded[start : start + batch]
        width = max(map(len, rows))
        ids = torch.tensor([[lm.pad_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=lm.model.config)
        out = lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        for _ in range(steps - 1):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            pos = pos[:, -1:] + 1
            out = lm.model(
                input_ids=nxt,
                attention_mask=mask,
                position_ids=pos,
                cache=out.cache,
                use_cache=True,
            )


@torch.inference_mode()
def bare_loglikelihood(client: TransformersClient, texts: list[str], batch: int):
    """One right-padded forward per batch of prompt+choice rows, log-probs gathered."""
    lm = load_model(client.model_dir, client.spec.serving.dtype)
    rows = [lm.tokenizer(t + c).input_ids for t in texts for c in CHOICES]
    rows.sort(key=len, reverse=True)
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        width = max(map(len, part))
        ids = torch.tensor([r + [lm.pad_id] * (width - len(r)) for r in part])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in part])
        logits = lm.model(input_ids=ids, attention_mask=mask).logits
        logits.log_softmax(-1).gather(-1, ids[:, 1:, None].clamp(min=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="requests per kind")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".assay" / "bench-cache")
    args = parser.parse_args()

    serving = ServingConfig(batch_size=args.batch_size)
    client = TransformersClient(ModelSpec("bench@v1", BUNDLED_SOURCE, serving), args.cache_dir)
    load_s, _ = timed(lambda: load_model(client.model_dir, serving.dtype))
    texts = prompts(args.n)
    gen_requests = [
        Request(f"g{i}", RequestKind.GENERATE, t, max_tokens=args.max_tokens)
        for i, t in enumerate(texts)
    ]
    ll_requests = [
        Request(f"l{i}", RequestKind.LOGLIKELIHOOD, t, continuations=CHOICES)
        for i, t in enumerate(texts)
    ]
    print(
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
        f"model load {load_s:.2f} s (conversion excluded)"
    )
    print(
        f"{args.n} requests per kind, batch size {args.batch_size}, "
        f"max_tokens {args.max_tokens}, {len(CHOICES)} choices per log-likelihood request"
    )

    client.complete(gen_requests[:2])  # warm-up: first-call allocations
    gen_s, gen_out = timed(lambda: client.complete(gen_requests))
    steps = max(c.completion_tokens for c in gen_out)
    bare_gen_s, _ = timed(lambda: bare_generation(client, texts, steps, args.batch_size))
    ll_s, _ = timed(lambda: client.complete(ll_requests))
    bare_ll_s, _ = timed(lambda: bare_loglikelihood(client, texts, args.batch_size))

    print("(a) client throughput")
    print(f"    generation      {gen_s:7.2f} s  {args.n / gen_s:7.2f} req/s")
    print(f"    log-likelihood  {ll_s:7.2f} s  {args.n / ll_s:7.2f} req/s")
    print("(b) bare model on the same token inputs")
    print(f"    generation      {bare_gen_s:7.2f} s  client/bare = {gen_s / bare_gen_s:5.2f}")
    print(
        f"    log-likelihood  {bare_ll_s:7.2f} s  client/bare = {ll_s / bare_ll_s:5.2f}"
        "  (bare scores every prompt once per choice)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cache = RequestCache(f"sqlite:///{Path(tmp) / 'cache.db'}")
        cached = CachedClient(client, cache, serving)
        mixed = gen_requests + ll_requests
        cold_s, _ = timed(lambda: cached.complete(mixed))
        warm_s, warm = timed(lambda: cached.complete(mixed))
        cache.close()
    hits = sum(c.cached for c in warm)
    print("(c) CachedClient on a fresh SQLite cache")
    print(
        f"    cold {cold_s:7.2f} s   warm {warm_s:7.4f} s   cold/warm = {cold_s / warm_s:7.1f}"
        f"   warm hits {hits}/{len(mixed)}"
    )


if __name__ == "__main__":
    main()
