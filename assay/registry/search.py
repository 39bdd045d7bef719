"""Searches of registered models and versions, run by the database: filter, order and page.

A search is a list of :class:`Comparison` terms joined by AND, an order (keys with their
directions, ties broken by the caller's last keys) and a page (offset, limit). Every part runs
in SQL on SQLite and on Postgres, so a 100-row page reads about 100 rows whatever the registry
holds; only the page's rows become records.

What a comparison means is what ``assay.server.search.matches`` says for one record (the tests
compare the two on many filters):

- ``=`` and ``!=`` compare text exactly; ``IN`` and ``NOT IN`` test membership; ``LIKE`` and
  ``ILIKE`` as :mod:`assay.registry.like` defines them (no escape character).
- A comparison on a tag holds only for a record that has the tag (``!=`` included).
- ``version_number`` compares as integers; ``run_id`` is the empty string (assay keeps none).
- Orders by time compare milliseconds (what the API shows): versions created in the same
  millisecond fall through to the next key, as they do when the answer is sorted in Python.
- Text orders compare code points (Postgres: ``COLLATE "C"``, whatever the database's locale).

Text no stored value can hold (NUL, lone surrogates: the registry refuses control characters
and stores UTF-8) compares as what it is, unequal to everything, without being sent to the
database, which would refuse it.

Case folding for ``ILIKE``: on SQLite it is Python's (SQLite's LIKE between ASCII characters,
the function ``assay_ilike`` beyond); on Postgres it is the database's ``ILIKE``, which agrees
with Python's on ASCII letters and, for letters beyond ASCII, follows the database's locale.

A filter of more than ``_TERMS_PER_QUERY`` terms is split into nested ``id IN (…)`` subqueries
(SQLite refuses deeper expressions); identical terms count once.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    and_,
    cast,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from assay.registry.entities import ModelVersion, RegisteredModel
from assay.registry.errors import invalid
from assay.registry.like import ILIKE_FUNCTION, LIKE_ESCAPE, escape_like, like_to_glob
from assay.registry.schema import ModelRow, ModelTagRow, VersionRow, VersionTagRow
from assay.registry.versions import ModelRegistry

T = TypeVar("T")

VERSION_KEYS = ("name", "version_number", "run_id", "source_path")
MODEL_KEYS = ("name",)
VERSION_ORDER_KEYS = ("name", "version_number", "creation_timestamp", "last_updated_timestamp")
MODEL_ORDER_KEYS = ("name", "creation_timestamp", "last_updated_timestamp")
# Version numbers and row ids are 32-bit integers in the schema (Postgres refuses a bigger
# parameter for them), so no table has more rows and no version a number outside this range.
_INT32 = (-(2**31), 2**31 - 1)
# A filter's numeric comparisons; the same functions build SQL on columns and compare values.
NUMERIC_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """One ``key op value`` term: ``key`` is an attribute name or ``tags.<name>``."""

    key: str
    op: str
    value: Any

    @property
    def tag(self) -> str | None:
        return self.key[5:] if self.key.startswith("tags.") else None


@dataclass(frozen=True, slots=True)
class SearchPage(Generic[T]):
    """One page of a search's answer, and whether more rows follow it."""

    items: list[T]
    more: bool


# SQLite refuses an expression deeper than 1000 nodes, and ``a AND b AND …`` nests one node
# per term; a filter may hold more than a thousand terms (16 KiB of ``name != 'x' AND …``).
_TERMS_PER_QUERY = 100


def _versions_where(conditions: Sequence[ColumnElement[bool]]) -> Any:
    return (
        select(VersionRow.id)
        .join(ModelRow, ModelRow.id == VersionRow.model_id)
        .where(*conditions)
        .correlate(None)
    )


def _models_where(conditions: Sequence[ColumnElement[bool]]) -> Any:
    return select(ModelRow.id).where(*conditions).correlate(None)


