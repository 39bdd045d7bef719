"""Abuse cases for ``assay serve``: the real server on loopback, one hostile request each.

The model behind it is a small counting ``ModelClient`` (fixed answers, a short pause per
batch), so the tests see exactly how much work reached the model.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence

import httpx
import pytest

from assay.core.records import ChoiceScore, Completion, Request, RequestKind
from assay.models.base import ModelSpec
from assay.serving import serving_in_background
from assay.serving.policy import ServerAccess, ServerLimits


class CountingClient:
    """Answers every request (generation: "ok"; log-likelihood: -1 per choice) and counts them."""

    def __init__(self, pause_s: float = 0.0) -> None:
        self.spec = ModelSpec("counting@v1", "counting:x")
        self.pause_s = pause_s
        self.seen = 0
        self.lock = threading.Lock()

    @property
    def artifact_digest(self) -> str:
        return "counting"

    def complete(self, requests: Sequence[Request], progress=None) -> list[Completion]:
        time.sleep(self.pause_s)
        with self.lock:
            self.seen += len(requests)
        out = []
        for r in requests:
            if r.kind is RequestKind.GENERATE:
                out.append(Completion(text="ok", prompt_tokens=1, completion_tokens=1))
            else:
                choices = tuple(
                    ChoiceScore(c, -1.0, 1, len(c), len(c.encode()), False) for c in r.continuations
                )
                out.append(Completion(prompt_tokens=1, choices=choices))
        return out


def _post(base_url: str, path: str, body: object, **kwargs) -> httpx.Response:
    return httpx.post(f"{base_url}/{path}", json=body, timeout=30, **kwargs)


@pytest.fixture
def served():
    client = CountingClient()
    with serving_in_background(client, limits=ServerLimits(), access=ServerAccess()) as running:
        yield running, client


# -- request shapes and sizes ------------------------------------------------------------------


def test_deeply_nested_json_is_a_400_without_a_traceback(served):
    running, client = served
    depth = 100_000
    body = b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"
    response = httpx.post(
        f"{running.base_url}/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "nested" in response.json()["error"]["message"]
    assert "Traceback" not in response.text and client.seen == 0


def test_nesting_deeper_than_the_limit_is_refused_before_the_shape_is_read(served):
    running, _ = served
    nested: object = "x"
    for _ in range(40):
        nested = {"a": nested}
    response = _post(running.base_url, "completions", {"prompt": "hi", "user": nested})
    assert response.status_code == 400 and "deeper than 32" in response.text


def test_a_body_over_the_limit_is_refused_by_its_length(served):
    running, client = served
    response = _post(running.base_url, "completions", {"prompt": "a" * (2 << 20)})
    assert response.status_code == 413 and client.seen == 0


def test_a_chunked_body_over_the_limit_is_refused_while_read(served):
    running, client = served

    def chunks():
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"a" * 65_536
        yield b'"}'

    response = httpx.post(
        f"{running.base_url}/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413 and client.seen == 0


def test_too_many_prompts_are_refused(served):
    running, client = served
    response = _post(running.base_url, "completions", {"prompt": ["hi"] * 33})
    assert response.status_code == 400 and "at most 32 prompts" in response.text
    assert client.seen == 0


def test_a_prompt_over_the_length_limit_is_refused(served):
    running, client = served
    response = _post(running.base_url, "completions", {"prompt": "a" * 40_000})
    assert response.status_code == 400 and "over the limit of 32768" in response.text
    assert client.seen == 0


def test_max_tokens_over_the_limit_is_refused(served):
    running, client = served
    response = _post(running.base_url, "completions", {"prompt": "hi", "max_tokens": 10**9})
    assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"
    chat = _post(
        running.base_url,
        "chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10**9},
    )
    assert chat.status_code == 400 and client.seen == 0


def test_a_flood_of_stop_sequences_is_refused(served):
    running, client = served
    response = _post(running.base_url, "completions", {"prompt": "hi", "stop": ["x"] * 10_000})
    assert response.status_code == 400 and response.json()["error"]["param"] == "stop"
    assert client.seen == 0


def test_echo_logprobs_word_blowup_is_bounded(served):
    # 4,000 one-letter words: 3,999 piece requests holding ~16M characters of context.
    running, client = served
    prompt = "a " * 4000
    response = _post(
        running.base_url,
        "completions",
        {"prompt": prompt, "echo": True, "logprobs": 0, "max_tokens": 0},
    )
    assert response.status_code == 400 and "word-piece" in response.text
    assert client.seen == 0


def test_echo_logprobs_model_calls_are_bounded(served):
    # 32 prompts of 350 one-letter words: a 22 KB body under every other limit (3.9M characters
    # of word-piece context) that would make 32 x 350 = 11,200 model calls (a call per word
    # piece after the first, the trailing space included).
    running, client = served
    body = {"prompt": ["a " * 350] * 32, "echo": True, "logprobs": 0, "max_tokens": 0}
    assert len(json.dumps(body)) < 23_000
    response = _post(running.base_url, "completions", body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "11200 model calls" in message and "limit of 2048" in message
    assert client.seen == 0
    # Within the bound, echo scoring works as before: one call per word piece after the first.
    fine = _post(running.base_url, "completions", {**body, "prompt": "a " * 100})
    assert fine.status_code == 200 and client.seen == 100


def test_the_model_call_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASSAY_SERVE_MAX_MODEL_CALLS", "10")
    client = CountingClient()
    with serving_in_background(client) as running:
        body = {"prompt": "a " * 10, "echo": True, "logprobs": 0, "max_tokens": 0}
        assert _post(running.base_url, "completions", body).status_code == 200  # 10 calls
        assert _post(running.base_url, "completions", {**body, "max_tokens": 1}).status_code == 400
    assert client.seen == 10


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"prompt": "hi \ud800", "echo": true, "max_tokens": 1}', "lone UTF-16 surrogate"),
        (b'{"prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}", "integer of 5000 digits"),
    ],
    ids=["surrogate", "5000-digits"],
)
def test_hostile_json_is_a_400_before_the_model(served, body: bytes, why: str):
    # Before: the prompt reached the model and its echo failed to encode (500); Python's own
    # message for the integer told the caller to call sys.set_int_max_str_digits().
    running, client = served
    response = httpx.post(
        f"{running.base_url}/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert why in response.json()["error"]["message"]
    assert client.seen == 0


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASSAY_SERVE_MAX_PROMPTS", "2")
    client = CountingClient()
    with serving_in_background(client) as running:
        assert _post(running.base_url, "completions", {"prompt": ["a", "b"]}).status_code == 200
        assert _post(running.base_url, "completions", {"prompt": ["a"] * 3}).status_code == 400


# -- who may call ------------------------------------------------------------------------------


def test_a_foreign_host_header_is_refused(served):
    # DNS rebinding: a page at evil.example, re-pointed to 127.0.0.1, sends its own name.
    running, client = served
    response = _post(
        running.base_url, "completions", {"prompt": "hi"}, headers={"host": "evil.example:80"}
    )
    assert response.status_code == 400
    models = httpx.get(f"{running.base_url}/models", headers={"host": "evil.example"})
    assert models.status_code == 400 and client.seen == 0
    named = httpx.get(f"{running.base_url}/models", headers={"host": f"localhost:{running.port}"})
    assert named.status_code == 200


def test_a_request_from_a_foreign_page_is_refused(served):
    running, client = served
    evil = {"origin": "https://evil.example"}
    response = _post(running.base_url, "completions", {"prompt": "hi"}, headers=evil)
    assert response.status_code == 403
    assert httpx.get(f"{running.base_url}/models", headers=evil).status_code == 403
    assert client.seen == 0
    # A page of another application on this machine: an allowed name, another port.
    other = {"origin": f"http://127.0.0.1:{running.port + 1 if running.port < 65535 else 1024}"}
    assert (
        _post(running.base_url, "completions", {"prompt": "hi"}, headers=other).status_code == 403
    )
    assert client.seen == 0
    local = {"origin": f"http://127.0.0.1:{running.port}"}
    assert _post(running.base_url, "completions", {"prompt": "hi"}, headers=local).is_success


def test_a_form_or_text_body_is_refused_with_415(served):
    # What a web page can send cross-site without a preflight.
    running, client = served
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        response = httpx.post(
            f"{running.base_url}/completions",
            content=json.dumps({"prompt": "hi"}),
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 415, content_type
    assert client.seen == 0


def test_an_api_key_is_required_when_configured():
    client = CountingClient()
    access = ServerAccess(api_key="s3cret-serving-key")
    with serving_in_background(client, access=access) as running:
        url = f"{running.base_url}/completions"
        missing = httpx.post(url, json={"prompt": "hi"})
        wrong = httpx.post(url, json={"prompt": "hi"}, headers={"authorization": "Bearer s3cret"})
        listing = httpx.get(f"{running.base_url}/models")
        right = httpx.post(
            url, json={"prompt": "hi"}, headers={"authorization": "Bearer s3cret-serving-key"}
        )
    assert missing.status_code == wrong.status_code == listing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "s3cret" not in missing.text + wrong.text
    assert right.status_code == 200 and client.seen == 1


def test_the_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASSAY_SERVE_API_KEY", "from-env-key")
    with serving_in_background(CountingClient()) as running:
        url = f"{running.base_url}/models"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer from-env-key"}).status_code == 200


# -- abandoned work ---------------------------------------------------------------------------


def test_work_of_a_client_that_disconnects_is_cancelled():
    # 299 word pieces, two per model call: long enough that the client leaves mid-way.
    client = CountingClient(pause_s=0.02)
    pieces = 300
    body = json.dumps({"prompt": "w " * pieces, "echo": True, "logprobs": 0, "max_tokens": 0})
    with serving_in_background(client, max_batch=2, batch_window_s=0.0) as running:
        raw = socket.create_connection(("127.0.0.1", running.port))
        raw.sendall(
            (
                f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
        )
        for _ in range(500):  # until the model has started on it
            if client.seen:
                break
            time.sleep(0.01)
        raw.close()
        after = _post(running.base_url, "completions", {"prompt": "next", "max_tokens": 1})
        assert after.status_code == 200
        seen_when_answered = client.seen
    # Without cancellation the next request queues behind all 299 piece requests.
    assert 0 < seen_when_answered < pieces // 2
