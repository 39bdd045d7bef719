"""Abuse cases for the OpenAI-compatible client, each against a real listener on loopback.

Credentials go only to the hosts they are bound to, link-local and metadata addresses are
never contacted, version resolution in the sensor contacts nothing, echoed keys are scrubbed
before error text is cut, and a malformed 200 reply fails only the request it answers.
"""

from __future__ import annotations

import logging
import re

import pytest
from controlled_resolver import ControlledResolver
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from assay.core.records import Request, RequestKind
from assay.models.base import ModelSpec
from assay.models.factory import build_client
from assay.models.openai_backend import OpenAIClient
from assay.registry import Registry
from assay.registry.resolved import resolve_version
from assay.serving import asgi_in_background

SECRET = "sk-live-7Hq2mZ0pXv9LwR4tK8nB"


def _client(base_url: str, **options) -> OpenAIClient:
    spec = ModelSpec("remote@v1", f"openai:{base_url}#m")
    options.setdefault("backoff_base_s", 0.01)
    options.setdefault("api_key_env", "ASSAY_TEST_KEY")
    return OpenAIClient(spec, **options)


def _recording_app(seen: list[dict[str, str]]) -> Starlette:
    async def completions(request: HttpRequest) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"choices": [{"text": "ok"}], "usage": {"completion_tokens": 1}})

    async def models(request: HttpRequest) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"data": [{"id": "m"}]})

    return Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


GENERATE = Request("g", RequestKind.GENERATE, "hi", max_tokens=1)


def _leaked(secret: str, text: str) -> bool:
    """Whether any 6 consecutive characters of ``secret`` appear in ``text``, in any case."""
    lowered = text.lower()
    return any(secret[i : i + 6].lower() in lowered for i in range(len(secret) - 5))


# -- credentials bound to hosts ---------------------------------------------------------------


def test_key_goes_to_its_bound_host(monkeypatch):
    seen: list[dict[str, str]] = []
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    with asgi_in_background(_recording_app(seen)) as running:
        monkeypatch.setenv("ASSAY_TEST_KEY_HOSTS", f"127.0.0.1:{running.port}")
        with _client(running.base_url) as client:
            assert client.complete([GENERATE])[0].ok
    assert seen[0]["authorization"] == f"Bearer {SECRET}"


def test_key_is_withheld_from_a_host_it_is_not_bound_to(monkeypatch):
    seen: list[dict[str, str]] = []
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    with asgi_in_background(_recording_app(seen)) as running:
        # Bound to another port of the same address, and to the name rather than the address.
        monkeypatch.setenv("ASSAY_TEST_KEY_HOSTS", f"127.0.0.1:{running.port + 1},localhost")
        with _client(running.base_url) as client:
            assert client.complete([GENERATE])[0].ok
            shown = repr(client)
    assert seen and "authorization" not in seen[0]
    assert "withheld" in shown and SECRET not in shown


def test_openai_key_without_a_host_list_goes_only_to_openai(monkeypatch):
    seen: list[dict[str, str]] = []
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_API_KEY_HOSTS", raising=False)
    monkeypatch.delenv("ASSAY_CREDENTIAL_HOSTS", raising=False)
    with (
        asgi_in_background(_recording_app(seen)) as running,
        _client(running.base_url, api_key_env="OPENAI_API_KEY") as client,
    ):
        assert client.complete([GENERATE])[0].ok
    assert "authorization" not in seen[0]


def test_the_shared_table_binds_keys_too(monkeypatch):
    seen: list[dict[str, str]] = []
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    with asgi_in_background(_recording_app(seen)) as running:
        monkeypatch.setenv(
            "ASSAY_CREDENTIAL_HOSTS", f"OTHER_KEY=127.0.0.1;ASSAY_TEST_KEY=127.0.0.1:{running.port}"
        )
        with _client(running.base_url) as client:
            assert client.complete([GENERATE])[0].ok
    assert seen[0]["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/v1",
        "http://[fe80::1]:8000/v1",
        "http://metadata.google.internal/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://2852039166/v1",  # 169.254.169.254 as one decimal number, found by resolving
    ],
)
def test_link_local_and_metadata_addresses_are_refused(url):
    with pytest.raises(ValueError, match=r"link-local|metadata"):
        _client(url)