def _bounded(
    conditions: list[ColumnElement[bool]],
    key: Any,
    subquery: Callable[[Sequence[ColumnElement[bool]]], Any],
) -> list[ColumnElement[bool]]:
    """``conditions`` as at most ``_TERMS_PER_QUERY`` of them joined by AND: beyond that, each
    group of that many becomes ``key IN (rows matching the group)``, recursively."""
    while len(conditions) > _TERMS_PER_QUERY:
        conditions = [
            key.in_(subquery(conditions[i : i + _TERMS_PER_QUERY]))
            for i in range(0, len(conditions), _TERMS_PER_QUERY)
        ]
    return conditions


def _storable(text: str) -> bool:
    """Whether a stored value could equal ``text`` (no NUL, no lone surrogate)."""
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


class RegistrySearch(ModelRegistry):
    """``search_versions`` and ``search_models``: MLflow's searches, answered in SQL."""

    # -- the pieces of a query

    def _text(self, column: Any, term: Comparison) -> ColumnElement[bool]:
        op, value = term.op, term.value
        if op in ("IN", "NOT IN"):
            items = sorted({str(v) for v in value if _storable(str(v))})
            if op == "IN":
                return column.in_(items) if items else false()
            return column.not_in(items) if items else true()
        if not isinstance(value, str):
            raise invalid(f"invalid value {value!r} for {term.key!r}: quote it")
        if not _storable(value):
            return true() if op in ("!=", "<>") else false()
        if op == "=":
            return column == value
        if op in ("!=", "<>"):
            return column != value
        if op == "LIKE":
            if self._postgres:
                return column.like(escape_like(value), escape=LIKE_ESCAPE)
            return column.op("GLOB", is_comparison=True)(like_to_glob(value))
        if op == "ILIKE":
            if self._postgres:
                return column.ilike(escape_like(value), escape=LIKE_ESCAPE)
            folded = getattr(func, ILIKE_FUNCTION)(value, column) == 1
            if not value.isascii():
                return folded
            # Between ASCII characters SQLite's LIKE folds case as Python does: the Python
            # function is called only for values beyond ASCII (more bytes than characters).
            ascii_only = func.length(column) == func.length(cast(column, LargeBinary))
            native = column.like(escape_like(value), escape=LIKE_ESCAPE)
            return or_(and_(ascii_only, native), and_(~ascii_only, folded))
        raise invalid(f"invalid comparison {op!r} on {term.key!r}: use =, !=, LIKE or ILIKE")

    @staticmethod
    def _number(column: Any, term: Comparison) -> ColumnElement[bool]:
        try:
            compare = NUMERIC_OPERATORS[term.op]
            number = int(term.value)
        except (KeyError, TypeError, ValueError):
            raise invalid(f"invalid comparison {term.op!r} on {term.key!r}") from None
        if not _INT32[0] <= number <= _INT32[1]:
            # Out of every version number's range: the answer is the same for all of them.
            return true() if compare(1, number) else false()
        return compare(column, number)

    def _millis(self, column: Any) -> Any:
        """A timestamp cut to whole milliseconds, as the API shows it, in an orderable form."""
        if self._postgres:
            return func.date_trunc("milliseconds", column)
        return func.substr(column, 1, 23)  # 'YYYY-MM-DD HH:MM:SS.ffffff' as SQLite keeps it

    def _name(self, column: Any) -> Any:
        return column.collate("C") if self._postgres else column

    @staticmethod
    def _page(offset: int, limit: int) -> None:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise invalid(f"offset must be a non-negative integer, got {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise invalid(f"limit must be a positive integer, got {limit!r}")

    @staticmethod
    def _order_keys(order: Sequence[tuple[str, bool]], allowed: Sequence[str]) -> None:
        for key, _ in order:
            if key not in allowed:
                raise invalid(f"invalid order key {key!r}: expected one of {', '.join(allowed)}")

    # -- versions

    def _version_condition(self, term: Comparison) -> ColumnElement[bool]:
        if term.tag is not None:
            return exists().where(
                VersionTagRow.version_id == VersionRow.id,
                VersionTagRow.key == term.tag,
                self._text(VersionTagRow.value, term),
            )
        if term.key == "name":
            return self._text(ModelRow.name, term)
        if term.key == "source_path":
            return self._text(VersionRow.source, term)
        if term.key == "run_id":
            return self._text(literal(""), term)  # assay keeps no run ids
        if term.key == "version_number":
            return self._number(VersionRow.version, term)
        raise invalid(f"invalid filter key {term.key!r}: expected one of {', '.join(VERSION_KEYS)}")

    def search_versions(
        self,
        terms: Sequence[Comparison],
        order: Sequence[tuple[str, bool]],
        offset: int,
        limit: int,
    ) -> SearchPage[ModelVersion]:
        """Versions matching every term, sorted by ``order`` ((key, descending) pairs from
        ``VERSION_ORDER_KEYS``), rows ``offset`` to ``offset + limit``."""
        self._page(offset, limit)
        self._order_keys(order, VERSION_ORDER_KEYS)
        conditions = [self._version_condition(t) for t in dict.fromkeys(terms)]
        if offset >= _INT32[1]:
            return SearchPage([], False)
        columns = {
            "name": self._name(ModelRow.name),
            "version_number": VersionRow.version,
            "creation_timestamp": self._millis(VersionRow.created_at),
            "last_updated_timestamp": self._millis(VersionRow.created_at),
        }
        query = (
            select(ModelRow.name, VersionRow)
            .join(ModelRow, ModelRow.id == VersionRow.model_id)
            .where(*_bounded(conditions, VersionRow.id, _versions_where))
            .order_by(*(columns[k].desc() if d else columns[k].asc() for k, d in order))
            .offset(offset)
            .limit(limit + 1)
        )

        def work(session: Session) -> SearchPage[ModelVersion]:
            rows = [(name, row) for name, row in session.execute(query)]
            return SearchPage(self._version_records(session, rows[:limit]), len(rows) > limit)

        return self._read(work)

    # -- registered models

    def _model_condition(self, term: Comparison) -> ColumnElement[bool]:
        if term.tag is not None:
            return exists().where(
                ModelTagRow.model_id == ModelRow.id,
                ModelTagRow.key == term.tag,
                self._text(ModelTagRow.value, term),
            )
        if term.key == "name":
            return self._text(ModelRow.name, term)
        raise invalid(f"invalid filter key {term.key!r}: expected name or tags.<key>")

    def search_models(
        self,
        terms: Sequence[Comparison],
        order: Sequence[tuple[str, bool]],
        offset: int,
        limit: int,
    ) -> SearchPage[RegisteredModel]:
        """Registered models matching every term, sorted by ``order`` ((key, descending) pairs
        from ``MODEL_ORDER_KEYS``), rows ``offset`` to ``offset + limit``."""
        self._page(offset, limit)
        self._order_keys(order, MODEL_ORDER_KEYS)
        conditions = [self._model_condition(t) for t in dict.fromkeys(terms)]
        if offset >= _INT32[1]:
            return SearchPage([], False)
        columns = {
            "name": self._name(ModelRow.name),
            "creation_timestamp": self._millis(ModelRow.created_at),
            "last_updated_timestamp": self._millis(ModelRow.updated_at),
        }
        query = (
            select(ModelRow)
            .where(*_bounded(conditions, ModelRow.id, _models_where))
            .order_by(*(columns[k].desc() if d else columns[k].asc() for k, d in order))
            .offset(offset)
            .limit(limit + 1)
        )

        def work(session: Session) -> SearchPage[RegisteredModel]:
            rows = list(session.scalars(query))
            records = [self._model_record(session, row) for row in rows[:limit]]
            return SearchPage(records, len(rows) > limit)

        return self._read(work)
