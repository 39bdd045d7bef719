"""Sampled decoding: the adapter fields, per-sample seeds, the request-cache key, and the
transformers, llama.cpp and HTTP backends on the real bundled SmolLM2-135M-Instruct.

Model-backed checks use a handful of short prompts and few tokens to keep CPU time low.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from assay.adapters import AdapterSpec, build_requests
from assay.core.records import Instance, ModelOutput, Reference, Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig, backend_identity
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.cache import CachedClient, RequestCache, cache_key
from assay.models.local_requests import TokenSampler
from assay.models.transformers_backend import TransformersClient
from assay.models.transformers_loading import converted_model_dir

REPO = Path(__file__).resolve().parents[1]


def _sha(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def sampled(prompt: str, sample: int = 0, seed: int = 7, temperature: float = 1.0, **kw):
    return Request(
        f"i-{prompt[:6]}",
        RequestKind.GENERATE,
        prompt,
        max_tokens=kw.pop("max_tokens", 8),
        temperature=temperature,
        top_p=kw.pop("top_p", 1.0),
        seed=seed,
        sample=sample,
        **kw,
    )


# -- the adapter and the request digest --------------------------------------------------------


def test_adapter_fields_validate_and_keep_old_template_ids() -> None:
    spec = AdapterSpec.from_dict({"temperature": 1, "top_p": 0.9, "num_samples": 3, "seed": 5})
    assert (spec.temperature, spec.top_p, spec.num_samples, spec.seed) == (1.0, 0.9, 3, 5)
    # At their defaults the new fields are left out of the digest: old template ids hold.
    greedy = AdapterSpec()
    assert set(greedy.to_dict()).isdisjoint({"temperature", "top_p", "num_samples", "seed"})
    assert spec.template_id != greedy.template_id
    for bad, match in [
        ({"num_samples": 2}, "needs temperature > 0"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": 1.0, "top_p": 0.0}, "top_p"),
        ({"temperature": True}, "expected float"),
        ({"method": "multiple_choice_separate", "temperature": 0.7}, "samples nothing"),
    ]:
        with pytest.raises(ValueError, match=match):
            AdapterSpec.from_dict(bad, "suite.x.adapter")


def test_greedy_request_digest_is_unchanged_and_samples_are_keyed_apart() -> None:
    greedy = Request("a", RequestKind.GENERATE, "Hi", max_tokens=4, stop=("\n",))
    # The digest formula from before sampling existed, written out independently.
    before = _sha(
        {"kind": "generate", "prompt": "Hi", "continuations": [], "max_tokens": 4, "stop": ["\n"]}
    )
    assert greedy.digest == before
    # Sampling fields do not matter to a greedy request.
    assert dataclasses.replace(greedy, top_p=0.5, seed=3, sample=2).digest == before
    hot = dataclasses.replace(greedy, temperature=0.8, seed=3)
    variants = {
        hot.digest,
        dataclasses.replace(hot, sample=1).digest,
        dataclasses.replace(hot, seed=4).digest,
        dataclasses.replace(hot, top_p=0.9).digest,
        dataclasses.replace(hot, temperature=0.9).digest,
        before,
    }
    assert len(variants) == 6


def test_each_sample_gets_a_seed_from_the_request_digest_and_its_index() -> None:
    spec = AdapterSpec(temperature=0.7, top_p=0.95, num_samples=3, seed=11, max_tokens=5)
    instance = Instance("q1", "What is 2 + 2?", (Reference("4", True),))
    requests = build_requests(spec, [instance])
    assert [r.sample for r in requests] == [0, 1, 2]
    # Independently: SHA-256 of [seed, digest of the request without seed/sample, index],
    # first 16 hex digits, reduced to 31 bits.
    content = {
        "kind": "generate",
        "prompt": requests[0].prompt,
        "continuations": [],
        "max_tokens": 5,
        "stop": ["\n"],
        "temperature": 0.7,
        "top_p": 0.95,
    }
    for k, request in enumerate(requests):
        expected = int(_sha([11, _sha(content), k])[:16], 16) % 2**31
        assert request.seed == expected
    assert len({r.seed for r in requests}) == 3
    assert build_requests(spec, [instance]) == requests  # the same suite, the same seeds
    # The sample columns survive the model_outputs table.
    from assay.core.records import Completion

    table = ModelOutput.to_table([ModelOutput(r, Completion(text="4")) for r in requests])
    back = ModelOutput.from_table(table)
    assert [(o.request.seed, o.request.sample, o.request.temperature) for o in back] == [
        (r.seed, r.sample, 0.7) for r in requests
    ]
    assert table.column("request_digest").to_pylist() == [r.digest for r in requests]


def test_old_output_partitions_read_as_greedy() -> None:
    from assay.core.records import Completion

    table = ModelOutput.to_table(
        [ModelOutput(Request("a", RequestKind.GENERATE, "p"), Completion(text="x"))]
    )
    old = table.drop_columns(["temperature", "top_p", "seed", "sample"])
    [row] = ModelOutput.from_table(old)
    assert (row.request.temperature, row.request.top_p, row.request.sample) == (0.0, 1.0, 0)


# -- the token sampler -------------------------------------------------------------------------


def test_token_sampler_follows_the_nucleus_and_the_seeded_draws() -> None:
    logits = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    # top_p 0.6: tokens by probability are 1 (0.4), 3 (0.3), ...; the mass before token 3 is
    # 0.4 < 0.6, before token 2 it is 0.7: the nucleus is {1, 3}, renormalised to 4/7, 3/7.
    sampler = TokenSampler(1.0, 0.6, seed=123)
    draws = np.random.Generator(np.random.PCG64(123)).random(200)
    expected = [1 if u < 4 / 7 else 3 for u in draws]
    assert [sampler.next_token(logits) for _ in range(200)] == expected
    # Temperature 0.5 squares and renormalises the probabilities; no top-p.
    p = np.array([0.1, 0.4, 0.2, 0.3]) ** 2
    p /= p.sum()
    order = [1, 3, 2, 0]
    cdf = np.cumsum(p[order])
    sampler = TokenSampler(0.5, 1.0, seed=9)
    draws = np.random.Generator(np.random.PCG64(9)).random(200)
    expected = [order[int(np.searchsorted(cdf, u, side="right"))] for u in draws]
    assert [sampler.next_token(logits) for _ in range(200)] == expected


# -- the cache key -----------------------------------------------------------------------------


def test_cache_key_covers_backend_and_decoding() -> None:
    serving = ServingConfig()
    base = sampled("Hello")
    tf = {"kind": "transformers", "transformers": "4.0", "torch": "2.0", "device": "cpu"}
    keys = {
        cache_key("a" * 64, serving, base, tf),
        cache_key("a" * 64, serving, base, {**tf, "transformers": "4.1"}),
        cache_key("a" * 64, serving, base, {**tf, "device": "cuda"}),
        cache_key("a" * 64, serving, base, {"kind": "llama.cpp", "llama_cpp_python": "0.3"}),
        cache_key("a" * 64, serving, dataclasses.replace(base, sample=1), tf),
        cache_key("a" * 64, serving, dataclasses.replace(base, seed=8), tf),
        cache_key("a" * 64, serving, dataclasses.replace(base, top_p=0.5), tf),
        cache_key("a" * 64, serving, dataclasses.replace(base, max_tokens=9), tf),
        cache_key("a" * 64, serving, dataclasses.replace(base, stop=("x",)), tf),
    }
    assert len(keys) == 9


# -- the real bundled model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_cache_dir() -> Path:
    path = REPO / ".assay" / "test-cache"
    converted_model_dir(bundled_gguf_path(), path)
    return path


def _tf(cache_dir: Path, **serving: object) -> TransformersClient:
    spec = ModelSpec("smollm2-135m-instruct@v1", BUNDLED_SOURCE, ServingConfig(**serving))
    return TransformersClient(spec, cache_dir)


PROMPTS = ["Once upon a time", "My favourite food is", "The weather today"]


def test_transformers_samples_are_seeded_and_batch_independent(model_cache_dir, tmp_path):
    client = _tf(model_cache_dir, batch_size=8)
    greedy = Request("g", RequestKind.GENERATE, "The capital of France is", max_tokens=6)
    requests = [sampled(p, sample=k, seed=1000 + k) for p in PROMPTS for k in range(2)]
    requests.append(greedy)
    together = client.complete(requests)
    assert all(c.ok for c in together)
    alone = [client.complete([r])[0] for r in requests]
    assert [c.text for c in together] == [c.text for c in alone]
    repeat = client.complete(requests)  # same seeds, same samples
    assert [(c.text, c.token_logprobs) for c in repeat] == [
        (c.text, c.token_logprobs) for c in together
    ]
    # Different sample indices (hence seeds) give different texts at temperature 1.
    for j in range(len(PROMPTS)):
        assert together[2 * j].text != together[2 * j + 1].text
    # Greedy requests decode as before, next to sampling rows.
    assert together[-1].text == _tf(model_cache_dir).complete([greedy])[0].text
    # A logprob is under the model's own distribution: never above 0, one per token.
    assert all(len(c.token_logprobs) == c.completion_tokens for c in together)
    assert max(lp for c in together for lp in c.token_logprobs) <= 0

    identity = backend_identity(client)
    assert identity is not None and identity["kind"] == "transformers"
    cache = RequestCache(str(tmp_path / "cache.db"))
    first = CachedClient(client, cache, client.spec.serving).complete(requests)
    assert len(cache) == len(requests)  # each sample cached on its own
    again = CachedClient(client, cache, client.spec.serving).complete(requests)
    assert all(c.cached for c in again)
    assert [c.text for c in again] == [c.text for c in first] == [c.text for c in together]


def test_sampled_requests_over_http_honour_the_seed(model_cache_dir):
    from assay.models.openai_backend import OpenAIClient
    from assay.serving import serving_in_background

    local = _tf(model_cache_dir)
    requests = [sampled(p, seed=42 + i, top_p=0.9) for i, p in enumerate(PROMPTS)]
    expected = local.complete(requests)
    with serving_in_background(local) as running:
        spec = ModelSpec("remote@v1", f"openai:{running.base_url}#smollm2-135m-instruct@v1")
        with OpenAIClient(spec, backoff_base_s=0.05) as remote:
            got = remote.complete(requests)
            again = remote.complete(requests)
    assert [c.error for c in got] == [None] * len(requests)
    assert [c.text for c in got] == [c.text for c in again] == [c.text for c in expected]


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"
)
def test_llamacpp_samples_are_seeded_and_batch_independent(model_cache_dir):
    from assay.models.factory import build_client

    spec = ModelSpec("lc@v1", "llamacpp:" + BUNDLED_SOURCE, ServingConfig(batch_size=8))
    client = build_client(spec, model_cache_dir)
    assert backend_identity(client)["kind"] == "llama.cpp"
    requests = [sampled(p, sample=k, seed=500 + k) for p in PROMPTS for k in range(2)]
    together = client.complete(requests)
    assert all(c.ok for c in together)
    alone = [client.complete([r])[0] for r in requests]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.text for c in client.complete(requests)] == [c.text for c in together]
    assert any(together[2 * j].text != together[2 * j + 1].text for j in range(len(PROMPTS)))


def test_a_sampled_scenario_scores_and_reruns_identically_from_the_cache(model_cache_dir, tmp_path):
    from assay.evaluate.run import evaluate
    from assay.evaluate.suite import load_suite
    from assay.scoring.scorecard import score_partition

    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        "scenarios:\n"
        "  arith:\n"
        "    scenario: arithmetic_qa\n"
        "    adapter: {num_train: 1, max_tokens: 4, temperature: 0.8, num_samples: 3, seed: 1}\n"
    )
    config = load_suite(suite_file)["arith"]
    scenario = config.build().load()
    instances = [i for i in scenario.instances if i.split == "test"][:4]
    train = [i for i in scenario.instances if i.split == "train"]
    client = _tf(model_cache_dir, batch_size=16)
    cache = RequestCache(str(tmp_path / "cache.db"))

    def run() -> tuple[list[ModelOutput], list]:
        done = evaluate(CachedClient(client, cache, client.spec.serving), config, instances, train)
        outputs = ModelOutput.from_table(ModelOutput.to_table(done.outputs))  # as stored
        return outputs, score_partition(instances, outputs, seed_key="m@v1|arith").card

    first, card = run()
    assert len(first) == 12 and len(cache) == 12
    assert sorted({o.request.sample for o in first}) == [0, 1, 2]
    again, card_again = run()
    assert all(o.completion.cached for o in again)
    assert [o.completion.text for o in again] == [o.completion.text for o in first]
    # Efficiency describes this run (cache hits ran no model); everything else is identical.
    rows = [r for r in card if r.family != "efficiency"]
    rows_again = [r for r in card_again if r.family != "efficiency"]
    assert rows == rows_again or all(
        (a.metric, a.group, a.count) == (b.metric, b.group, b.count)
        and np.allclose(
            [a.mean, a.ci_low, a.ci_high], [b.mean, b.ci_low, b.ci_high], equal_nan=True
        )
        for a, b in zip(rows, rows_again, strict=True)
    )
    metrics = {r.metric for r in card}
    assert {"pass@1", "pass@3", "exact_match"} <= metrics