def test_resolving_a_version_contacts_no_endpoint(registry_url, tmp_path):
    # What the promotion sensor does for every new version: it must not call a URL that a
    # registry user wrote (with or without credentials).
    seen: list[dict[str, str]] = []
    with asgi_in_background(_recording_app(seen)) as running:
        registry = Registry.open(registry_url)
        registry.create_model("m")
        version = registry.create_version("m", f"openai:{running.base_url}#m")
        resolved = resolve_version(
            version, lambda spec: build_client(spec, tmp_path).artifact_digest
        )
    assert seen == []
    assert resolved.artifact_digest and resolved.source == version.source


# -- scrubbing before cutting -------------------------------------------------------------------


def _echoing_app(shape) -> Starlette:
    async def completions(request: HttpRequest) -> PlainTextResponse | JSONResponse:
        return shape(request.headers.get("authorization", ""))

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def _failing_call(monkeypatch, caplog, shape) -> str:
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with asgi_in_background(_echoing_app(shape)) as running:
        monkeypatch.setenv("ASSAY_TEST_KEY_HOSTS", f"127.0.0.1:{running.port}")
        with _client(running.base_url, max_retries=1) as client:
            got = client.complete([GENERATE])
    assert got[0].error is not None and "HTTP 500" in got[0].error
    return got[0].error


def test_a_key_echoed_across_the_cut_is_scrubbed_whole(monkeypatch, caplog):
    # The key starts ten characters before the 200-character cut of the error detail.
    def shape(auth: str) -> PlainTextResponse:
        return PlainTextResponse("x" * 183 + "sent: " + auth + " " + "y" * 5000, status_code=500)

    error = _failing_call(monkeypatch, caplog, shape)
    assert not _leaked(SECRET, error)
    assert not _leaked(SECRET, caplog.text)
    assert "***" in error


def test_a_key_echoed_in_another_case_is_scrubbed(monkeypatch, caplog):
    def shape(auth: str) -> JSONResponse:
        return JSONResponse({"error": {"message": f"denied: {auth.upper()}"}}, status_code=500)

    error = _failing_call(monkeypatch, caplog, shape)
    assert not _leaked(SECRET, error) and not _leaked(SECRET, caplog.text)
    assert "BEARER ***" in error


def test_a_key_shaped_token_that_is_not_ours_is_scrubbed_too(monkeypatch, caplog):
    other = "sk-proj-AbCdEf0123456789xyz"

    def shape(auth: str) -> JSONResponse:
        return JSONResponse({"error": {"message": f"try key {other}"}}, status_code=500)

    error = _failing_call(monkeypatch, caplog, shape)
    assert not _leaked(other, error) and not _leaked(other, caplog.text)


# -- malformed 200 replies fail only their own request -----------------------------------------


