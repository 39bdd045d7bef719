"""One Parquet file holding many stored copies of a table: the format of a compacted group.

Retention (:mod:`assay.storage.retention`) folds every file an archived model version left in
one table (each partition's ``part.parquet`` and its history copies) into one file,
``<base>/_compacted/<asset>/<dim>=<value>.parquet``. Each original file becomes one row group
of it; the rows keep their order and carry a column, ``_assay_copy``, naming the file they
came from (its path under the asset: ``model_version=m@v1/scenario=quiz/<written_at>-<id>``
for a history copy, ``.../part.parquet`` for a latest copy). The footer's key-value metadata
holds the manifest: per copy its partition, write time (a history copy's stamp, a latest
copy's modification time), row count, row group and original Arrow schema, so a copy reads
back as the table that was written (same columns, order and types) and as-of reads still
choose it by its original time. The columns are the union of the copies' (types promoted as
``pa.concat_tables`` does); a copy's missing columns are nulls in the file and dropped on read.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

COPY_COLUMN = "_assay_copy"
MANIFEST_KEY = b"assay.compacted"
FORMAT = 1
PART_COPY = "part"
HISTORY_COPY = "history"


class CompactionError(ValueError):
    """The files of a group cannot be folded into one (their columns' types conflict)."""


@dataclass(frozen=True)
class Copy:
    """One original file inside a compacted file."""

    copy: str  # its path under the asset (history copies: under the asset's history folder)
    kind: str  # PART_COPY (a partition's latest file) or HISTORY_COPY
    partition: tuple[tuple[str, str], ...]
    written_at: datetime | None  # None: a latest file whose filesystem gave no time
    current: bool  # what an ordinary read of the partition returns
    rows: int
    row_group: int | None  # None when it has no rows
    schema: pa.Schema

    @property
    def name(self) -> str:
        return self.copy.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Manifest:
    asset: str
    group: tuple[tuple[str, str], ...]
    copies: tuple[Copy, ...]

    def current(self) -> dict[tuple[tuple[str, str], ...], Copy]:
        """partition → the copy an ordinary read returns."""
        return {c.partition: c for c in self.copies if c.current}


@dataclass(frozen=True)
class Source:
    """A copy to write: its description (row group not yet known) and how to read it."""

    copy: str
    kind: str
    partition: tuple[tuple[str, str], ...]
    written_at: datetime | None
    current: bool
    schema: pa.Schema
    rows: int
    read: Callable[[], pa.Table]

    @property
    def name(self) -> str:
        return self.copy.rsplit("/", 1)[-1]


def encode(asset: str, group: dict[str, str], sources: Iterable[Source]) -> bytes:
    """The compacted file of ``sources``, in their order (see the module docstring)."""
    sources = list(sources)
    try:
        columns = pa.unify_schemas(
            [s.schema.remove_metadata() for s in sources], promote_options="default"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        names = ", ".join(s.copy for s in sources[:5])
        raise CompactionError(
            f"asset {asset!r} group {group}: the stored files' columns do not agree, so they "
            f"cannot share one file ({exc}); files: {names}"
        ) from None
    if COPY_COLUMN in columns.names:
        raise CompactionError(f"asset {asset!r}: a stored table has a column {COPY_COLUMN!r}")
    file_schema = columns.append(pa.field(COPY_COLUMN, pa.string()))
    schemas: dict[bytes, int] = {}
    entries = []
    row_group = 0
    for s in sources:
        serialized = s.schema.serialize().to_pybytes()
        entries.append(
            {
                "copy": s.copy,
                "kind": s.kind,
                "partition": [list(item) for item in s.partition],
                "written_at": None if s.written_at is None else s.written_at.isoformat(),
                "current": s.current,
                "rows": s.rows,
                "row_group": row_group if s.rows else None,
                "schema": schemas.setdefault(serialized, len(schemas)),
            }
        )
        row_group += 1 if s.rows else 0
    manifest = {
        "format": FORMAT,
        "asset": asset,
        "group": [list(item) for item in group.items()],
        "schemas": [base64.b64encode(b).decode() for b in schemas],
        "copies": entries,
    }
    file_schema = file_schema.with_metadata({MANIFEST_KEY: json.dumps(manifest).encode()})
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, file_schema, compression="zstd") as writer:
        for s in sources:
            if not s.rows:
                continue
            table = s.read()
            if table.num_rows != s.rows:
                raise CompactionError(
                    f"asset {asset!r}: {s.copy} has {table.num_rows} rows, its footer said {s.rows}"
                )
            arrays = [
                table.column(f.name).cast(f.type)
                if f.name in table.column_names
                else pa.nulls(table.num_rows, f.type)
                for f in columns
            ]
            arrays.append(pa.array([s.copy] * table.num_rows, pa.string()))
            writer.write_table(
                pa.Table.from_arrays(arrays, schema=file_schema), row_group_size=table.num_rows
            )
    return buffer.getvalue()


def decode_manifest(schema: pa.Schema, where: str) -> Manifest:
    """The manifest in a compacted file's schema; ``where`` names the file in errors."""
    raw = (schema.metadata or {}).get(MANIFEST_KEY)
    if raw is None:
        raise ValueError(f"{where} is not a compacted file (no {MANIFEST_KEY.decode()} metadata)")
    try:
        manifest = json.loads(raw)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
        schemas = [
            pa.ipc.read_schema(pa.py_buffer(base64.b64decode(s))) for s in manifest["schemas"]
        ]
        copies = tuple(
            Copy(
                copy=c["copy"],
                kind=c["kind"],
                partition=tuple((d, v) for d, v in c["partition"]),
                written_at=None
                if c["written_at"] is None
                else datetime.fromisoformat(c["written_at"]),
                current=bool(c["current"]),
                rows=int(c["rows"]),
                row_group=c["row_group"],
                schema=schemas[c["schema"]],
            )
            for c in manifest["copies"]
        )
        return Manifest(manifest["asset"], tuple((d, v) for d, v in manifest["group"]), copies)
    except (KeyError, TypeError, ValueError, IndexError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{where}: unreadable compaction manifest: {exc}") from None


def read_copy(file: pq.ParquetFile, copy: Copy) -> pa.Table:
    """One copy as it was written: its rows, columns, column order and types."""
    if copy.row_group is None:
        return copy.schema.empty_table()
    stored = file.read_row_group(copy.row_group)
    arrays = [
        pa.nulls(stored.num_rows, f.type)
        if pa.types.is_null(f.type)
        else stored.column(f.name).cast(f.type)
        for f in copy.schema
    ]
    return pa.Table.from_arrays(arrays, schema=copy.schema)


def partitions_of(manifest: Manifest) -> Iterator[tuple[tuple[str, str], ...]]:
    """The partitions an ordinary read finds in the file (those with a current copy)."""
    return iter(manifest.current())
