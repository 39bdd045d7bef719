"""Instances/second of every adapter method of the default suite through assay's pipeline.

Run from the repository root:  python benchmarks/bench_adapters.py [--n 32]

For each adapter method the default suite uses, its first scenario's first ``--n`` eval
instances go through ``assay.evaluate.run.evaluate`` with the bundled model (built by
``build_client``, no request cache). The reference, measured in the same run, is the bare
model doing the same token work with nothing around it: the exact token ids the client fed
the model, in the same batches (same length-sorted order, same batch size), through a
minimal ``model(input_ids, attention_mask)`` loop under ``torch.inference_mode()``:
- generation: one prefill of the batch's prompts (it predicts the first token), then one
  greedy decode step on the KV cache per further token of the longest completion the client
  produced in that batch (a completion of n tokens takes n - 1 decode steps; one that ended at
  end-of-sequence took one more in the client, which the reference leaves out);
- log-likelihood methods: one right-padded forward of every context+choice row of the batch
  (a plain scorer: logits and log-softmax at every position, no prompt sharing),
  log-probabilities of the choice tokens gathered. The client shares a prompt among several
  choices, and for a single continuation computes logits only where continuation tokens are
  predicted; a pipeline/forward ratio below 1 means such savings exceed its bookkeeping.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peers import DEFAULT_CACHE, print_header

from assay.core.records import Completion, Request, RequestKind
from assay.evaluate.run import evaluate, select_instances
from assay.evaluate.suite import ScenarioConfig, load_suite
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.factory import build_client
from assay.models.transformers_backend import TransformersClient
from assay.models.transformers_loading import load_model


@dataclass(frozen=True, slots=True)
class MethodResult:
    method: str
    scenario: str
    n_instances: int
    n_requests: int
    pipeline_s: float
    forward_s: float


def first_config_per_method(configs: Sequence[ScenarioConfig]) -> dict[str, ScenarioConfig]:
    """The first suite entry using each adapter method, in suite order."""
    chosen: dict[str, ScenarioConfig] = {}
    for config in configs:
        chosen.setdefault(str(config.adapter.method), config)
    return chosen


def _budget(client: TransformersClient, lm) -> int:
    return min(client.spec.serving.max_context, lm.max_positions)


@torch.inference_mode()
def forward_generation(
    client: TransformersClient, requests: Sequence[Request], completions: Sequence[Completion]
) -> float:
    """Seconds of prefill + greedy decode on the client's prompt ids, batched like the client."""
    from transformers import DynamicCache

    lm = load_model(client.model_dir, client.spec.serving.dtype)
    # The client's own request preparation gives the exact (truncated) prompt ids it ran.
    rows = [client._gen_row(lm, i, r, _budget(client, lm)) for i, r in enumerate(requests)]
    rows.sort(key=lambda r: (-len(r.prompt_ids), r.index))
    batch_size = client.spec.serving.batch_size
    start = time.perf_counter()
    for first in range(0, len(rows), batch_size):
        batch = rows[first : first + batch_size]
        # The prefill predicts the first token, each decode step one more.
        steps = max(completions[r.index].completion_tokens for r in batch) - 1
        width = max(len(r.prompt_ids) for r in batch)
        pads = [width - len(r.prompt_ids) for r in batch]
        ids = torch.tensor(
            [[lm.pad_id] * p + r.prompt_ids for p, r in zip(pads, batch, strict=True)]
        )
        mask = torch.tensor([[0] * p + [1] * (width - p) for p in pads])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=lm.model.config)
        out = lm.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{lm.cache_kwarg: cache},
        )
        for _ in range(steps):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            positions = positions[:, -1:] + 1
            out = lm.model(
                input_ids=token,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{lm.cache_kwarg: out[lm.cache_kwarg]},
            )
    return time.perf_counter() - start


@torch.inference_mode()
def forward_loglikelihood(client: TransformersClient, requests: Sequence[Request]) -> float:
    """Seconds of one padded forward per batch of context+choice rows, batched like the client."""
    lm = load_model(client.model_dir, client.spec.serving.dtype)
    rows = [client._ll_row(lm, i, r, _budget(client, lm)) for i, r in enumerate(requests)]
    rows.sort(key=lambda r: (-r.prefix_len, r.index))
    batch_size = client.spec.serving.batch_size
    # The client packs whole requests while their choices fit the batch size.
    batches: list[list] = []
    for row in rows:
        if batches and sum(r.n_choices for r in batches[-1]) + row.n_choices <= batch_size:
            batches[-1].append(row)
        else:
            batches.append([row])
    start = time.perf_counter()
    for batch in batches:
        seqs = [
            (g.context_ids + cont, len(g.context_ids))
            for row in batch
            for g in row.groups
            for cont in g.continuation_ids
        ]
        width = max(len(s) for s, _ in seqs)
        ids = torch.tensor([s + [lm.pad_id] * (width - len(s)) for s, _ in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in seqs])
        logprobs = lm.model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        for b, (seq, n_ctx) in enumerate(seqs):
            steps = torch.arange(n_ctx - 1, len(seq) - 1)
            logprobs[b, steps, torch.tensor(seq[n_ctx:])].sum()
    return time.perf_counter() - start


def measure(client: TransformersClient, config: ScenarioConfig, n: int) -> MethodResult:
    data = config.build().load()
    instances, train = select_instances(config, data.instances, max_instances=n)
    start = time.perf_counter()
    run = evaluate(client, config, instances, train)
    pipeline_s = time.perf_counter() - start
    if run.n_failed:
        raise RuntimeError(f"{config.key}: {run.n_failed} requests failed")
    requests = [o.request for o in run.outputs]
    if requests[0].kind == RequestKind.GENERATE:
        forward_s = forward_generation(client, requests, [o.completion for o in run.outputs])
    else:
        forward_s = forward_loglikelihood(client, requests)
    return MethodResult(
        str(config.adapter.method), config.key, len(instances), len(requests), pipeline_s, forward_s
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="eval instances per method")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()

    client = build_client(ModelSpec("bench@v1", BUNDLED_SOURCE, ServingConfig()), args.cache_dir)
    assert isinstance(client, TransformersClient)
    start = time.perf_counter()
    client.complete([Request("warm-up", RequestKind.GENERATE, "Hello", max_tokens=1)])
    print_header("adapter methods through assay.evaluate.run.evaluate, bundled model, no cache")
    print(
        f"model load + warm-up {time.perf_counter() - start:.2f} s, torch threads "
        f"{torch.get_num_threads()}, batch size {client.spec.serving.batch_size}"
    )
    results = [
        measure(client, config, args.n)
        for config in first_config_per_method(list(load_suite().scenarios.values())).values()
    ]
    header = (
        f"{'method':<28}{'scenario':<18}{'inst':>5}{'reqs':>6}{'pipeline s':>12}"
        f"{'inst/s':>9}{'forward s':>11}{'pipe/fwd':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.method:<28}{r.scenario:<18}{r.n_instances:>5}{r.n_requests:>6}"
            f"{r.pipeline_s:>12.2f}{r.n_instances / r.pipeline_s:>9.2f}{r.forward_s:>11.2f}"
            f"{r.pipeline_s / r.forward_s:>10.2f}"
        )


if __name__ == "__main__":
    main()
