"""Stored tables as they stood at an instant, queried with DuckDB instead of loaded.

:meth:`ParquetStore.read_all_as_of` reads every partition of an asset into one table. The
reader here answers narrower questions over the same files: the store chooses each
partition's file as of the instant (:meth:`ParquetStore.files_as_of`, the same rule), the
partitions asked for are picked from the listing (a scenario, the registered versions), and
DuckDB reads only the columns and rows a query names from those files (projection and
predicates pushed into the Parquet scan). A board then holds a few scenarios' instance
scores at a time rather than the whole store's.

The partition dimensions of a row come from its file's path, as in ``read_all_as_of``: the
writers never store them inside the table. Rows keep ``read_all_as_of``'s order (partitions
in order, then each file's rows in order), so what is computed from them is the same to
the last bit. A local store is read directly; any other fsspec filesystem (``memory://``,
``s3://``) is handed to DuckDB with ``register_filesystem``. A compacted copy (one model
version's files folded into one, :mod:`assay.storage.compacted`) is read from its compacted
file, only its rows: the same rows in the same order as from the original file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from assay.storage.compacted import COPY_COLUMN
from assay.storage.parquet import CorruptPartitionError, ParquetStore

Pick = Callable[[dict[str, str]], bool]

THREADS_ENV = "ASSAY_DUCKDB_THREADS"
MEMORY_LIMIT_ENV = "ASSAY_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "1GB"
# Files read by one query at most (see TablesAsOf.read).
FILES_PER_QUERY = 2048


def duckdb_settings() -> tuple[int, str]:
    """DuckDB's threads and memory limit for a reader: ``$ASSAY_DUCKDB_THREADS`` (default:
    the CPU count) and ``$ASSAY_DUCKDB_MEMORY_LIMIT`` (default 1GB; DuckDB's own default is
    80% of the machine's memory, whatever else runs on it)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {raw!r}")
    threads = int(raw) if raw else max(1, os.cpu_count() or 1)
    limit = os.environ.get(MEMORY_LIMIT_ENV, "").strip() or DEFAULT_MEMORY_LIMIT
    return threads, limit


class TablesAsOf:
    """The history tables of ``store`` as they stood just before ``as_of`` (see the module
    docstring). Use as a context manager, or call :meth:`close`. :meth:`read` may be called
    from several threads at once (each query runs on its own cursor).

    ``threads`` and ``memory_limit`` (e.g. ``"1GB"``) are DuckDB's; by default
    :func:`duckdb_settings`. ``metadata_cache`` keeps the files' footers between queries."""

    def __init__(
        self,
        store: ParquetStore,
        as_of: datetime,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        metadata_cache: bool = True,
    ):
        self.store = store
        self.as_of = as_of
        self._listed: dict[str, list[tuple[dict[str, str], str]]] = {}
        self._listing = threading.Lock()
        default_threads, default_limit = duckdb_settings()
        config = {
            "preserve_insertion_order": True,
            "threads": default_threads if threads is None else threads,
            "memory_limit": default_limit if memory_limit is None else memory_limit,
        }
        try:
            self._con = duckdb.connect(config=config)
        except duckdb.Error as exc:
            raise ValueError(
                f"DuckDB settings threads={config['threads']}, memory_limit="
                f"{config['memory_limit']!r} (${THREADS_ENV}, ${MEMORY_LIMIT_ENV}): {exc}"
            ) from None
        # Footers read by one query are not parsed again by the next that reads the file (all
        # cursors); a reader that reads each file once (a board) goes without: the cache
        # only grows with the files.
        if metadata_cache:
            self._con.execute("SET GLOBAL parquet_metadata_cache = true")
        if not store.is_local:
            self._con.register_filesystem(store.fs)

    def __enter__(self) -> TablesAsOf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def partitions(self, asset: str) -> list[dict[str, str]]:
        """The partitions of ``asset`` that had a file by then, in order."""
        return [partition for partition, _ in self._files(asset)]

    def read(
        self,
        asset: str,
        pick: Pick | None = None,
        *,
        columns: Sequence[str] | None = None,
        where: str = "",
        params: Sequence[object] = (),
    ) -> pa.Table | None:
        """The rows of the partitions of ``asset`` that ``pick`` accepts (all when None),
        only ``columns`` of the stored tables (all when None) plus one column per partition
        dimension, and only the rows matching the SQL condition ``where`` (``?`` marks
        ``params``). None when no partition is picked, like ``read_all_as_of`` with none."""
        chosen = [(p, path) for p, path in self._files(asset) if pick is None or pick(p)]
        return self.read_files(asset, chosen, columns=columns, where=where, params=params)

    def read_files(
        self,
        asset: str,
        chosen: Sequence[tuple[dict[str, str], str]],
        *,
        columns: Sequence[str] | None = None,
        where: str = "",
        params: Sequence[object] = (),
    ) -> pa.Table | None:
        """:meth:`read` of partitions already picked from :meth:`files` (partition, file), in
        the listing's order: for a reader that finds them by key instead of testing every
        partition of the listing."""
        chosen = list(chosen)
        if not chosen:
            return None
        if len(chosen) <= FILES_PER_QUERY:
            return self._query(asset, chosen, columns, where, params)
        # DuckDB holds tens of kB a file while a query runs (a board's metric tables of
        # 10,000 partitions: 400 MB): many files are read a part at a time. The parts come
        # in partition order, so their rows are the one query's, and where their columns
        # differ (files written by older code) the one query unifies them instead.
        parts = [
            self._query(asset, chosen[start : start + FILES_PER_QUERY], columns, where, params)
            for start in range(0, len(chosen), FILES_PER_QUERY)
        ]
        if any(not part.schema.equals(parts[0].schema) for part in parts[1:]):
            del parts
            return self._query(asset, chosen, columns, where, params)
        return pa.concat_tables(parts)

    def _query(
        self,
        asset: str,
        chosen: list[tuple[dict[str, str], str]],
        columns: Sequence[str] | None,
        where: str,
        params: Sequence[object],
    ) -> pa.Table:
        """:meth:`read` of the partitions ``chosen`` (partition, file), in one query."""
        dims = list(dict.fromkeys(dim for partition, _ in chosen for dim in partition))
        # A compacted copy is the rows of one file inside another, told apart by its column
        # COPY_COLUMN (assay.storage.compacted): it is joined on file and copy.
        entries = []
        for _, path in chosen:
            reference = self.store.compacted_reference(path)
            if reference is None:
                entries.append((self._url(path), ""))
            else:
                entries.append((self._url(reference[0]), reference[1]))
        urls = list(dict.fromkeys(url for url, _ in entries))
        packed = any(copy for _, copy in entries)
        files = pa.table(
            {
                "_file": [url for url, _ in entries],
                "_copy": [copy for _, copy in entries],
                "_order": list(range(len(chosen))),
                **{dim: [p.get(dim) for p, _ in chosen] for dim in dims},
            },
            schema=pa.schema(
                [("_file", pa.string()), ("_copy", pa.string()), ("_order", pa.int64())]
                + [(dim, pa.string()) for dim in dims]
            ),
        )
        hidden = "filename, file_row_number" + (f", {COPY_COLUMN}" if packed else "")
        stored = (
            f"t.* EXCLUDE ({hidden})"
            if columns is None
            else ", ".join(f"t.{_quoted(c)}" for c in columns)
        )
        join = "t.filename = p._file" + (
            f" AND coalesce(t.{COPY_COLUMN}, '') = p._copy" if packed else ""
        )
        conditions = []
        if packed:
            # Only the chosen copies' rows (a compacted file holds every scenario's), named by
            # the registered table rather than spelled out: a literal list of thousands of
            # copies cost DuckDB seconds a query, and a board's query names every copy.
            conditions.append(
                f"(t.{COPY_COLUMN} IS NULL OR t.{COPY_COLUMN} IN (SELECT _copy FROM files))"
            )
        conditions += [f"({where})"] if where else []
        query = (
            f"SELECT {stored}{''.join(f', p.{_quoted(d)}' for d in dims)}, "
            # A row's file only where it is not one asked for (the check below): a file
            # name per row would double a board's read.
            "p._order AS _order, CASE WHEN p._order IS NULL THEN t.filename END AS _file "
            "FROM read_parquet(?, union_by_name = true, filename = true, "
            "file_row_number = true, hive_partitioning = false) AS t "
            f"LEFT JOIN files AS p ON {join}"
            + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
            + " ORDER BY p._order, t.file_row_number"
        )
        con = self._con.cursor()
        con.register("files", files)
        try:
            rows = con.sql(query, params=[urls, *params]).to_arrow_table()
        except duckdb.Error as exc:
            raise CorruptPartitionError(
                f"asset {asset!r} as of {self.as_of:%Y-%m-%d %H:%M} UTC: the stored files of "
                f"{len(chosen)} partition(s) under {self.store.base_url} could not be queried "
                f"(columns {list(columns) if columns is not None else 'all'}): {exc}"
            ) from None
        finally:
            con.close()
        lost = rows.filter(pc.is_null(rows["_order"]))
        if lost.num_rows:  # a filesystem that names files otherwise than _url
            raise RuntimeError(
                f"asset {asset!r}: DuckDB read {lost['_file'][0]}, which is not one of the "
                f"files asked for (the first: {urls[0]})"
            )
        return rows.drop_columns(["_order", "_file"])

    def files(self, asset: str) -> list[tuple[dict[str, str], str]]:
        """Each partition of ``asset`` that had a file by then, with that file, in order
        (listed once per reader)."""
        return self._files(asset)

    def _files(self, asset: str) -> list[tuple[dict[str, str], str]]:
        with self._listing:
            if asset not in self._listed:
                self._listed[asset] = self.store.files_as_of(asset, self.as_of)
            return self._listed[asset]

    def _url(self, path: str) -> str:
        # As DuckDB names the file in its ``filename`` column: fsspec's full URL.
        return path if self.store.is_local else self.store.fs.unstrip_protocol(path)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
