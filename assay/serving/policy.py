"""What ``assay serve`` accepts: size limits, allowed Host names, JSON bodies and the API key.

Every limit has a default that fits the bundled model and an environment variable (also a
flag of ``assay serve``); ``ServerLimits.off()`` lifts them all, for benchmarks only.

| limit | default | variable |
|---|---|---|
| request body | 1 MiB | ``ASSAY_SERVE_MAX_BODY_BYTES`` |
| prompts per request | 32 | ``ASSAY_SERVE_MAX_PROMPTS`` |
| characters per prompt or chat message | 32,768 | ``ASSAY_SERVE_MAX_PROMPT_CHARS`` |
| ``max_tokens`` | 1,024 | ``ASSAY_SERVE_MAX_TOKENS`` |
| JSON nesting depth | 32 | ``ASSAY_SERVE_MAX_JSON_DEPTH`` |
| stop sequences | 16 | ``ASSAY_SERVE_MAX_STOPS`` |
| echo word-piece characters per request | 4,000,000 | ``ASSAY_SERVE_MAX_ECHO_CHARS`` |

The last one bounds ``echo`` + ``logprobs`` for clients without exact prompt scoring, where
each word of a prompt becomes one request holding the text before it (quadratic in length).

Access: requests whose ``Host`` is not an allowed name get 400 (DNS rebinding: a hostile page
whose name resolves to 127.0.0.1 still sends its own name); by default only loopback names
(``ASSAY_SERVE_ALLOWED_HOSTS``, comma-separated, ``*`` for any). POST bodies must be
``application/json`` (415 otherwise), so a web page cannot send one without a CORS preflight,
which this server never grants. With an API key (``ASSAY_SERVE_API_KEY`` or ``--api-key``)
every request needs ``Authorization: Bearer <key>``, compared in constant time; 401 otherwise.
Connection limits (request timeout, open connections) are ``assay.core.http_server``'s.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

_UNLIMITED = sys.maxsize
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CONNECTIONS_ENV_PREFIX = "ASSAY_SERVE_"
ALLOWED_HOSTS_ENV = "ASSAY_SERVE_ALLOWED_HOSTS"
API_KEY_ENV = "ASSAY_SERVE_API_KEY"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Upper bounds on one request (see the module docstring for defaults and variables)."""

    max_body_bytes: int = 1 << 20
    max_prompts: int = 32
    max_prompt_chars: int = 32_768
    max_tokens: int = 1024
    max_json_depth: int = 32
    max_stops: int = 16
    max_echo_chars: int = 4_000_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"server limit {f.name} must be a positive integer, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerLimits:
        """Defaults, overridden by ``ASSAY_SERVE_<FIELD>`` variables."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for f in fields(cls):
            name = f"ASSAY_SERVE_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = int(raw)
            except ValueError:
                raise ValueError(f"${name} must be a positive integer, got {raw!r}") from None
        return cls(**values)

    @classmethod
    def off(cls) -> ServerLimits:
        """No limits at all (for measuring what the limits cost)."""
        return cls(**{f.name: _UNLIMITED for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class ServerAccess:
    """Who may call the server: allowed ``Host`` names and an optional API key."""

    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    api_key: str | None = None

    def __repr__(self) -> str:  # the key never appears in logs
        key = "set" if self.api_key else "none"
        return f"ServerAccess(allowed_hosts={self.allowed_hosts!r}, api_key={key})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerAccess:
        env = os.environ if environ is None else environ
        hosts = env.get(ALLOWED_HOSTS_ENV)
        allowed = (
            tuple(h.strip().lower() for h in hosts.split(",") if h.strip())
            if hosts
            else LOOPBACK_HOSTS
        )
        return cls(allowed_hosts=allowed, api_key=env.get(API_KEY_ENV) or None)

    def host_allowed(self, host_header: str | None) -> bool:
        if "*" in self.allowed_hosts:
            return True
        if not host_header:
            return False
        name = host_header.strip().lower()
        if name.startswith("["):  # [::1]:8000
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        return name.rstrip(".") in self.allowed_hosts

    def key_matches(self, authorization: str | None) -> bool:
        if self.api_key is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        # Constant time: how much of a guess is right must not show in the response time.
        return hmac.compare_digest(given.strip().encode(), self.api_key.encode())


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _json_error(status: int, message: str, kind: str) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return status, json.dumps(body).encode()


class AccessGuard:
    """ASGI middleware: Host allow-list, API key and JSON-only POST bodies, before any route."""

    def __init__(self, app: Any, access: ServerAccess, limits: ServerLimits) -> None:
        self.app = app
        self.access = access
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, body = refusal
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, method: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        if not self.access.host_allowed(headers.get("host")):
            return _json_error(400, "this Host is not served here", "invalid_request_error")
        if not self.access.key_matches(headers.get("authorization")):
            return _json_error(401, "a valid API key is required", "authentication_error")
        if method == "POST":
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                return _json_error(
                    415, "request bodies must be application/json", "invalid_request_error"
                )
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
                return _json_error(
                    413,
                    f"request body over {self.limits.max_body_bytes} bytes",
                    "invalid_request_error",
                )
        return None
