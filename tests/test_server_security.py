"""Abuse cases for ``assay server``: the real server on loopback, hostile requests as an
attacker would send them (``registry_server`` in conftest.py; slow and idle clients are in
test_http_connections.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import RegistryServer

CREATE = "/api/2.0/mlflow/registered-models/create"


def _post_raw(server: RegistryServer, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{CREATE}",
        content=body,
        headers={
            "Authorization": f"Bearer {server.tokens['walt']}",
            "Content-Type": "application/json",
            **headers,
        },
        timeout=30,
    )


# -- bodies that are JSON, but hostile ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"name": "m", "tags": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper than 32 levels"),
        (b'{"name": "m", "description": ' + b"9" * 5000 + b"}", "integer of 5000 digits"),
        (b'{"name": "m", "description": "x\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"name": "m", "tags": [{"key": "k", "value": "\\udfff"}]}', "lone UTF-16 surrogate"),
        (b'{"name": "m", "description": NaN}', "NaN is not a JSON number"),
    ],
    ids=["deep", "over-the-depth-limit", "5000-digits", "surrogate", "surrogate-in-a-tag", "nan"],
)
def test_hostile_json_is_a_400_with_the_reason(registry_server, body: bytes, why: str):
    response = _post_raw(registry_server, body)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert why in response.json()["message"]
    assert registry_server.registry.list_models() == []


def test_a_valid_astral_character_is_accepted(registry_server):
    # A surrogate pair is one character (U+1F600), not a lone surrogate.
    response = _post_raw(registry_server, b'{"name": "m", "description": "smile \\ud83d\\ude00"}')
    assert response.status_code == 200, response.text
    assert registry_server.registry.get_model("m").description == "smile \U0001f600"


# -- who may call ------------------------------------------------------------------------------


def test_a_foreign_host_header_is_refused(registry_server):
    # DNS rebinding: a page at evil.example, re-pointed to 127.0.0.1, sends its own name.
    for path in ("/health", "/api/assay/v1/whoami"):
        response = httpx.get(
            f"{registry_server.url}{path}",
            headers={
                "Host": "evil.example:5000",
                "Authorization": f"Bearer {registry_server.tokens['rita']}",
            },
        )
        assert response.status_code == 400, path
        assert response.json()["error_code"] == "BAD_REQUEST"
    refused = _post_raw(registry_server, b'{"name": "m"}', Host="evil.example")
    assert refused.status_code == 400 and registry_server.registry.list_models() == []
    port = registry_server.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        named = httpx.get(f"{registry_server.url}/health", headers={"Host": host})
        assert named.status_code == 200, host


def test_allowed_hosts_come_from_the_environment(start_registry_server, monkeypatch):
    monkeypatch.setenv("ASSAY_SERVER_ALLOWED_HOSTS", "registry.internal, Other.Example")
    server = start_registry_server()
    health = f"{server.url}/health"
    assert httpx.get(health, headers={"Host": "registry.internal:5000"}).status_code == 200
    assert httpx.get(health, headers={"Host": "other.example"}).status_code == 200
    assert httpx.get(health).status_code == 400  # 127.0.0.1 is no longer listed
    anywhere = start_registry_server(allowed_hosts=("*",))
    assert httpx.get(f"{anywhere.url}/health", headers={"Host": "x.example"}).status_code == 200


def test_a_form_or_text_body_is_refused_with_415(registry_server):
    # What a web page can send cross-site without a preflight; a browser adds cached Basic
    # credentials on its own, so the token in them would otherwise act for the page.
    import base64

    basic = base64.b64encode(f"walt:{registry_server.tokens['walt']}".encode()).decode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Authorization": f"Basic {basic}"}
        if content_type:
            headers["Content-Type"] = content_type
        response = httpx.post(
            f"{registry_server.url}{CREATE}", content=b'{"name": "m"}', headers=headers
        )
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()["message"]
    assert registry_server.registry.list_models() == []
    # A POST without a body needs no type (the token revocation endpoint takes none).
    empty = httpx.post(
        f"{registry_server.url}/api/assay/v1/tokens/1/revoke",
        headers={"Authorization": f"Bearer {registry_server.tokens['rita']}"},
    )
    assert empty.status_code == 403  # reached the endpoint: a reader may not revoke


def test_a_request_from_a_foreign_page_is_refused(registry_server):
    token = {"Authorization": f"Bearer {registry_server.tokens['walt']}"}
    other_port = registry_server.port + 1 if registry_server.port < 65535 else 1024
    foreign = (
        "https://evil.example",
        "http://127.0.0.1.evil.example:5000",
        "null",
        # Another application on this machine: an allowed name on another port, or none.
        f"http://localhost:{other_port}",
        f"http://127.0.0.1:{other_port}",
        "http://localhost",
        f"ftp://localhost:{registry_server.port}",
    )
    for origin in foreign:
        read = httpx.get(
            f"{registry_server.url}/api/assay/v1/whoami", headers={**token, "Origin": origin}
        )
        assert read.status_code == 403, origin
        assert read.json()["error_code"] == "PERMISSION_DENIED"
    write = _post_raw(registry_server, b'{"name": "m"}', Origin="https://evil.example")
    assert write.status_code == 403 and registry_server.registry.list_models() == []
    local = httpx.get(
        f"{registry_server.url}/api/assay/v1/whoami",
        headers={**token, "Origin": f"http://localhost:{registry_server.port}"},
    )
    assert local.status_code == 200
