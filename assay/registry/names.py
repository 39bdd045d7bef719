"""Rules for names that end up in Dagster partition keys, and parsing of keys and URIs.

A model version's key ``<model>@v<n>`` is a ``model_version`` partition key and becomes one
half of a multi-partition key joined by ``|``; partition ranges are written with ``...`` and
lists with ``,`` and ``[ ]``. So names, aliases, tag keys and prompt names may not contain
those, nor ``/`` (URI separator). ``@`` is refused in model and prompt names because it
separates the name from the version or alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assay.registry.errors import invalid
from assay.registry.limits import unsafe_characters

MAX_NAME_LEN = 128
_FORBIDDEN_CHARS = "/|,[]"
_VERSION_WORD = re.compile(r"^v(\d+)$")
RESERVED_ALIASES = frozenset({"latest"})


def check_name(value: object, what: str, *, allow_at: bool = False) -> str:
    """Return ``value`` if it is safe inside a partition key, else raise INVALID_PARAMETER_VALUE."""
    if not isinstance(value, str) or not value:
        raise invalid(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LEN:
        raise invalid(f"{what} {value[:40]!r}... is longer than {MAX_NAME_LEN} characters")
    bad = sorted({c for c in value if c in _FORBIDDEN_CHARS})
    if bad:
        raise invalid(f"{what} {value!r} contains {' '.join(bad)} (not allowed in partition keys)")
    if "..." in value:
        raise invalid(f"{what} {value!r} contains '...' (not allowed in partition keys)")
    if unsafe_characters(value):  # controls and bidirectional overrides
        raise invalid(f"{what} {value!r} contains control characters")
    if value != value.strip():
        raise invalid(f"{what} {value!r} has leading or trailing whitespace")
    if not allow_at and "@" in value:
        raise invalid(f"{what} {value!r} contains '@' (it separates name and version)")
    return value


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
