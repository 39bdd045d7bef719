"""The OpenAI-compatible client against real servers on loopback.

The model-backed tests serve the bundled SmolLM2-135M GGUF through ``assay.serving`` and
compare what comes back over HTTP with the same local client called in process. Failure
behaviour (retries, restarts, permanent errors, the concurrency bound) is checked against
small real Starlette apps that count what they receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from assay.core.records import Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.openai_backend import NO_PROMPT_LOGPROBS, OpenAIClient, OpenAISource
from assay.models.transformers_backend import TransformersClient
from assay.models.transformers_loading import converted_model_dir
from assay.serving import (
    OpenAIServer,
    PromptScorer,
    RequestBatcher,
    asgi_in_background,
    serving_in_background,
)

# -- the real local client over the bundled model --------------------------------------------

REPO = Path(__file__).resolve().parents[1]


class PiecesOnlyClient:
    """The local client without ``score_prompts``, so the server takes its word-piece path.

    ``TransformersClient`` is a ``PromptScorer``; this wrapper hides that to keep the fallback
    every other backend relies on under test.
    """

    def __init__(self, spec: ModelSpec, cache_dir: Path) -> None:
        self.inner = TransformersClient(spec, cache_dir)
        self.spec = spec

    @property
    def artifact_digest(self) -> str:
        return self.inner.artifact_digest

    def complete(self, requests, progress=None):
        return self.inner.complete(requests, progress)


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    """The persistent model cache the other model tests use (the GGUF is converted once)."""
    path = REPO / ".assay" / "test-cache"
    converted_model_dir(bundled_gguf_path(), path)
    return path


def _local(cache_dir: Path, cls=TransformersClient, **serving):
    spec = ModelSpec("smollm2-135m-instruct@v1", BUNDLED_SOURCE, ServingConfig(**serving))
    return cls(spec, cache_dir)


def _remote(base_url: str, model: str = "smollm2-135m-instruct@v1", **options) -> OpenAIClient:
    serving = options.pop("serving", ServingConfig())
    spec = ModelSpec("remote@v1", f"openai:{base_url}#{model}", serving)
    options.setdefault("backoff_base_s", 0.05)
    return OpenAIClient(spec, **options)


GEN_REQUESTS = [
    Request("g1", RequestKind.GENERATE, "The capital of France is", max_tokens=6),
    Request("g2", RequestKind.GENERATE, "1, 2, 3, 4,", max_tokens=8, stop=("7",)),
    Request("g3", RequestKind.GENERATE, "Q: What color is the sky?\nA:", max_tokens=5),
]
LL_REQUESTS = [
    Request(
        "l1",
        RequestKind.LOGLIKELIHOOD,
        "The capital of France is",
        continuations=(" Paris", " London", " a big city"),
    ),
    Request("l2", RequestKind.LOGLIKELIHOOD, "Question: 2 + 2 = ?\nAnswer:", continuations=(" 4",)),
]


# -- model-backed: HTTP equals in-process ----------------------------------------------------


def test_generation_over_http_equals_local_greedy_output(cache_dir):
    local = _local(cache_dir)
    expected = local.complete(GEN_REQUESTS)
    seen = []
    with serving_in_background(local) as running, _remote(running.base_url) as remote:
        got = remote.complete(GEN_REQUESTS, progress=lambda d, t: seen.append((d, t)))
    assert [c.error for c in got] == [None] * 3
    assert [c.text for c in got] == [c.text for c in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.completion_tokens == e.completion_tokens
        assert g.token_logprobs == pytest.approx(e.token_logprobs, abs=1e-4)
        assert g.latency_s > 0
    assert "7" not in got[1].text  # the stop sequence cut the text
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("cls", [PiecesOnlyClient, TransformersClient], ids=["pieces", "exact"])
def test_loglikelihood_over_http_equals_local(cache_dir, cls):
    local = _local(cache_dir, cls)
    assert isinstance(local, PromptScorer) == (cls is TransformersClient)
    expected = local.complete(LL_REQUESTS)
    with serving_in_background(local) as running, _remote(running.base_url) as remote:
        got = remote.complete(LL_REQUESTS)
    for g, e in zip(got, expected, strict=True):
        assert g.error is None
        assert len(g.choices) == len(e.choices)
        for gc, ec in zip(g.choices, e.choices, strict=True):
            assert gc.text == ec.text
            assert gc.logprob == pytest.approx(ec.logprob, abs=1e-4)
            assert (gc.n_chars, gc.n_bytes, gc.is_greedy) == (ec.n_chars, ec.n_bytes, ec.is_greedy)
            if cls is TransformersClient:  # real tokens; the piece path counts word pieces
                assert gc.n_tokens == ec.n_tokens
    # A sanity anchor independent of the backends: the likelier capital wins.
    paris, london, _ = got[0].choices
    assert paris.logprob > london.logprob


def test_chat_mode_matches_local_chat_template(cache_dir):
    serving = {"chat_template": True, "system_prompt": "You answer in one word."}
    local = _local(cache_dir, **serving)
    requests = [Request("c1", RequestKind.GENERATE, "Name a primary color.", max_tokens=6)]
    expected = local.complete(requests)
    with (
        serving_in_background(local) as running,
        _remote(running.base_url, serving=ServingConfig(**serving)) as remote,
    ):
        got = remote.complete(
            [*requests, Request("c2", RequestKind.LOGLIKELIHOOD, "Hi", continuations=(" there",))]
        )
        # A system prompt other than the served one is refused, not silently replaced.
        other = _remote(
            running.base_url,
            serving=ServingConfig(chat_template=True, system_prompt="Be verbose."),
            max_retries=0,
        )
        refused = other.complete(requests)[0]
    assert got[0].error is None
    assert got[0].text == expected[0].text
    assert "chat_template" in got[1].error
    assert refused.error is not None and "HTTP 400" in refused.error


def test_server_batches_concurrent_requests_into_one_call(cache_dir):
    local = _local(cache_dir)
    calls: list[int] = []

    class Counting:
        artifact_digest = "counting"

        def complete(self, requests, progress=None):
            calls.append(len(requests))
            return local.complete(requests)

    batcher = RequestBatcher(Counting(), window_s=0.5)
    try:
        reqs = [
            Request(f"b{i}", RequestKind.GENERATE, f"{i} + {i} =", max_tokens=1) for i in range(5)
        ]
        got = batcher.complete(reqs)
    finally:
        batcher.close()
    assert calls == [5]
    assert [c.text for c in got] == [c.text for c in local.complete(reqs)]


def test_server_killed_and_restarted_mid_run_completes(cache_dir, caplog):
    local = _local(cache_dir)
    requests = [
        Request(f"r{i}", RequestKind.GENERATE, f"Count: {i}, {i + 1},", max_tokens=3)
        for i in range(6)
    ]
    expected = local.complete(requests)
    caplog.set_level(logging.INFO, logger="assay.models.openai_backend")
    server = OpenAIServer(local)
    stack = contextlib.ExitStack()
    try:
        first = stack.enter_context(serving_in_background(server))
        port = first.port
        restarted = []

        def on_progress(done: int, total: int) -> None:
            if done == 2 and not restarted:
                first.stop(force=True)  # requests in flight lose their connection
                time.sleep(0.5)
                restarted.append(stack.enter_context(serving_in_background(server, port=port)))

        remote = _remote(first.base_url, max_concurrency=2, max_retries=8, timeout_s=60)
        with remote:
            got = remote.complete(requests, progress=on_progress)
    finally:
        stack.close()
        server.close()
    assert restarted, "the server was never restarted"
    assert "retry" in caplog.text  # the outage was real: some call failed and was retried
    assert [c.error for c in got] == [None] * len(requests)
    assert [c.text for c in got] == [c.text for c in expected]


def test_artifact_digest_ignores_credentials_and_tracks_the_served_model(cache_dir):
    local = _local(cache_dir)
    with serving_in_background(local) as running:
        plain = _remote(running.base_url).artifact_digest
        url_with_user = running.base_url.replace("http://", "http://user:pw@")
        with_user = _remote(url_with_user).artifact_digest
        unknown = _remote(running.base_url, model="other-model").artifact_digest
    assert plain == with_user
    assert plain != unknown


# -- failure behaviour against small real apps ----------------------------------------------


def _completion_body(text: str = "ok") -> dict:
    return {
        "choices": [{"text": text, "logprobs": None, "finish_reason": "stop", "index": 0}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }


def test_503_twice_then_200_is_retried_and_succeeds():
    calls = []

    async def completions(request: HttpRequest) -> JSONResponse:
        calls.append(1)
        if len(calls) <= 2:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        return JSONResponse(_completion_body("fine"))

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    with asgi_in_background(app) as running, _remote(running.base_url, model="m") as remote:
        got = remote.complete([Request("x", RequestKind.GENERATE, "hi", max_tokens=1)])
    assert len(calls) == 3
    assert got[0].error is None and got[0].text == "fine"


def test_permanent_failure_reports_status_without_the_api_key(monkeypatch, caplog):
    secret = "sk-test-0123456789-secret"
    monkeypatch.setenv("ASSAY_TEST_KEY", secret)

    async def completions(request: HttpRequest) -> JSONResponse:
        # A hostile server quoting our credentials back must not leak them either.
        quoted = request.headers.get("authorization", "")
        return JSONResponse({"error": {"message": f"broken; you sent {quoted}"}}, status_code=500)

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    caplog.set_level(logging.DEBUG)
    with asgi_in_background(app) as running:
        # The key may go to this server.
        monkeypatch.setenv("ASSAY_TEST_KEY_HOSTS", f"127.0.0.1:{running.port}")
        remote = _remote(running.base_url, model="m", api_key_env="ASSAY_TEST_KEY", max_retries=2)
        got = remote.complete(
            [
                Request("a", RequestKind.GENERATE, "hi", max_tokens=1),
                Request("b", RequestKind.LOGLIKELIHOOD, "hi", continuations=(" there",)),
            ]
        )
        shown = repr(remote)
        remote.close()
    for completion in got:
        assert completion.error is not None
        assert "HTTP 500" in completion.error and "3 attempt" in completion.error
        assert secret not in completion.error
    assert "***" in got[0].error  # the quoted key was scrubbed, not dropped silently
    assert secret not in caplog.text
    assert secret not in shown
    assert "retry" in caplog.text  # the retries were logged (safely)


def test_endpoint_without_prompt_logprobs_gives_a_clear_error():
    async def completions(request: HttpRequest) -> JSONResponse:
        body = await request.json()
        return JSONResponse(_completion_body(body["prompt"]))  # echoes, but no logprobs

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    with asgi_in_background(app) as running, _remote(running.base_url, model="m") as remote:
        got = remote.complete(
            [Request("x", RequestKind.LOGLIKELIHOOD, "a b", continuations=(" c",))]
        )
    assert got[0].error is not None and NO_PROMPT_LOGPROBS in got[0].error
    assert got[0].choices == ()


def test_concurrency_bound_is_respected():
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    async def completions(request: HttpRequest) -> JSONResponse:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.1)
        with lock:
            state["now"] -= 1
        return JSONResponse(_completion_body())

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    requests = [Request(f"x{i}", RequestKind.GENERATE, "hi", max_tokens=1) for i in range(12)]
    with (
        asgi_in_background(app) as running,
        _remote(running.base_url, model="m", max_concurrency=3) as remote,
    ):
        got = remote.complete(requests)
    assert all(c.ok for c in got)
    assert 2 <= state["max"] <= 3


def test_bad_sources_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="names no model"):
        OpenAISource.parse("openai:http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http"):
        OpenAISource.parse("openai:ftp://host/v1#m")
    source = OpenAISource.parse("openai:http://u:topsecret@host:9/v1/#m")
    assert source.model == "m"
    assert "topsecret" not in source.public_url and source.public_url.endswith("host:9/v1")


def test_empty_continuation_scores_zero_without_a_call():
    # log P("" | prompt) = log 1 = 0 by definition; the closed port proves no call is made.
    remote = _remote("http://127.0.0.1:9/v1", model="m", max_retries=0)
    got = remote.complete([Request("e", RequestKind.LOGLIKELIHOOD, "x", continuations=("",))])
    assert got[0].error is None
    assert got[0].choices[0].logprob == 0.0 and math.isfinite(got[0].choices[0].logprob)
