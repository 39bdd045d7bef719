"""Stream rows out of JSONL, CSV, Parquet and JSON files at any fsspec URL.

Rows come out one at a time with their 1-based row number, so a loader builds instances as it
reads and never holds the raw file and the parsed rows at once. Every problem is a
``DataFileError`` naming the file and row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

import fsspec

FORMATS = ("jsonl", "csv", "parquet", "json")
# Python's csv module refuses fields over 131,072 characters by default; documents and
# few-shot contexts can be longer. The limit is process-wide, so it is only ever raised.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))


class DataFileError(ValueError):
    """A data file is unreadable or a row in it is malformed."""


def detect_format(path: str, fmt: str | None = None) -> str:
    """The format named, or the one the file name implies (``.jsonl``, ``.csv.gz``, …)."""
    if fmt:
        if fmt not in FORMATS:
            raise DataFileError(f"{path}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        return fmt
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(suffix)
    for candidate, suffixes in (
        ("jsonl", (".jsonl", ".ndjson")),
        ("csv", (".csv",)),
        ("parquet", (".parquet", ".pq")),
        ("json", (".json",)),
    ):
        if name.endswith(suffixes):
            return candidate
    raise DataFileError(f"{path}: cannot tell the format from the name; give format=")


def iter_rows(
    path: str,
    fmt: str | None = None,
    storage_options: dict[str, Any] | None = None,
    csv_fieldnames: Sequence[str] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` for every row of the file (JSON: the top-level array).

    ``csv_fieldnames`` names the columns of a CSV file without a header row (MMLU's files);
    a row with another number of cells is then an error naming the row.
    """
    kind = detect_format(path, fmt)
    try:
        opened = fsspec.open(path, "rb", compression="infer", **(storage_options or {}))
        with opened as handle:
            if kind == "csv":
                yield from _csv(path, handle, csv_fieldnames)
            else:
                yield from _READERS[kind](path, handle)
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except (DataFileError, GeneratorExit):
        raise
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc}") from None


def _jsonl(path: str, handle: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(handle, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFileError(f"{path}: row {number}: not valid UTF-8 ({exc.reason})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}: row {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataFileError(f"{path}: row {number}: expected a JSON object")
        yield number, row


def _csv(
    path: str, handle: Any, fieldnames: Sequence[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    # With fieldnames the first line is a row (line 1), else it is the header (line 0).
    lines = _decoded_lines(path, handle, first=1 if fieldnames else 0)
    reader = csv.DictReader(lines, fieldnames=list(fieldnames) if fieldnames else None)
    number = 0
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise DataFileError(
                    f"{path}: row {number}: a field is over {csv.field_size_limit():,} characters"
                ) from None
            raise DataFileError(f"{path}: row {number}: not valid CSV ({exc})") from None
        if None in row:  # more cells than header columns
            raise DataFileError(f"{path}: row {number}: more values than header columns")
        if fieldnames and any(value is None for value in row.values()):
            raise DataFileError(
                f"{path}: row {number}: {sum(v is not None for v in row.values())} values, "
                f"expected {len(fieldnames)} ({', '.join(fieldnames)})"
            )
        yield number, dict(row)


def _decoded_lines(path: str, handle: Any, first: int = 0) -> Iterator[str]:
    # Decoded line by line so an error can name the row (a header is line 0). A quoted
    # cell spanning lines makes this the physical line, which is still where to look.
    for number, raw in enumerate(handle, start=first):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFileError(f"{path}: row {number}: not valid UTF-8 ({exc.reason})") from None


def _parquet(path: str, handle: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataFileError(f"{path}: not a readable Parquet file ({exc})") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _json(path: str, handle: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        data = json.load(io.TextIOWrapper(handle, encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, dict):
        # A JSON object is one row (nested sources such as BOLD's prompt files).
        yield 1, data
        return
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON array of objects or one object")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataFileError(f"{path}: row {number}: expected a JSON object")
        yield number, row


_READERS = {"jsonl": _jsonl, "parquet": _parquet, "json": _json}
