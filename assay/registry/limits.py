"""What text the registry accepts: no control characters, bounded sizes, reserved tag keys.

Everything stored in the registry is printed somewhere later (``assay registry history``, the
Dagster UI, an MLflow client), so text that can forge a line (a newline), drive a terminal (ESC)
or reorder what a reader sees (bidirectional overrides) is refused when it comes in and escaped
when it goes out. Descriptions and templates are prose and keep newlines and tabs; names, tag
keys and values, and actors are one line.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from assay.registry.errors import invalid

# Sizes in UTF-8 bytes: what a database row and a terminal actually have to hold.
DESCRIPTION_MAX_BYTES = 64 * 1024
TEMPLATE_MAX_BYTES = 256 * 1024
SOURCE_MAX_BYTES = 8 * 1024
ACTOR_MAX_CHARS = 256

# Tags only the regression gate (``gate.<scenario>``) and the evaluation recorder
# (``eval.<scenario>.<metric>``) write; a registry user setting them could walk a version past
# the gate, so the public API (HTTP server, CLI) refuses them.
RESERVED_TAG_PREFIXES = ("gate.", "eval.")

# Bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) and marks.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_PROSE_WHITESPACE = frozenset("\n\t")


def _unsafe(char: str, *, multiline: bool) -> bool:
    if multiline and char in _PROSE_WHITESPACE:
        return False
    if char in _BIDI:
        return True
    # Cc: C0 and C1 controls, DEL. Line/paragraph separators (Zl, Zp) break lines too.
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def unsafe_characters(value: str, *, multiline: bool = False) -> list[str]:
    """The distinct unsafe characters in ``value``, spelled as escapes (``'\\x1b'``)."""
    found = sorted({c for c in value if _unsafe(c, multiline=multiline)})
    return [c.encode("unicode_escape").decode("ascii") for c in found]


def check_line(value: str, what: str) -> str:
    """Refuse control and bidirectional-override characters in a one-line value."""
    bad = unsafe_characters(value)
    if bad:
        raise invalid(f"{what} contains control characters ({' '.join(bad)})")
    return value


def check_prose(value: str, what: str, max_bytes: int) -> str:
    """Refuse control characters other than newline and tab, and text over ``max_bytes``."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise invalid(f"{what} is {size} bytes; at most {max_bytes} bytes are accepted")
    bad = unsafe_characters(value, multiline=True)
    if bad:
        raise invalid(f"{what} contains control characters ({' '.join(bad)})")
    return value


def is_reserved_tag(key: str) -> bool:
    """True for tag keys only the gate and the evaluation recorder may write.

    In any letter case: ``GATE.qa`` is refused too, since a database that compares text
    without case (SQLite's LIKE) would otherwise read it as the gate's verdict.
    """
    return key.casefold().startswith(RESERVED_TAG_PREFIXES)


def check_public_tag_key(key: str, what: str = "tag key") -> str:
    """Refuse a reserved tag key to an ordinary caller (INVALID_PARAMETER_VALUE)."""
    if is_reserved_tag(key):
        prefixes = ", ".join(f"{p}*" for p in RESERVED_TAG_PREFIXES)
        raise invalid(
            f"{what} {key!r} is reserved ({prefixes} are written only by the regression gate "
            "and the evaluation recorder)"
        )
    return key


def check_public_tags(tags: Mapping[str, object] | None, what: str = "tag key") -> None:
    """``check_public_tag_key`` for every key of ``tags``."""
    for key in tags or {}:
        check_public_tag_key(key, what)


def escape(value: object) -> str:
    """``str(value)`` with control and bidirectional characters written as escapes
    (``\\n``, ``\\x1b``, ``\\u202e``), so stored text prints as one inert line."""
    text = str(value)
    return "".join(
        c.encode("unicode_escape").decode("ascii") if _unsafe(c, multiline=False) else c
        for c in text
    )
