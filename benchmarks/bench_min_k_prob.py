"""What Min-K% Prob costs per instance against a plain log-likelihood evaluation.

Run from the repository root:  python benchmarks/bench_min_k_prob.py [--n 24] [--runs 3]

Measured in one run with the bundled SmolLM2-135M-Instruct, each timing on a fresh (cold)
SQLite request cache, the model loaded beforehand:

(a) facts_mc (four-way multiple choice): the reference is the scenario's plain evaluation,
    its ``multiple_choice_separate`` ``LOGLIKELIHOOD`` requests (one per instance, four
    choices); against it ``min_k_membership`` on the same instances (the original text and
    its default perturbed copies), by both of its paths (``assay.contamination.membership``):
    exact per-token scores (``score_prompts``, the local model's path) and one
    ``LOGLIKELIHOOD`` request per word piece (the path of a client without exact scoring,
    such as an HTTP endpoint; here the same local model with ``score_prompts`` hidden);
(b) cost against text length: synthetic paragraphs of 16, 32 and 64 words, both paths
    against one ``LOGLIKELIHOOD`` request scoring each whole paragraph (what a
    language-modeling evaluation of the text costs): the piece path grows about
    quadratically with the length, the token path linearly.

Each figure is the median of ``--runs`` runs; the load average is printed beside it.
A warm rerun of Min-K% (every request a cache hit) is shown for (a).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from peers import DEFAULT_CACHE, print_header

from assay.adapters import AdapterSpec, Method, build_requests
from assay.contamination.membership import min_k_membership
from assay.core.records import Instance, Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE
from assay.models.cache import CachedClient, RequestCache
from assay.models.transformers_backend import TransformersClient
from assay.scenarios import get_scenario

WORDS = [
    *("the", "river", "flows", "past", "an", "old", "mill", "where", "children", "play"),
    *("while", "their", "parents", "talk", "about", "weather", "harvest", "prices", "and"),
    *("the", "long", "winter", "that", "is", "coming", "over", "quiet", "northern", "hills"),
]


def paragraph(index: int, words: int) -> str:
    """A deterministic paragraph of ``words`` words (a rotation of a fixed word list)."""
    return " ".join(WORDS[(index * 7 + j) % len(WORDS)] for j in range(words)).capitalize()


class PiecesOnly:
    """The local model without ``score_prompts``: Min-K% then takes its word-piece path."""

    def __init__(self, inner: TransformersClient) -> None:
        self.inner = inner
        self.spec = inner.spec

    @property
    def artifact_digest(self) -> str:
        return self.inner.artifact_digest

    @property
    def backend_identity(self) -> dict[str, str]:
        return self.inner.backend_identity

    def complete(self, requests: Sequence[Request], progress=None) -> list:
        return self.inner.complete(requests, progress)


def cold_seconds(
    model: TransformersClient | PiecesOnly, work: Callable[[CachedClient], object], tmp: Path
) -> tuple[float, CachedClient]:
    """Seconds ``work`` takes through a ``CachedClient`` on a new, empty cache."""
    cache = RequestCache(f"sqlite:///{tmp / f'cache-{time.perf_counter_ns()}.db'}")
    client = CachedClient(model, cache, model.spec.serving)
    start = time.perf_counter()
    work(client)
    return time.perf_counter() - start, client


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def compare(
    label: str,
    model: TransformersClient,
    instances: Sequence[Instance],
    reference: Sequence[Request],
    reference_label: str,
    runs: int,
    tmp: Path,
) -> None:
    n = len(instances)

    def plain() -> float:
        return cold_seconds(model, lambda c: c.complete(list(reference)), tmp)[0]

    def min_k(client: TransformersClient | PiecesOnly) -> Callable[[], float]:
        return lambda: cold_seconds(client, lambda c: min_k_membership(c, instances), tmp)[0]

    load = os.getloadavg()[0]
    plain_s = median_of(runs, plain)
    tokens_s = median_of(runs, min_k(model))
    pieces_s = median_of(runs, min_k(PiecesOnly(model)))
    print(
        f"{label:<28} {reference_label} {plain_s / n * 1000:7.1f} ms/instance | min-k% "
        f"tokens {tokens_s / n * 1000:7.1f} ms ({tokens_s / plain_s:4.1f}x) | word pieces "
        f"{pieces_s / n * 1000:8.1f} ms ({pieces_s / plain_s:5.1f}x)   "
        f"(load {load:.1f} -> {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="facts_mc instances")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paragraphs", type=int, default=4, help="paragraphs per length")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()

    serving = ServingConfig(batch_size=32)
    model = TransformersClient(
        ModelSpec("smollm2-135m-instruct@bench", BUNDLED_SOURCE, serving), args.cache_dir
    )
    model.complete([Request("warm", RequestKind.LOGLIKELIHOOD, "Hi", continuations=(" there",))])
    print_header(f"Min-K% Prob cost, median of {args.runs} cold-cache runs")

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        data = get_scenario("facts_mc").load()
        instances = [i for i in data.instances if i.split == "test"][: args.n]
        spec = AdapterSpec(method=Method.MULTIPLE_CHOICE_SEPARATE)
        requests = build_requests(spec, instances)
        words = statistics.mean(len(f"{i.input} {i.gold_texts[0]}".split()) for i in instances)
        compare(
            f"facts_mc n={len(instances)} (~{words:.0f} words)",
            model,
            instances,
            requests,
            "multiple choice",
            args.runs,
            tmp,
        )
        _, client = cold_seconds(model, lambda c: min_k_membership(c, instances), tmp)
        start = time.perf_counter()
        min_k_membership(client, instances)
        warm = time.perf_counter() - start
        per = warm / len(instances) * 1000
        print(f"{'':<24} min-k% warm rerun (all cache hits): {per:.1f} ms/instance")

        for length in (16, 32, 64):
            texts = [paragraph(i, length) for i in range(args.paragraphs)]
            paras = [Instance(f"p{i}", t, ()) for i, t in enumerate(texts)]
            whole = [
                Request(f"p{i}", RequestKind.LOGLIKELIHOOD, "", continuations=(t,))
                for i, t in enumerate(texts)
            ]
            compare(
                f"paragraphs {length} words",
                model,
                paras,
                whole,
                "one request",
                args.runs,
                tmp,
            )


if __name__ == "__main__":
    main()
