"""The web UI's exposure: dagster-webserver has no authentication, so deploy/README.md binds it
to loopback, and deploy/nginx/assay.conf is the authenticating TLS proxy in front of it.

The proxy runs in a real nginx on loopback (tests/reverse_proxy.py) in front of a small HTTP
server that reports what reached it; tests/test_deploy_stack.py puts it in front of a real
dagster-webserver (``make test-deploy``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reverse_proxy import PASSWORD, USER, missing, reverse_proxy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assay.serving import asgi_in_background

REPO = Path(__file__).resolve().parent.parent
README = REPO / "deploy" / "README.md"


def _webserver_commands() -> list[list[str]]:
    """Every ``dagster-webserver`` command in the README's shell blocks."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip().rstrip("&").strip()
            if line.startswith("dagster-webserver"):
                commands.append(shlex.split(line))
    return commands


def test_the_readme_starts_the_webserver_on_loopback_only() -> None:
    commands = _webserver_commands()
    assert commands, "deploy/README.md starts no dagster-webserver"
    for command in commands:
        hosts = [command[i + 1] for i, a in enumerate(command) if a in ("-h", "--host")]
        assert hosts == ["127.0.0.1"], f"binds {hosts or 'the default'}: {' '.join(command)}"
    assert "0.0.0.0" not in README.read_text()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[int, list[dict]]]:
    """A stand-in for dagster-webserver: records each request's headers and answers them."""
    seen: list[dict] = []

    async def anything(request: Request) -> JSONResponse:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return JSONResponse({"path": request.url.path})

    app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])
    with asgi_in_background(app) as running:
        yield int(running.base_url.split(":")[-1].split("/")[0]), seen


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    reason = missing()
    if reason:
        pytest.skip(reason)
    with reverse_proxy(tmp_path_factory.mktemp("nginx"), upstream[0]) as running:
        yield running


def test_nginx_accepts_the_configuration(proxy) -> None:
    assert "syntax is ok" in proxy.check_output and "test is successful" in proxy.check_output


def test_the_proxy_lets_in_only_signed_in_users_over_tls(proxy, upstream) -> None:
    _, seen = upstream
    seen.clear()
    with httpx.Client(verify=proxy.tls, timeout=10) as client:
        # Plain HTTP is only a redirect to HTTPS.
        plain = client.get(f"http://127.0.0.1:{proxy.http_port}/runs", follow_redirects=False)
        assert plain.status_code == 301
        assert plain.headers["location"].startswith("https://")

        anonymous = client.get(f"{proxy.url}/graphql")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        wrong = client.get(f"{proxy.url}/graphql", auth=(USER, "wrong"))
        assert wrong.status_code == 401
        stranger = client.post(f"{proxy.url}/graphql", auth=("mallory", PASSWORD), json={})
        assert stranger.status_code == 401
        assert seen == []  # none of them reached the webserver

        signed_in = client.get(f"{proxy.url}/runs", auth=(USER, PASSWORD))
        assert signed_in.status_code == 200 and signed_in.json() == {"path": "/runs"}
        assert "max-age" in signed_in.headers["strict-transport-security"]
    (headers,) = seen
    assert "authorization" not in headers  # the password stays at the proxy
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"
