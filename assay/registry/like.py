"""SQL ``LIKE`` patterns as the registry's searches mean them, matched in Python and in SQL.

One meaning everywhere: ``%`` is any run of characters, ``_`` exactly one character, and every
other character, the backslash included, stands for itself (no escape character). ``LIKE``
compares characters exactly; ``ILIKE`` folds case as Python's ``re.IGNORECASE`` does.

- :func:`like_matches` matches in Python, in time linear in the pattern.
- :func:`like_to_glob` spells a pattern for SQLite's case-sensitive ``GLOB`` (SQLite's own
  ``LIKE`` folds ASCII letters, so it cannot say a case-sensitive ``LIKE``).
- :func:`escape_like` spells a pattern for ``LIKE … ESCAPE '\\'`` (Postgres).
- On SQLite, ``ILIKE`` is :func:`like_matches` itself, registered on every connection as the
  SQL function ``assay_ilike(pattern, value)`` (SQLite's ``lower()`` folds ASCII letters only).
"""

from __future__ import annotations

import functools
import re

LIKE_ESCAPE = "\\"
ILIKE_FUNCTION = "assay_ilike"


def _segment_regex(segment: str, fold: bool) -> re.Pattern[str]:
    """A fixed-length regex for one ``%``-free piece of a LIKE pattern (``_`` is any char)."""
    body = "".join("." if c == "_" else re.escape(c) for c in segment)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if fold else 0))


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str, fold: bool) -> tuple[list[re.Pattern[str]], list[int]]:
    """The pattern's ``%``-free pieces as regexes, and their lengths (kept: SQLite calls
    ``assay_ilike`` once per row with the same pattern)."""
    texts = pattern.split("%")
    return [_segment_regex(text, fold) for text in texts], [len(text) for text in texts]


def like_matches(pattern: str, value: str, *, fold: bool) -> bool:
    """SQL ``LIKE`` (``%`` any run, ``_`` any one character) in time linear in the pattern.

    A LIKE pattern is a row of fixed-length pieces joined by ``%``. The first piece must match
    at the start, the last at the end, and each middle piece at its leftmost place after the
    one before: if any placement works, the leftmost one does, so nothing is ever retried.
    (Translating ``%`` to ``.*`` in one regex backtracks exponentially on ``%a%a%…%!``.)
    """
    pieces, lengths = _compiled(pattern, fold)
    if len(pieces) == 1:
        return pieces[0].fullmatch(value) is not None
    head, *middle, tail = pieces
    start, end = lengths[0], len(value) - lengths[-1]
    if end < start or head.fullmatch(value, 0, start) is None:
        return False
    if tail.fullmatch(value, end) is None:
        return False
    for piece, length in zip(middle, lengths[1:-1], strict=True):
        if length == 0:
            continue
        found = piece.search(value, start, end)
        if found is None:
            return False
        start = found.end()
    return True


def ilike_function(pattern: str | None, value: str | None) -> int | None:
    """``assay_ilike(pattern, value)`` for SQLite: 1 or 0, NULL when either side is NULL."""
    if pattern is None or value is None:
        return None
    return int(like_matches(pattern, value, fold=True))


_GLOB_LITERAL = {"*": "[*]", "?": "[?]", "[": "[[]"}


def like_to_glob(pattern: str) -> str:
    """The SQLite ``GLOB`` pattern that matches what ``pattern`` matches as a ``LIKE``."""
    return "".join(
        "*" if c == "%" else "?" if c == "_" else _GLOB_LITERAL.get(c, c) for c in pattern
    )


def escape_like(pattern: str) -> str:
    """``pattern`` for ``LIKE … ESCAPE '\\'``: its backslashes stand for themselves."""
    return pattern.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
