"""Whole-partition batch planning in ``CachedClient`` against batching within each chunk.

Run from the repository root:
    python benchmarks/bench_partition_batching.py [--n 512] [--max-tokens 4] [--batch-size 16]

One generation partition of --n requests with prompts of mixed lengths (2 to ~200 tokens, in
shuffled order) goes through ``CachedClient`` on a fresh SQLite cache twice, in the same run on
the bundled SmolLM2-135M-Instruct:

- before: the client's batch plan hidden, so each chunk of 64 misses is length-sorted and
  batched on its own (what CachedClient did before it asked the client for a plan);
- after: the client plans once over all misses and the chunks follow that plan.

Cache commits stay one transaction per chunk in both. Prints requests/s of each, the ratio,
the padding each plan leaves in its batches, and whether the outputs are identical.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from assay.core.records import Completion, Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.cache import CachedClient, RequestCache
from assay.models.transformers_backend import TransformersClient

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    "the",
    "river",
    "flows",
    "past",
    "an",
    "old",
    "mill",
    "where",
    "children",
    "play",
    "and",
    "boats",
    "drift",
    "slowly",
]


@dataclass(frozen=True)
class ChunkOnly:
    """The client without its ``plan``: CachedClient then batches within each chunk."""

    artifact_digest: str
    complete: Callable[..., list[Completion]]


def partition(n: int, max_tokens: int, seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        # Mostly short prompts with a long tail, as in a mixed scenario suite.
        words = int(min(160, 2 + rng.expovariate(1 / 30)))
        prompt = " ".join(rng.choice(WORDS) for _ in range(words))
        requests.append(Request(f"r{i}", RequestKind.GENERATE, prompt, max_tokens=max_tokens))
    return requests


def padding_share(client: TransformersClient, chunks: list[list[Request]], batch: int) -> float:
    """Pad tokens / all tokens in the prefill batches each chunk is split into."""
    tokenizer = client._loaded().tokenizer
    pad = total = 0
    for chunk in chunks:
        lengths = sorted((len(tokenizer(r.prompt).input_ids) for r in chunk), reverse=True)
        for start in range(0, len(lengths), batch):
            rows = lengths[start : start + batch]
            pad += sum(rows[0] - n for n in rows)
            total += rows[0] * len(rows)
    return pad / total


def run(client, serving: ServingConfig, requests: list[Request], chunk: int):
    with tempfile.TemporaryDirectory() as tmp:
        cache = RequestCache(f"sqlite:///{Path(tmp) / 'cache.db'}")
        cached = CachedClient(client, cache, serving, chunk_size=chunk)
        start = time.perf_counter()
        out = cached.complete(requests)
        seconds = time.perf_counter() - start
        cache.close()
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".assay" / "bench-cache")
    args = parser.parse_args()

    serving = ServingConfig(batch_size=args.batch_size, device="cpu")
    client = TransformersClient(ModelSpec("bench@v1", BUNDLED_SOURCE, serving), args.cache_dir)
    requests = partition(args.n, args.max_tokens)
    client.complete(requests[:4])  # load the model and warm up outside the timings
    print(
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
        f"(the machine is shared: compare the ratio, not the absolute rates)"
    )
    print(
        f"{args.n} generation requests, max_tokens {args.max_tokens}, batch size "
        f"{args.batch_size}, cache chunks of {args.chunk_size}"
    )
    chunks_before = [
        requests[i : i + args.chunk_size] for i in range(0, len(requests), args.chunk_size)
    ]
    planned = [requests[i] for i in client.plan(requests)]
    chunks_after = [
        planned[i : i + args.chunk_size] for i in range(0, len(planned), args.chunk_size)
    ]
    before_s, before = run(
        ChunkOnly(client.artifact_digest, client.complete), serving, requests, args.chunk_size
    )
    after_s, after = run(client, serving, requests, args.chunk_size)
    same = sum(a.text == b.text for a, b in zip(before, after, strict=True))
    errors = sum(c.error is not None for c in before + after)
    print(
        f"  before (sort within each chunk)  {before_s:7.2f} s  {args.n / before_s:7.2f} req/s"
        f"  padding {padding_share(client, chunks_before, args.batch_size):6.1%}"
    )
    print(
        f"  after  (one plan over all)       {after_s:7.2f} s  {args.n / after_s:7.2f} req/s"
        f"  padding {padding_share(client, chunks_after, args.batch_size):6.1%}"
    )
    print(f"  after / before speed ratio: {before_s / after_s:.2f}x")
    print(f"  identical outputs: {same}/{args.n}   errors: {errors}")


if __name__ == "__main__":
    main()
