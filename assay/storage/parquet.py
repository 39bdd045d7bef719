"""Parquet partitions on any fsspec URL, written atomically.

Layout: ``<base>/<asset>/<dim>=<value>[/<dim>=<value>]/part.parquet`` (hive style), so a whole
asset can be read back as one table with its partition columns, by pyarrow or anything else.
A write goes to a temporary name and is then renamed (local files, memory://) or committed as a
single object PUT (object stores), so readers see the old partition or the new one, never half.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

PART_FILE = "part.parquet"
# Object stores publish an object only when its upload completes: a single PUT is atomic.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


class PartitionNotFoundError(LookupError):
    """The partition was never written (or was deleted)."""


class CorruptPartitionError(ValueError):
    """The stored file exists but is not a readable Parquet table."""


class StorageWriteError(OSError):
    """A partition could not be written (the storage is down or refuses the write)."""


class ParquetStore:
    """Reads and writes partitioned Parquet tables under one fsspec base URL."""

    def __init__(self, base_url: str, storage_options: Mapping[str, object] | None = None):
        self.base_url = base_url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.base_url, **(storage_options or {}))
        self.protocol = (
            self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        )
        self.is_local = self.protocol in ("file", "local")
        if self.is_local:
            self.root = os.path.abspath(self.root)

    # -- paths ---------------------------------------------------------------------------------
    def partition_dir(self, asset: str, partition: Mapping[str, str] | None = None) -> str:
        parts = [self.root, asset]
        for dim, value in (partition or {}).items():
            parts.append(f"{dim}={quote(str(value), safe='@-_.')}")
        return "/".join(parts)

    def path(self, asset: str, partition: Mapping[str, str] | None = None) -> str:
        """Where one partition's file lives (unprotocoled path within ``self.fs``)."""
        return f"{self.partition_dir(asset, partition)}/{PART_FILE}"

    def url(self, asset: str, partition: Mapping[str, str] | None = None) -> str:
        """The partition's location as a URL, for metadata and error messages."""
        path = self.path(asset, partition)
        return path if self.is_local else f"{self.protocol}://{path.lstrip('/')}"

    # -- writes --------------------------------------------------------------------------------
    def write(self, asset: str, partition: Mapping[str, str] | None, table: pa.Table) -> str:
        """Write one partition atomically, replacing any previous version. Returns its URL."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        try:
            self._put_atomic(self.path(asset, partition), buffer.getvalue())
        except Exception as exc:  # s3fs/botocore errors are not all OSErrors
            # The filesystem has already retried (s3fs: connection errors, throttling); say
            # which partition was not written. Nothing was published: the PUT or rename is
            # the commit.
            raise StorageWriteError(
                f"{_label(asset, partition)} could not be written to "
                f"{self.url(asset, partition)}: {type(exc).__name__}: {exc}"
            ) from exc
        return self.url(asset, partition)

    def write_file(self, relative_path: str, data: bytes) -> str:
        """Write any file (a report, say) under the base, atomically. Returns its URL.

        ``relative_path`` stays under the base: ``..``, ``.`` and empty segments, backslashes
        and absolute paths are refused.
        """
        final = self._file_path("write_file", relative_path)
        self._put_atomic(final, data)
        return final if self.is_local else f"{self.protocol}://{final.lstrip('/')}"

    def read_file(self, relative_path: str) -> bytes | None:
        """A file under the base written by :meth:`write_file`, or None if there is none."""
        try:
            return self.fs.cat_file(self._file_path("read_file", relative_path))
        except FileNotFoundError:
            return None

    def delete_file(self, relative_path: str) -> None:
        """Delete one file under the base (same path rule as :meth:`write_file`)."""
        path = self._file_path("delete_file", relative_path)
        if self.fs.exists(path):
            self.fs.rm_file(path)

    def list_files(self, folder: str) -> list[str]:
        """Every file under ``folder`` (a relative path of plain names), as paths relative to
        that folder; only what lies inside it, however the files are named."""
        base = self._file_path("list_files", folder)
        if not self.is_local:
            self.fs.invalidate_cache(base)
        if not self.fs.isdir(base):
            return []
        found = []
        for path in self.fs.find(base):
            path = str(path)
            if not path.startswith(base + "/"):
                continue
            relative = path[len(base) + 1 :]
            if not any(part in ("", ".", "..") for part in relative.split("/")):
                found.append(relative)
        return sorted(found)

    def _file_path(self, what: str, relative_path: str) -> str:
        parts = relative_path.split("/")
        if (
            relative_path.startswith("/")
            or "\\" in relative_path
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise ValueError(
                f"{what}: {relative_path!r} must be a relative path of plain names "
                "under the storage base (no '..', '.', empty segments, backslashes or leading '/')"
            )
        return f"{self.root}/{relative_path}"

    def _put_atomic(self, final: str, data: bytes) -> None:
        directory, name = final.rsplit("/", 1)
        self.fs.makedirs(directory, exist_ok=True)
        if self.protocol in _OBJECT_STORES:
            self.fs.pipe_file(final, data)
            return
        tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
        if self.is_local:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            try:
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, final)
            finally:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)

    def delete(self, asset: str, partition: Mapping[str, str] | None = None) -> None:
        path = self.path(asset, partition)
        if self.fs.exists(path):
            self.fs.rm(path)

    # -- reads ---------------------------------------------------------------------------------
    def exists(self, asset: str, partition: Mapping[str, str] | None = None) -> bool:
        return self.fs.exists(self.path(asset, partition))

    def read(self, asset: str, partition: Mapping[str, str] | None = None) -> pa.Table:
        """Read one partition; a missing or unreadable file raises an error naming it."""
        path = self.path(asset, partition)
        where = self.url(asset, partition)
        label = _label(asset, partition)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise PartitionNotFoundError(
                f"{label} has not been materialized (no file at {where})"
            ) from None
        try:
            return pq.read_table(pa.BufferReader(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptPartitionError(
                f"{label} at {where} is not a readable Parquet file: {exc}"
            ) from None

    def read_bytes(self, asset: str, partition: Mapping[str, str] | None = None) -> bytes | None:
        """One partition's stored file as it is (to digest it, say), or None if there is none."""
        try:
            return self.fs.cat_file(self.path(asset, partition))
        except FileNotFoundError:
            return None

    def partitions(self, asset: str) -> list[dict[str, str]]:
        """Every stored partition of an asset, as its dimension → value mapping."""
        base = f"{self.root}/{asset}"
        if not self.is_local:
            # fsspec shares one filesystem object per URL in a process and caches listings in
            # it; other processes (workers) write here too, so list afresh.
            self.fs.invalidate_cache(base)
        if not self.fs.exists(base):
            return []
        found = []
        for path in sorted(self.fs.find(base)):
            path = str(path)
            if not path.endswith("/" + PART_FILE):
                continue
            relative = path[len(base) :].strip("/").split("/")[:-1]
            partition = {}
            for segment in relative:
                dim, sep, value = segment.partition("=")
                if not sep:
                    break
                partition[dim] = unquote(value)
            else:
                found.append(partition)
        return found

    def read_all(self, asset: str) -> pa.Table | None:
        """Every partition of an asset concatenated, with one column per partition dimension."""
        tables = []
        for partition in self.partitions(asset):
            table = self.read(asset, partition)
            for dim, value in partition.items():
                if dim not in table.column_names:
                    table = table.append_column(
                        dim, pa.array([value] * table.num_rows, pa.string())
                    )
            tables.append(table)
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")


def _label(asset: str, partition: Mapping[str, str] | None) -> str:
    if not partition:
        return f"asset {asset!r}"
    keys = ", ".join(f"{k}={v}" for k, v in partition.items())
    return f"asset {asset!r} partition [{keys}]"


def default_base_url() -> str:
    """``$ASSAY_STORAGE_URL`` or ``.assay/storage`` under the current directory."""
    return os.environ.get("ASSAY_STORAGE_URL") or str(Path(".assay") / "storage")
