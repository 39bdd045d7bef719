"""MLflow's search grammar for registered models and versions: parsed here, answered in SQL.

Supported, as MLflow documents it: comparisons joined by ``AND``; ``name`` with ``=``, ``!=``,
``LIKE``, ``ILIKE`` and ``IN (...)``; ``tags.<key>``/``tag.<key>`` (key optionally in
backticks or quotes) with ``=``, ``!=``, ``LIKE``, ``ILIKE``; for versions also
``version_number`` (numeric comparisons), ``run_id``, ``source_path``. No comparison, ``!=``
included, holds for a tag the record does not have: MLflow's SQL store joins the tags it
compares.
Ordering: ``name``, ``creation_timestamp``, ``last_updated_timestamp`` (and ``version_number``
for versions), each ``ASC`` or ``DESC``. Pagination tokens are opaque offsets.

The parsed comparisons are run by the database (``assay.registry.search``): filter, order and
page, so a page costs what its rows cost, not what the registry holds. :func:`matches` says
what one comparison means for one record; the SQL translation is tested against it.

A filter is untrusted text from any reader: it is at most ``MAX_FILTER_CHARS`` long, a LIKE
pattern at most ``MAX_LIKE_PATTERN_CHARS``, and LIKE is matched without backtracking
(``like_matches``; SQLite's GLOB and Postgres's LIKE give up a failed wildcard early too), so
no filter costs more than a scan of the records.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

from assay.registry.errors import invalid
from assay.registry.like import like_matches
from assay.registry.search import NUMERIC_OPERATORS, Comparison

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<lparen>\()
      | (?P<rparen>\))
      | (?P<comma>,)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:`[^`]+`|"[^"]+"|'[^']+'|[A-Za-z0-9_.\-]+))?)
    )""",
    re.VERBOSE,
)

_STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
# A filter is a request's text: bounded so that parsing and matching stay cheap per record.
MAX_FILTER_CHARS = 16_384
MAX_LIKE_PATTERN_CHARS = 256


def _unquote(text: str) -> str:
    quote = text[0]
    return re.sub(r"\\(.)", r"\1", text[1:-1]) if quote in "'\"" else text


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise invalid(f"invalid filter {text!r}: cannot parse near {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _key(ident: str, attributes: Sequence[str]) -> str:
    head, dot, rest = ident.partition(".")
    if dot and head.lower() in ("tag", "tags"):
        name = rest
        if name[:1] in "`'\"" and name[-1:] == name[:1]:
            name = name[1:-1]
        return f"tags.{name}"
    if dot and head.lower() == "attribute":
        ident = rest
    if ident not in attributes:
        raise invalid(
            f"invalid filter key {ident!r}: expected one of {', '.join(attributes)} or tags.<key>"
        )
    return ident


def parse_filter(text: str | None, attributes: Sequence[str]) -> list[Comparison]:
    """Parse ``a = 'x' AND tags.k LIKE 'y%'``; INVALID_PARAMETER_VALUE names what is wrong."""
    if not text or not text.strip():
        return []
    if len(text) > MAX_FILTER_CHARS:
        raise invalid(f"invalid filter: {len(text)} characters, over {MAX_FILTER_CHARS}")
    tokens = _tokens(text)
    terms: list[Comparison] = []
    i = 0

    def take(kind: str | None = None) -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens):
            raise invalid(f"invalid filter {text!r}: ends too early")
        token = tokens[i]
        if kind is not None and token[0] != kind:
            raise invalid(f"invalid filter {text!r}: expected {kind}, got {token[1]!r}")
        i += 1
        return token

    while True:
        _, ident = take("ident")
        key = _key(ident, attributes)
        kind, op = take()
        if kind == "ident" and op.upper() in ("LIKE", "ILIKE", "IN"):
            op = op.upper()
        elif kind == "ident" and op.upper() == "NOT" and i < len(tokens):
            if tokens[i][1].upper() != "IN":
                raise invalid(f"invalid filter {text!r}: NOT must be followed by IN")
            i += 1
            op = "NOT IN"
        elif kind != "op":
            raise invalid(f"invalid filter {text!r}: expected a comparison after {ident!r}")
        value: Any
        if op in ("IN", "NOT IN"):
            take("lparen")
            items = []
            while True:
                vkind, raw = take()
                if vkind not in ("string", "number"):
                    raise invalid(f"invalid filter {text!r}: IN takes quoted values")
                items.append(_unquote(raw))
                sep, _ = take()
                if sep == "rparen":
                    break
                if sep != "comma":
                    raise invalid(f"invalid filter {text!r}: expected ',' or ')' in IN (...)")
            value = tuple(items)
        else:
            vkind, raw = take()
            if vkind == "string":
                value = _unquote(raw)
            elif vkind == "number":
                value = float(raw) if "." in raw else int(raw)
            else:
                raise invalid(f"invalid filter {text!r}: {raw!r} is not a value")
            if op in ("LIKE", "ILIKE") and len(str(value)) > MAX_LIKE_PATTERN_CHARS:
                raise invalid(
                    f"invalid filter: the {op} pattern for {key!r} has {len(str(value))} "
                    f"characters, over {MAX_LIKE_PATTERN_CHARS}"
                )
        terms.append(Comparison(key, op, value))
        if i == len(tokens):
            return terms
        kind, word = take()
        if kind != "ident" or word.upper() != "AND":
            raise invalid(f"invalid filter {text!r}: only AND joins comparisons, got {word!r}")


def matches(term: Comparison, value: Any, numeric: bool = False) -> bool:
    """Whether a record's ``value`` for ``term.key`` (None when absent) satisfies ``term``."""
    if value is None:
        return False  # as in MLflow, a record without the tag matches no comparison on it
    if term.op in ("IN", "NOT IN"):
        found = str(value) in term.value
        return found if term.op == "IN" else not found
    if numeric:
        try:
            return NUMERIC_OPERATORS[term.op](int(value), int(term.value))
        except (KeyError, TypeError, ValueError):
            raise invalid(f"invalid comparison {term.op!r} on {term.key!r}") from None
    if term.op not in _STRING_OPS:
        raise invalid(f"invalid comparison {term.op!r} on {term.key!r}: use =, !=, LIKE or ILIKE")
    if term.op in ("LIKE", "ILIKE"):
        return like_matches(str(term.value), str(value), fold=term.op == "ILIKE")
    equal = str(value) == str(term.value)
    return equal if term.op == "=" else not equal


def parse_order_by(clauses: Sequence[str], allowed: Sequence[str]) -> list[tuple[str, bool]]:
    """``["name ASC", "creation_timestamp DESC"]`` → ``[("name", False), (..., True)]``."""
    out = []
    for clause in clauses:
        parts = clause.split()
        if not parts or len(parts) > 2:
            raise invalid(f"invalid order_by clause {clause!r}")
        key = parts[0].removeprefix("attribute.")
        if key not in allowed:
            raise invalid(f"invalid order_by key {key!r}: expected one of {', '.join(allowed)}")
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise invalid(f"invalid order_by direction {parts[1]!r} in {clause!r}")
        out.append((key, direction == "DESC"))
    return out


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except Exception:
        raise invalid(f"invalid page_token {token[:40]!r}") from None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise invalid(f"invalid page_token {token[:40]!r}")
    return offset
