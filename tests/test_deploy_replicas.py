"""A version served by several OpenAI-compatible replicas, against real servers on loopback.

The model-backed test serves the bundled SmolLM2-135M through two ``assay.serving`` servers,
kills one mid-run, and compares what comes back with the local client called in process.
Spreading and the per-replica bound are checked against small real Starlette apps that count
what they receive.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from assay.core.records import Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.factory import build_client
from assay.models.replicas import ReplicatedOpenAIClient, replica_sources
from assay.models.transformers_backend import TransformersClient, converted_model_dir
from assay.serving import OpenAIServer, asgi_in_background, serving_in_background

REPO = Path(__file__).resolve().parents[1]


def _completion_body() -> dict:
    return {
        "choices": [{"text": "ok", "logprobs": {"tokens": ["ok"], "token_logprobs": [-0.5]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }


def _counting_app(name: str, state: dict, lock: threading.Lock, delay_s: float) -> Starlette:
    async def completions(request: HttpRequest) -> JSONResponse:
        with lock:
            state[name]["now"] += 1
            state[name]["max"] = max(state[name]["max"], state[name]["now"])
            state[name]["seen"] += 1
        await asyncio.sleep(delay_s)
        with lock:
            state[name]["now"] -= 1
        return JSONResponse(_completion_body())

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def _spec(urls: list[str], model: str = "m") -> ModelSpec:
    return ModelSpec("replicated@v1", f"openai:{','.join(urls)}#{model}", ServingConfig())


def test_requests_spread_over_replicas_within_each_bound():
    lock = threading.Lock()
    state = {n: {"now": 0, "max": 0, "seen": 0} for n in ("a", "b")}
    requests = [Request(f"x{i}", RequestKind.GENERATE, "hi", max_tokens=1) for i in range(24)]
    with (
        asgi_in_background(_counting_app("a", state, lock, 0.05)) as a,
        asgi_in_background(_counting_app("b", state, lock, 0.05)) as b,
    ):
        client = build_client(_spec([a.base_url, b.base_url]), REPO / ".assay" / "unused")
        assert isinstance(client, ReplicatedOpenAIClient)
        client.per_replica_concurrency = 3
        with client:
            got = client.complete(requests)
    assert [c.error for c in got] == [None] * len(requests)
    assert state["a"]["seen"] + state["b"]["seen"] == len(requests)
    # Both replicas worked, in parallel, and neither ever had more than its 3 slots in flight.
    assert state["a"]["seen"] >= 4 and state["b"]["seen"] >= 4
    assert 2 <= state["a"]["max"] <= 3 and 2 <= state["b"]["max"] <= 3


def test_a_dead_replica_hands_its_requests_to_the_other():
    lock = threading.Lock()
    state = {"b": {"now": 0, "max": 0, "seen": 0}}
    requests = [Request(f"x{i}", RequestKind.GENERATE, "hi", max_tokens=1) for i in range(10)]
    # Port 9 on loopback: nothing listens, every call is refused.
    with asgi_in_background(_counting_app("b", state, lock, 0.0)) as b:
        client = ReplicatedOpenAIClient(_spec(["http://127.0.0.1:9/v1", b.base_url]))
        with client:
            got = client.complete(requests)
    assert [c.error for c in got] == [None] * len(requests)
    assert state["b"]["seen"] == len(requests)


def test_every_replica_dead_is_an_error_per_request_not_a_hang():
    spec = _spec(["http://127.0.0.1:9/v1", "http://127.0.0.1:7/v1"])
    with ReplicatedOpenAIClient(spec, max_retries=0) as client:
        got = client.complete([Request(f"x{i}", RequestKind.GENERATE, "hi") for i in range(3)])
    assert all(c.error and "127.0.0.1" in c.error for c in got)


def test_bad_replica_lists_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="empty base URL"):
        replica_sources("openai:http://127.0.0.1:1/v1,,http://127.0.0.1:2/v1#m")
    with pytest.raises(ValueError, match="same base URL twice"):
        replica_sources("openai:http://127.0.0.1:1/v1,http://127.0.0.1:1/v1#m")
    with pytest.raises(ValueError, match="no model id"):
        replica_sources("openai:http://127.0.0.1:1/v1,http://127.0.0.1:2/v1")
    with pytest.raises(ValueError, match="http"):
        replica_sources("openai:http://127.0.0.1:1/v1,ftp://host/v1#m")
    # Credentials in one replica's URL never reach the client's repr.
    client = ReplicatedOpenAIClient(
        _spec(["http://u:topsecret@127.0.0.1:1/v1", "http://127.0.0.1:2/v1"])
    )
    assert "topsecret" not in repr(client)


def test_replica_killed_mid_run_outputs_equal_a_local_run():
    cache_dir = REPO / ".assay" / "test-cache"
    converted_model_dir(bundled_gguf_path(), cache_dir)
    local = TransformersClient(
        ModelSpec("smollm2-135m-instruct@v1", BUNDLED_SOURCE, ServingConfig()), cache_dir
    )
    requests = [
        Request(f"r{i}", RequestKind.GENERATE, f"Count: {i}, {i + 1},", max_tokens=3)
        for i in range(8)
    ] + [
        Request(
            "l1",
            RequestKind.LOGLIKELIHOOD,
            "The capital of France is",
            continuations=(" Paris", " London"),
        )
    ]
    expected = local.complete(requests)
    # Two servers over one in-process model: two replicas of one version.
    first_server, second_server = OpenAIServer(local), OpenAIServer(local)
    killed = []
    try:
        with (
            serving_in_background(first_server) as first,
            serving_in_background(second_server) as second,
        ):

            def on_progress(done: int, total: int) -> None:
                if done == 2 and not killed:
                    first.stop(force=True)  # its requests in flight lose their connection
                    killed.append(done)

            model = "smollm2-135m-instruct@v1"
            spec = _spec([first.base_url, second.base_url], model=model)
            with ReplicatedOpenAIClient(spec, per_replica_concurrency=2) as client:
                got = client.complete(requests, progress=on_progress)
    finally:
        first_server.close()
        second_server.close()
    assert killed, "the replica was never killed"
    assert [c.error for c in got] == [None] * len(requests)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.choices for c in got][-1] is not None
    for mine, theirs in zip(got[-1].choices, expected[-1].choices, strict=True):
        assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-3)
