"""The one name rule for every key, and parsing of keys and URIs.

A model version's key ``<model>@v<n>`` is a ``model_version`` partition key and becomes one
half of a multi-partition key joined by ``|``; partition ranges are written with ``...``, lists
with ``,`` and ``[ ]``, URIs with ``:`` and ``/``. Rather than deny those one by one (and miss
one: a model named ``a:b`` was once accepted and then could not be parsed back), every name
is held to an allow-list: model names, aliases, prompt names, tag keys, metric names and the
suite's scenario keys all use :func:`name_problem`. ``@`` is allowed only where ``allow_at``
says so (tag keys, scenario keys), because it separates a name from its version or alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assay.registry.errors import invalid
from assay.registry.limits import unsafe_characters

MAX_NAME_LEN = 128
NAME_RULE = (
    f"1-{MAX_NAME_LEN} letters, digits, '_', '-' or '.', starting with a letter or digit, "
    "without '...'"
)
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_VERSION_WORD = re.compile(r"^v(\d+)$")
RESERVED_ALIASES = frozenset({"latest"})


def name_problem(value: object, *, allow_at: bool = False) -> str | None:
    """Why ``value`` cannot be a name or key (one short clause), or None when it can."""
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, got {value!r}"
    if len(value) > MAX_NAME_LEN:
        return f"{value[:40]!r}... is longer than {MAX_NAME_LEN} characters"
    if unsafe_characters(value):  # controls and bidirectional overrides
        return f"{value!r} contains control characters"
    if value != value.strip():
        return f"{value!r} has leading or trailing whitespace"
    if "@" in value and not allow_at:
        return f"{value!r} contains '@' (it separates name and version)"
    allowed = _ALLOWED | {"@"} if allow_at else _ALLOWED
    bad = sorted({c for c in value if c not in allowed})
    if bad:
        return f"{value!r} contains {' '.join(repr(c) for c in bad)} (use {NAME_RULE})"
    if "..." in value:
        return f"{value!r} contains '...' (it writes partition ranges)"
    if not value[0].isalnum():
        return f"{value!r} must start with a letter or digit"
    return None


def check_name(value: object, what: str, *, allow_at: bool = False) -> str:
    """Return ``value`` if it follows the name rule, else raise INVALID_PARAMETER_VALUE."""
    problem = name_problem(value, allow_at=allow_at)
    if problem is not None:
        raise invalid(f"{what} {problem}")
    return value  # type: ignore[return-value]


def check_alias(value: object, what: str = "alias") -> str:
    """Aliases follow the name rules and may not look like a version (``v3``) or be reserved."""
    alias = check_name(value, what)
    if _VERSION_WORD.match(alias):
        raise invalid(f"{what} {alias!r} looks like a version number; choose another name")
    if alias in RESERVED_ALIASES:
        raise invalid(f"{what} {alias!r} is reserved")
    return alias


def version_key(name: str, version: int) -> str:
    """The partition key of one version: ``name@v<version>``."""
    return f"{name}@v{version}"


@dataclass(frozen=True, slots=True)
class VersionPointer:
    """A parsed pointer to one version: by number, by alias, or the latest (both None)."""

    name: str
    version: int | None = None
    alias: str | None = None


def parse_reference(text: str, scheme: str) -> VersionPointer:
    """Parse ``name@v3``, ``name@alias``, ``name@latest``, ``<scheme>:/name/3``,
    ``<scheme>:/name@alias`` or ``<scheme>:/name`` (the latest version)."""
    if not isinstance(text, str) or not text:
        raise invalid(f"empty {scheme} reference")
    body = text
    prefix = f"{scheme}:/"
    if text.startswith(prefix):
        body = text[len(prefix) :]
        if "@" not in body and "/" in body:
            name, _, number = body.partition("/")
            if not number.isdigit() or int(number) < 1:
                raise invalid(f"{text!r}: version must be a positive integer, got {number!r}")
            return VersionPointer(check_name(name, f"{scheme} name"), version=int(number))
    elif ":" in text.partition("@")[0]:
        raise invalid(f"{text!r}: expected '{prefix}name@alias', '{prefix}name/N' or 'name@vN'")
    name, sep, tail = body.partition("@")
    check_name(name, f"{scheme} name")
    if not sep:
        return VersionPointer(name)
    if tail == "latest":
        return VersionPointer(name)
    match = _VERSION_WORD.match(tail)
    if match:
        number = int(match.group(1))
        if number < 1:
            raise invalid(f"{text!r}: versions start at 1")
        return VersionPointer(name, version=number)
    return VersionPointer(name, alias=check_name(tail, "alias"))