def _malformed_app(bad_reply: dict) -> Starlette:
    async def completions(request: HttpRequest) -> JSONResponse:
        body = await request.json()
        if "bad" in body["prompt"]:
            return JSONResponse(bad_reply)
        text = body["prompt"] if body.get("echo") else " fine"
        n = max(text.rfind(" "), 1)  # the last word is the continuation
        return JSONResponse(
            {
                "choices": [
                    {
                        "text": text,
                        "logprobs": {
                            "tokens": [text[:n], text[n:]],
                            "token_logprobs": [None, -0.5],
                            "text_offset": [0, n],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2},
            }
        )

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def _run_pair(bad_reply: dict, kind: RequestKind) -> list:
    if kind is RequestKind.GENERATE:
        requests = [
            Request("good", kind, "good prompt", max_tokens=2),
            Request("bad", kind, "bad prompt", max_tokens=2),
        ]
    else:
        requests = [
            Request("good", kind, "good prompt", continuations=(" x",)),
            Request("bad", kind, "bad prompt", continuations=(" x",)),
        ]
    with (
        asgi_in_background(_malformed_app(bad_reply)) as running,
        _client(running.base_url, max_retries=0) as client,
    ):
        return client.complete(requests)


def test_a_list_where_logprobs_should_be_an_object_fails_only_that_request():
    bad = {"choices": [{"text": "t", "logprobs": [[-1.0]]}], "usage": {"completion_tokens": 1}}
    good, broken = _run_pair(bad, RequestKind.GENERATE)
    assert good.ok and good.text == " fine"
    assert broken.error is not None
    assert re.search(r"malformed endpoint reply: choices\.0\.logprobs", broken.error)


def test_a_dict_inside_token_logprobs_fails_only_that_request():
    bad = {
        "choices": [
            {
                "text": "bad prompt x",
                "logprobs": {
                    "tokens": ["bad prompt", " x"],
                    "token_logprobs": [None, {"value": -1.0}],
                    "text_offset": [0, 10],
                },
            }
        ]
    }
    good, broken = _run_pair(bad, RequestKind.LOGLIKELIHOOD)
    assert good.ok and good.choices[0].logprob == pytest.approx(-0.5)
    assert broken.error is not None
    assert "malformed endpoint reply" in broken.error and "token_logprobs" in broken.error


# -- credentials bound to scheme and port; addresses checked per connection ----------------------


def test_a_key_bound_to_https_is_not_sent_over_plain_http(monkeypatch):
    # OPENAI_API_KEY is bound to https://api.openai.com:443 by default. A registry user writes
    # http://api.openai.com:<port>; here the name resolves to a receiver on loopback.
    seen: list[dict[str, str]] = []
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("OPENAI_API_KEY_HOSTS", raising=False)
    monkeypatch.delenv("ASSAY_CREDENTIAL_HOSTS", raising=False)
    with asgi_in_background(_recording_app(seen)) as running:
        ControlledResolver(monkeypatch, {"api.openai.com": ["127.0.0.1"]})
        url = f"http://api.openai.com:{running.port}/v1"
        with _client(url, api_key_env="OPENAI_API_KEY") as client:
            assert client.complete([GENERATE])[0].ok
    assert seen and all("authorization" not in headers for headers in seen)
    assert all(not _leaked(SECRET, str(headers)) for headers in seen)


def test_a_binding_names_scheme_host_and_port():
    from assay.core.security import credential_may_go, credential_targets

    env = {"K_HOSTS": "api.example.com,127.0.0.1:8000,http://localhost:9000"}
    targets = credential_targets("K", env)
    assert credential_may_go("https", "API.example.com", None, targets)
    assert not credential_may_go("http", "api.example.com", None, targets)  # cleartext
    assert not credential_may_go("https", "api.example.com", 8443, targets)  # another port
    assert credential_may_go("http", "127.0.0.1", 8000, targets)  # loopback: either scheme
    assert credential_may_go("https", "127.0.0.1", 8000, targets)
    assert not credential_may_go("http", "127.0.0.1", 8001, targets)
    assert credential_may_go("http", "localhost", 9000, targets)
    assert not credential_may_go("https", "localhost", 9000, targets)  # the scheme was named


@pytest.mark.parametrize("entry", ["http://vllm.internal:8000", "ftp://host", "host:99999"])
def test_a_binding_that_would_send_a_key_in_cleartext_is_refused(monkeypatch, entry):
    monkeypatch.setenv("ASSAY_TEST_KEY", SECRET)
    monkeypatch.setenv("ASSAY_TEST_KEY_HOSTS", entry)
    with pytest.raises(ValueError, match=re.escape(f"ASSAY_TEST_KEY_HOSTS entry {entry!r}")):
        _client("https://vllm.internal:8000/v1")


def test_a_name_rebound_to_metadata_after_the_check_is_refused_at_connection(monkeypatch):
    # The name passes the check when the client is built (loopback), then resolves to the
    # metadata address when the connection is opened.
    seen: list[dict[str, str]] = []
    with asgi_in_background(_recording_app(seen)) as running:
        resolver = ControlledResolver(
            monkeypatch, {"rebind.test": ["127.0.0.1", "169.254.169.254"]}
        )
        with _client(f"http://rebind.test:{running.port}/v1", max_retries=3) as client:
            got = client.complete([GENERATE])[0]
    assert resolver.asked == ["rebind.test", "rebind.test"]  # built, then one connection
    assert got.error is not None and "169.254.169.254" in got.error
    assert "link-local" in got.error
    assert not any(a.startswith("169.254.") for a in resolver.connected)
    assert seen == []


def test_each_connection_goes_to_the_address_that_was_checked(monkeypatch):
    seen: list[dict[str, str]] = []
    with asgi_in_background(_recording_app(seen)) as running:
        resolver = ControlledResolver(monkeypatch, {"pinned.test": ["127.0.0.1"]})
        with _client(f"http://pinned.test:{running.port}/v1") as client:
            assert client.complete([GENERATE])[0].ok
    assert resolver.connected == ["127.0.0.1"]
    assert seen and seen[0]["host"] == f"pinned.test:{running.port}"
