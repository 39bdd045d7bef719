"""Requests per second through the OpenAI-compatible HTTP path against the same client in process.

Run from the repository root:  python benchmarks/bench_http.py [--n 16] [--max-tokens 4]

All in one run, on the bundled SmolLM2-135M-Instruct and the same requests:
(a) ``TransformersClient.complete`` called in process (the reference);
(b) ``OpenAIClient`` → loopback HTTP → ``assay.serving`` (batching concurrent requests) → the
    same ``TransformersClient`` instance;
and the ratio HTTP / in process, for greedy generation and for log-likelihood; then the same
HTTP runs against a server with every request limit, the Host check and an API key on, and
one with them all off (``ServerLimits.off()``), with the ratio on / off. The model's time
hides the checks' cost, so the same comparison runs once more in front of a client that
answers at once (what is left is HTTP, JSON and the checks), alternating on and off twice and
keeping each one's best. Log-likelihood
over HTTP goes through ``echo`` + prompt log-probabilities, which the server answers with
``TransformersClient.score_prompts`` (one forward pass per batch over each prompt+continuation,
see ``assay.models.prompt_logprobs``): every choice re-scores its whole prompt, so that path
does more model work than the in-process call, and the ratio shows how much it costs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from assay.core.records import Completion, Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.openai_backend import OpenAIClient
from assay.models.transformers_backend import TransformersClient
from assay.serving import serving_in_background
from assay.serving.policy import ServerAccess, ServerLimits

REPO = Path(__file__).resolve().parents[1]


def _requests(n: int, max_tokens: int) -> tuple[list[Request], list[Request]]:
    gen = [
        Request(
            f"g{i}",
            RequestKind.GENERATE,
            f"Question {i}: name a city in Europe.\nAnswer:",
            max_tokens=max_tokens,
        )
        for i in range(n)
    ]
    ll = [
        Request(
            f"l{i}",
            RequestKind.LOGLIKELIHOOD,
            f"Item {i}. The capital of France is",
            continuations=(" Paris", " Rome"),
        )
        for i in range(n)
    ]
    return gen, ll


def _rate(label: str, fn, n: int) -> float:
    start = time.perf_counter()
    completions = fn()
    seconds = time.perf_counter() - start
    errors = [c.error for c in completions if c.error]
    if errors:
        raise SystemExit(f"{label}: {len(errors)} failed, first: {errors[0]}")
    rate = n / seconds
    print(f"  {label:<28} {seconds:7.2f} s  {rate:8.2f} req/s")
    return rate


class _InstantClient:
    """A ``ModelClient`` that answers every generation at once, to expose the server's own cost."""

    spec = ModelSpec("instant@v1", "instant:x")
    artifact_digest = "instant"

    def complete(self, requests, progress=None) -> list[Completion]:
        return [Completion(text=" ok", prompt_tokens=1, completion_tokens=1) for _ in requests]


def _policies() -> dict[str, tuple[ServerLimits, ServerAccess]]:
    return {
        # The shipped defaults plus an API key: every check a request goes through.
        "limits on": (ServerLimits(), ServerAccess(api_key="bench-key")),
        "limits off": (ServerLimits.off(), ServerAccess(allowed_hosts=("*",))),
    }


def _client_for(running, model: str, concurrency: int) -> OpenAIClient:
    remote_spec = ModelSpec("remote@v1", f"openai:{running.base_url}#{model}")
    # The key goes only to a host it is bound to (assay.core.security).
    os.environ["ASSAY_BENCH_KEY"] = "bench-key"
    os.environ["ASSAY_BENCH_KEY_HOSTS"] = f"127.0.0.1:{running.port}"
    return OpenAIClient(remote_spec, max_concurrency=concurrency, api_key_env="ASSAY_BENCH_KEY")


def _overhead(n: int, concurrency: int) -> None:
    requests = [
        Request(f"o{i}", RequestKind.GENERATE, f"Prompt {i} " * 20, max_tokens=4) for i in range(n)
    ]
    best: dict[str, float] = {}
    print(f"server overhead: {n} generation requests to a client that answers at once")
    for _round in range(2):
        for policy, (limits, access) in _policies().items():
            client = _InstantClient()
            with (
                serving_in_background(client, limits=limits, access=access) as running,
                _client_for(running, client.spec.key, concurrency) as remote,
            ):
                remote.complete(requests[:1])
                rate = _rate(f"{policy} (round {_round + 1})", lambda: remote.complete(requests), n)
            best[policy] = max(best.get(policy, 0.0), rate)
    on, off = best["limits on"], best["limits off"]
    print(f"overhead: limits on / off (best of 2)  {on:.1f} / {off:.1f} req/s = {on / off:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--overhead-n", type=int, default=400)
    args = parser.parse_args()

    spec = ModelSpec("smollm2-135m-instruct@v1", BUNDLED_SOURCE, ServingConfig(batch_size=16))
    local = TransformersClient(spec, REPO / ".assay" / "cache")
    gen, ll = _requests(args.n, args.max_tokens)
    local.complete(gen[:1] + ll[:1])  # load (and convert) the model outside the timings

    rates: dict[tuple[str, str], float] = {}
    for policy, (limits, access) in _policies().items():
        with serving_in_background(local, limits=limits, access=access) as running:
            with _client_for(running, spec.key, args.concurrency) as remote:
                remote.complete(gen[:1])  # open connections outside the timings
                for kind, requests in (("generate", gen), ("loglikelihood", ll)):
                    print(f"{kind}: {len(requests)} requests, server with {policy}")
                    n = len(requests)
                    ref = _rate("in process (reference)", lambda r=requests: local.complete(r), n)
                    http = _rate("HTTP via assay.serving", lambda r=requests: remote.complete(r), n)
                    rates[(policy, kind)] = http
                    print(f"  ratio HTTP / in process     {http / ref:7.2f}x")
            stats = running.stats
            print(
                f"server batches ({policy}): {stats.calls} complete() calls for "
                f"{stats.requests} requests, largest {stats.largest}"
            )
    for kind in ("generate", "loglikelihood"):
        on, off = rates[("limits on", kind)], rates[("limits off", kind)]
        print(f"{kind}: limits on / off  {on:.2f} / {off:.2f} req/s = {on / off:.2f}x")
    _overhead(args.overhead_n, args.concurrency)


if __name__ == "__main__":
    main()
