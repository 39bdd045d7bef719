"""Argument checks shared by the registry's writers: text, tags, version numbers, serving
configs and source URIs.
"""

from __future__ import annotations

import re
import types
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Any

from assay.core.security import contains_key_shape
from assay.models.base import ServingConfig
from assay.registry.errors import invalid
from assay.registry.limits import DESCRIPTION_MAX_BYTES, check_line, check_prose
from assay.registry.names import check_name
from assay.registry.schema import TAG_VALUE_LEN

SOURCE_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S")


def check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{what} must be a string, got {type(value).__name__}")
    return check_prose(value, what, DESCRIPTION_MAX_BYTES)


def check_tags(tags: Mapping[str, object] | None, where: str) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise invalid(f"{where}: tags must be a mapping, got {type(tags).__name__}")
    out = {}
    for key, value in tags.items():
        check_name(key, f"{where}: tag key", allow_at=True)
        out[key] = check_tag_value(value, f"{where}: tag {key!r}")
    return out


def check_tag_value(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{what} value must be a string, got {type(value).__name__}")
    if len(value) > TAG_VALUE_LEN:
        raise invalid(f"{what} value is longer than {TAG_VALUE_LEN} characters")
    return check_line(value, f"{what} value")


def check_version_number(version: object, where: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise invalid(f"{where}: version must be a positive integer, got {version!r}")
    return version


_SERVING_HINTS = typing.get_type_hints(ServingConfig)
_POSITIVE_SERVING = {"batch_size", "max_context"}


# Query parameter names that carry secrets (``api_key``, ``access_token``, ``X-Amz-Signature``…).
_CREDENTIAL_PARAMETER = re.compile(
    r"(?i)key|token|secret|passw|pwd|auth|signature|^sig$|credential|session"
)


def credentials_in_source(source: str) -> str | None:
    """What in a source URI looks like a credential, or None.

    A user or password in the authority (``scheme:http://user:pw@host/...``), a query
    parameter named like a secret (``?api_key=…``, ``?token=…``, ``?X-Amz-Signature=…``), or
    a key-shaped word anywhere (``sk-…``, ``hf_…``).
    """
    _, _, rest = source.partition(":")
    parts = urllib.parse.urlsplit(rest)
    if "@" in parts.netloc:
        return "a user or password in the URL"
    for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if _CREDENTIAL_PARAMETER.search(name):
            return f"the query parameter {name!r}"
    if contains_key_shape(source):
        return "a key-shaped word"
    return None


def normalize_serving(serving: Mapping[str, Any] | None, where: str = "serving") -> dict[str, Any]:
    """Validate a serving config and return it with every field filled in (the stored form).

    Two configs that differ only by spelled-out defaults normalize to the same dict, so
    ``find_version`` matches them.
    """
    if serving is None:
        return ServingConfig().to_dict()
    if not isinstance(serving, Mapping):
        raise invalid(f"{where}: serving config must be a JSON object, got {serving!r}")
    for key, value in serving.items():
        hint = _SERVING_HINTS.get(key)
        if hint is None:
            continue  # ServingConfig.from_dict names every unknown key below
        bool_for_int = isinstance(value, bool) and hint is int
        if bool_for_int or not isinstance(value, _runtime_type(hint)):
            raise invalid(f"{where}: serving key {key!r} must be {hint}, got {value!r}")
        if key in _POSITIVE_SERVING and value < 1:
            raise invalid(f"{where}: serving key {key!r} must be positive, got {value!r}")
    try:
        return ServingConfig.from_dict(dict(serving)).to_dict()
    except (TypeError, ValueError) as exc:
        raise invalid(f"{where}: {exc}") from exc


def _runtime_type(hint: Any) -> Any:
    # ``str | None`` works with isinstance once None is spelled as its type.
    if isinstance(hint, types.UnionType):
        return tuple(type(None) if arg is None else arg for arg in typing.get_args(hint))
    return hint
