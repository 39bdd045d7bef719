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
| model calls per request | 2,048 | ``ASSAY_SERVE_MAX_MODEL_CALLS`` |

The echo limits bound ``echo`` + ``logprobs`` for clients without exact prompt scoring, where
each word of a prompt becomes one model call holding the text before it: the characters
(quadratic in length) and the calls themselves (which an ``openai:`` source bills).

Access (``assay.core.http_rules``, shared with ``assay server``): requests whose ``Host`` is
not an allowed name get 400 (DNS rebinding: a hostile page whose name resolves to 127.0.0.1
still sends its own name), and those from a browser page elsewhere (``Origin``) 403; by
default only loopback names (``ASSAY_SERVE_ALLOWED_HOSTS``, comma-separated, ``*`` for any).
Bodies must be ``application/json`` (415 otherwise), so a web page cannot send one without a
CORS preflight, which this server never grants. With an API key (``ASSAY_SERVE_API_KEY`` or
``--api-key``) every request needs ``Authorization: Bearer <key>``, compared in constant time;
401 otherwise. Connection limits (request timeout, open connections) are
``assay.core.http_server``'s.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from assay.core.http_rules import (
    LOOPBACK_HOSTS,
    access_refusal,
    allowed_hosts_from_env,
    body_type_refusal,
    host_allowed,
)

_UNLIMITED = sys.maxsize
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
    max_model_calls: int = 2048

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
        allowed = allowed_hosts_from_env(ALLOWED_HOSTS_ENV, env)
        return cls(allowed_hosts=allowed, api_key=env.get(API_KEY_ENV) or None)

    def host_allowed(self, host_header: str | None) -> bool:
        return host_allowed(host_header, self.allowed_hosts)

    def key_matches(self, authorization: str | None) -> bool:
        if self.api_key is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        # Constant time: how much of a guess is right must not show in the response time.
        return hmac.compare_digest(given.strip().encode(), self.api_key.encode())


def _json_error(status: int, message: str, kind: str) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return status, json.dumps(body).encode()


class AccessGuard:
    """ASGI middleware: Host and Origin allow-list, API key and JSON-only bodies, before any
    route."""

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
        refused = access_refusal(headers, self.access.allowed_hosts)
        if refused is not None:
            return _json_error(refused.status, refused.message, "invalid_request_error")
        if not self.access.key_matches(headers.get("authorization")):
            return _json_error(401, "a valid API key is required", "authentication_error")
        refused = body_type_refusal(method, headers)
        if refused is not None:
            return _json_error(refused.status, refused.message, "invalid_request_error")
        if method == "POST":
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
                return _json_error(
                    413,
                    f"request body over {self.limits.max_body_bytes} bytes",
                    "invalid_request_error",
                )
        return None
