"""What both HTTP servers (``assay server`` and ``assay serve``) accept from a request.

- **Host allow-list** (DNS rebinding): a hostile page whose name resolves to 127.0.0.1 still
  sends its own name in ``Host``; only the listed names are served (default: loopback names;
  ``*`` for any). 400 otherwise.
- **Origin**: a browser request from a page other than the server's own (a host that is not
  an allowed name, or an allowed name on another port) is refused (403), whatever its method.
  Clients other than browsers send no ``Origin``.
- **JSON bodies only**: a request carrying a body must declare ``application/json`` (415
  otherwise), so a web page cannot send one without a CORS preflight, which neither server
  grants.
- **Strict JSON**: a body is one JSON object of valid Unicode text: no nesting deeper than the
  server's limit, no integer over ``MAX_INT_DIGITS`` digits, no ``NaN``/``Infinity``, no lone
  surrogate (``"\\ud800"``) in any string. Each is a ``BodyError`` with the reason, which the
  servers answer with 400 before any handler runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
MAX_INT_DIGITS = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def allowed_hosts_from_env(variable: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The comma-separated names in ``variable``, lower-cased; loopback names when unset."""
    raw = environ.get(variable)
    if not raw:
        return LOOPBACK_HOSTS
    return tuple(h.strip().lower() for h in raw.split(",") if h.strip())


def _host_name(value: str) -> str:
    name = value.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name.rstrip(".")


def host_allowed(host_header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Host`` header (``name``, ``name:port``, ``[v6]:port``) names an allowed host."""
    if "*" in allowed:
        return True
    if not host_header:
        return False
    return _host_name(host_header) in allowed


def _host_port(value: str) -> int | None:
    """The port of a ``Host`` header (``name:port``, ``[v6]:port``), None when it names none."""
    value = value.strip()
    tail = value[value.find("]") + 1 :] if value.startswith("[") else value
    if tail.count(":") != 1:
        return None
    port = tail.rsplit(":", 1)[1]
    return int(port) if port.isdigit() else None


def origin_allowed(origin: str | None, host_header: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether an ``Origin`` header is absent or names this server: an allowed host name (the
    request's own ``Host`` name where any is allowed) on the port the request was sent to, so
    that a page served from another port of an allowed name (another local application) is
    refused too. ``null`` never passes."""
    if origin is None:
        return True
    if not host_header:
        return False
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    name = parts.hostname.rstrip(".").lower()
    if name not in (allowed if "*" not in allowed else (_host_name(host_header),)):
        return False
    default = 443 if parts.scheme == "https" else 80
    return (port or default) == (_host_port(host_header) or default)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused before it reaches a route: the status and a sentence."""

    status: int
    message: str


def access_refusal(headers: Mapping[str, str], allowed: tuple[str, ...]) -> Refusal | None:
    """The Host and Origin rules (``headers`` with lower-case names); ``None`` if they pass."""
    if not host_allowed(headers.get("host"), allowed):
        return Refusal(400, "this Host is not served here")
    if not origin_allowed(headers.get("origin"), headers.get("host"), allowed):
        return Refusal(403, "requests from this Origin are not served here")
    return None


def body_type_refusal(method: str, headers: Mapping[str, str]) -> Refusal | None:
    """The JSON-only rule for a request that carries a body; ``None`` if it passes."""
    if _has_body(method, headers):
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return Refusal(415, "request bodies must be application/json")
    return None


def request_refusal(
    method: str, headers: Mapping[str, str], allowed: tuple[str, ...]
) -> Refusal | None:
    """All three rules, in the order above; ``None`` when the request may go on."""
    return access_refusal(headers, allowed) or body_type_refusal(method, headers)


def _has_body(method: str, headers: Mapping[str, str]) -> bool:
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    if "transfer-encoding" in headers:
        return True
    length = headers.get("content-length", "0").strip()
    return length != "0" and length != ""


class BodyError(ValueError):
    """A request body that is not one acceptable JSON object; the message says why."""


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise BodyError(
            f"request body has an integer of {digits} digits; at most {MAX_INT_DIGITS} are accepted"
        )
    return int(text)


def _no_constant(name: str) -> Any:
    raise BodyError(f"request body is not valid JSON: {name} is not a JSON number")


def parse_json_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    """``raw`` as a JSON object under the rules in the module docstring, or a ``BodyError``."""
    try:
        value = json.loads(raw, parse_int=_bounded_int, parse_constant=_no_constant)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError("request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BodyError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BodyError("request body must be a JSON object")
    _check_tree(value, max_depth)
    return value


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and lone surrogates, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise BodyError(
                    "request body has a string with a lone UTF-16 surrogate (such as "
                    "'\\ud800'), which is not Unicode text"
                )
            continue
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise BodyError(f"request body is nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
