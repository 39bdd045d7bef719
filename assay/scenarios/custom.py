"""Custom scenarios from a user's JSONL, CSV or Parquet file, through a column mapping.

In a suite file::

    my-quiz:
      scenario: custom_file
      args: {path: s3://bucket/quiz.jsonl}
      columns: {input: question, choices: options, answer_index: label, groups: [dialect]}

A row becomes an ``Instance``: ``choices`` (a list; in CSV a JSON array or ``|``-separated
text) are the references and ``answer_index`` or ``answer_text`` marks the correct one; without
``choices``, ``answer_text`` (a string or a list of strings) gives the gold references of a
generation task. Rows are streamed; any malformed row fails the whole load with an error
naming the file, row and field, so a partial scenario is never returned.

Any scorer scores such a file's generated answers, so a team's own JSONL becomes a scored
scenario without code (``assay.core.scorers``)::

    algebra:
      scenario: custom_file
      args: {path: data/algebra.jsonl}
      columns: {id: id, input: problem, answer_text: answer}   # answers like \frac{1}{2}
      adapter: {method: generation, max_tokens: 256}
      scorer: math_equivalence          # or code_execution (the answer column holds the
                                        # tests), or an installed plugin's scorer
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from assay.core.records import Instance, Reference
from assay.scenarios.base import Scenario, ScenarioData, register_scenario
from assay.scenarios.download import fetch
from assay.scenarios.files import DataFileError, iter_rows


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which column of the file holds each part of an instance."""

    input: str = "input"
    choices: str | None = None
    answer_index: str | None = None
    answer_text: str | None = None
    id: str | None = None  # default: the row number
    split: str | None = None  # default: every row is in ``default_split``
    sub_split: str | None = None
    groups: tuple[str, ...] = ()
    default_split: str = "test"
    choice_separator: str = "|"  # CSV cells holding choices as plain text

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "columns") -> ColumnMapping:
        """Validate a mapping from a suite file; errors name ``where`` and the key."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of field → column name")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(data)
        groups = values.get("groups", ())
        if isinstance(groups, str):
            groups = (groups,)
        if not all(isinstance(g, str) for g in groups):
            raise ValueError(f"{where}.groups: expected a list of column names")
        values["groups"] = tuple(groups)
        for key, value in values.items():
            if key != "groups" and value is not None and not isinstance(value, str):
                raise ValueError(f"{where}.{key}: expected a column name (a string)")
        mapping = cls(**values)
        if mapping.answer_index and not mapping.choices:
            raise ValueError(f"{where}: answer_index needs a choices column")
        if mapping.answer_index and mapping.answer_text:
            raise ValueError(f"{where}: give answer_index or answer_text, not both")
        return mapping


class _RowError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


def _column(row: dict[str, Any], name: str) -> Any:
    if name not in row or row[name] is None:
        raise _RowError(name, "missing")
    return row[name]


def _text(row: dict[str, Any], name: str) -> str:
    value = _column(row, name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _RowError(name, f"expected text, got {type(value).__name__}")
    return str(value)


def _choices(row: dict[str, Any], mapping: ColumnMapping) -> list[str]:
    name = mapping.choices
    assert name is not None
    value = _column(row, name)
    if isinstance(value, str):  # CSV: a JSON array or separated text
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                raise _RowError(name, "not a valid JSON array") from None
        else:
            value = (
                [c.strip() for c in stripped.split(mapping.choice_separator)] if stripped else []
            )
    if not isinstance(value, (list, tuple)):
        raise _RowError(name, f"expected a list of choices, got {type(value).__name__}")
    if not value:
        raise _RowError(name, "no choices")
    if not all(isinstance(c, str) and c for c in value):
        raise _RowError(name, "every choice must be non-empty text")
    return list(value)


def _answer_index(row: dict[str, Any], name: str, n_choices: int) -> int:
    value = _column(row, name)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _RowError(name, f"expected an integer index, got {type(value).__name__}")
    if not 0 <= value < n_choices:
        raise _RowError(name, f"index {value} out of range for {n_choices} choices")
    return value


def _answer_texts(row: dict[str, Any], name: str) -> list[str]:
    value = _column(row, name)
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise _RowError(name, "expected non-empty text or a list of non-empty texts")
    return list(values)


def row_to_instance(row: dict[str, Any], number: int, mapping: ColumnMapping) -> Instance:
    """One row as an instance; a problem raises ``_RowError`` naming the column."""
    text = _text(row, mapping.input)
    if mapping.choices:
        choices = _choices(row, mapping)
        if mapping.answer_index:
            correct = {_answer_index(row, mapping.answer_index, len(choices))}
        elif mapping.answer_text:
            golds = _answer_texts(row, mapping.answer_text)
            correct = {i for i, c in enumerate(choices) if c in golds}
            if not correct:
                raise _RowError(mapping.answer_text, "answer is not one of the choices")
        else:
            correct = set()
        references = tuple(Reference(c, i in correct) for i, c in enumerate(choices))
    elif mapping.answer_text:
        references = tuple(Reference(t, True) for t in _answer_texts(row, mapping.answer_text))
    else:
        references = ()
    return Instance(
        id=_text(row, mapping.id) if mapping.id else f"row-{number:07d}",
        input=text,
        references=references,
        split=_text(row, mapping.split) if mapping.split else mapping.default_split,
        sub_split=_text(row, mapping.sub_split) if mapping.sub_split else "",
        groups={g: _text(row, g) for g in mapping.groups},
    )


def iter_instances(
    path: str,
    mapping: ColumnMapping,
    fmt: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[Instance]:
    """Stream instances from a file; a bad row raises ``DataFileError`` (file, row, field)."""
    for number, row in iter_rows(path, fmt, storage_options):
        try:
            yield row_to_instance(row, number, mapping)
        except _RowError as exc:
            raise DataFileError(f"{path}: row {number}: field {exc.field!r}: {exc}") from None


@register_scenario("custom_file")
class CustomFileScenario(Scenario):
    """Instances from any JSONL/CSV/Parquet file at an fsspec URL (see the module doc)."""

    def __init__(
        self,
        path: str,
        columns: dict[str, Any] | ColumnMapping | None = None,
        format: str | None = None,
        sha256: str | None = None,
    ) -> None:
        self.path, self.format, self.sha256 = path, format, sha256
        self.mapping = (
            columns
            if isinstance(columns, ColumnMapping)
            else ColumnMapping.from_dict(dict(columns or {}), f"{path}: columns")
        )

    def load(self) -> ScenarioData:
        source = fetch(self.path, self.sha256)
        try:
            instances = list(iter_instances(source.path, self.mapping, self.format))
        except DataFileError as exc:
            # Name the file as the user wrote it, not its download cache path.
            raise DataFileError(str(exc).replace(source.path, self.path)) from None
        seen: set[str] = set()
        for instance in instances:
            if instance.id in seen:
                raise DataFileError(f"{self.path}: duplicate id {instance.id!r}")
            seen.add(instance.id)
        return ScenarioData(instances, revision=f"sha256:{source.sha256}")
