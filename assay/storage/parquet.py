"""Parquet partitions on any fsspec URL, written atomically.

Layout: ``<base>/<asset>/<dim>=<value>[/<dim>=<value>]/part.parquet`` (hive style), so a whole
asset can be read back as one table with its partition columns, by pyarrow or anything else.
A write goes to a temporary name and is then renamed (local files, memory://) or committed as a
single object PUT (object stores), so readers see the old partition or the new one, never half.

History. The tables in ``history_assets`` (metric tables and instance scores by default) are
also kept as they were written: each write first stores an immutable copy under
``<base>/_history/<asset>/<dim>=<value>/.../<written_at>-<id>.parquet``, stamped with the
writer's UTC clock, then replaces ``part.parquet`` (the latest copy, for ordinary reads).
:meth:`ParquetStore.read_all_as_of` reads, for each partition, the latest copy written before
a given instant, so a table "as it stood at the end of day D" can be rebuilt at any later time.
A partition written before history was kept has no copies: its ``part.parquet`` counts from
its file's modification time when the filesystem reports one, and from the beginning otherwise.

Compaction. :meth:`ParquetStore.compact` folds every file of one group of partitions (one
model version's, say) into one file under ``<base>/_compacted/<asset>/``
(:mod:`assay.storage.compacted`), keeping each copy's rows, schema and write time, then removes
the originals. Every reader here finds a compacted partition as before: ``read``, ``exists``,
``partitions``, ``history``, ``files_as_of`` and ``read_all_as_of`` (a compacted copy's path
is ``<compacted file>#<copy>``, which ``assay.storage.query`` reads too). Where an original
file and its compacted copy both exist (a compaction stopped before removing the originals,
or the partition was written again since), the original is read and the copy ignored, so
nothing is counted twice. ``delete`` removes a partition from its compacted file as well.
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from copy import copy as shallow_copy
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from assay.storage import compacted
from assay.storage.compacted import Copy, Manifest, Source
from assay.storage.contract import HISTORY_ASSETS

T = TypeVar("T")
R = TypeVar("R")

PART_FILE = "part.parquet"
HISTORY_DIR = "_history"
COMPACTED_DIR = "_compacted"
# A history file's name starts with its write time; this format sorts as it reads.
_STAMP = "%Y%m%dT%H%M%S.%fZ"
# How the writer spells _STAMP (``strftime``), read without ``strptime`` (a tenth of its time:
# a listing parses one per history copy).
_WRITTEN_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{6})Z")
# Object stores publish an object only when its upload completes: a single PUT is atomic.
# One upload to an object store: this long, plus a second per MiB (see ParquetStore).
PUT_TIMEOUT_S = 60.0
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


class PartitionNotFoundError(LookupError):
    """The partition was never written (or was deleted)."""


class CorruptPartitionError(ValueError):
    """The stored file exists but is not a readable Parquet table."""


class StorageWriteError(OSError):
    """A partition could not be written (the storage is down or refuses the write)."""


def utc_now() -> datetime:
    """The clock that stamps history copies (the writer's UTC time)."""
    return datetime.now(UTC)


def _written_at(stamp: str) -> datetime:
    """When a history copy named ``<stamp>-<id>.parquet`` was written (UTC); ValueError if
    ``stamp`` does not read as ``_STAMP``."""
    match = _WRITTEN_STAMP.fullmatch(stamp)
    if match is None:  # not as the writer spells it: as strptime reads it, or not at all
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    return datetime(*map(int, match.groups()), tzinfo=UTC)


class ParquetStore:
    """Reads and writes partitioned Parquet tables under one fsspec base URL.

    ``history_assets`` keep every write (see the module docstring); ``clock`` stamps them.
    ``put_timeout_s``: how long one upload to an object store may take, plus a second per MiB
    it carries (a store that accepts the connection and never answers would otherwise hold a
    write for ever: the client's read timeout does not bound an upload).
    """

    def __init__(
        self,
        base_url: str,
        storage_options: Mapping[str, object] | None = None,
        *,
        history_assets: Collection[str] = HISTORY_ASSETS,
        clock: Callable[[], datetime] | None = None,
        put_timeout_s: float = PUT_TIMEOUT_S,
    ):
        self.history_assets = frozenset(history_assets)
        self._clock = clock
        self.put_timeout_s = put_timeout_s
        self.base_url = base_url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.base_url, **(storage_options or {}))
        self.protocol = (
            self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        )
        self.is_local = self.protocol in ("file", "local")
        if self.is_local:
            self.root = os.path.abspath(self.root)
        self._manifests: dict[str, tuple[tuple[object, str], Manifest]] = {}
        # Local folder → every file under it with its stamp, taken as listed (see
        # ``listed``), and the same stamps by file.
        self._listed_files: dict[str, Mapping[str, str]] = {}
        self._listed_stamps: dict[str, str] = {}

    def listed(self, files: Mapping[str, Mapping[str, str]]) -> ParquetStore:
        """A view of this local store that takes the files under each folder of ``files``
        (a folder → every file under it, as a walk of it names them, with its
        :meth:`file_stamp` as listed) from there instead of walking the folder again and
        reading each file's size and time: for a reader that has just listed the store (the
        explorer's site-wide listing) and reads it as it was then. The view writes as the
        store does; its listing does not follow the writes."""
        if not self.is_local:
            raise ValueError(f"{self.base_url}: only a local store is read from a listing")
        view = shallow_copy(self)
        view._listed_files = {folder.rstrip("/"): stamps for folder, stamps in files.items()}
        view._listed_stamps = {
            path: stamp for stamps in files.values() for path, stamp in stamps.items()
        }
        return view

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
    def history_dir(self, asset: str, partition: Mapping[str, str] | None = None) -> str:
        """Where the history copies of one partition live."""
        return self.partition_dir(f"{HISTORY_DIR}/{asset}", partition)

    def _now(self) -> datetime:
        now = (self._clock or utc_now)()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    def write(self, asset: str, partition: Mapping[str, str] | None, table: pa.Table) -> str:
        """Write one partition atomically, replacing any previous version. Returns its URL.

        For a table with history the immutable copy is stored first: a write that fails
        halfway leaves a copy that no ``part.parquet`` shows yet, never the reverse."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        try:
            if asset in self.history_assets:
                name = f"{self._now().strftime(_STAMP)}-{uuid.uuid4().hex[:8]}.parquet"
                self._put_atomic(f"{self.history_dir(asset, partition)}/{name}", buffer.getvalue())
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

    def write_many(
        self, asset: str, tables: Sequence[tuple[Mapping[str, str] | None, pa.Table]]
    ) -> list[str]:
        """:meth:`write` of several partitions, a few at a time (an object store's requests
        overlap); returns their URLs in order. Every write is tried; if any failed, the
        first failure (in order) is raised once the others are done, and the partitions
        written stay written, as with one :meth:`write` after another."""
        return _each(lambda item: self.write(asset, item[0], item[1]), tables)

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
        if self.protocol in _OBJECT_STORES:
            # One PUT. No folders to make: s3fs's makedirs would probe the bucket with a
            # request of its own before every write (and create a missing bucket).
            limit = self.put_timeout_s + len(data) / 2**20
            try:
                self.fs.pipe_file(final, data, timeout=limit)
            except fsspec.exceptions.FSTimeoutError:
                raise TimeoutError(
                    f"no answer from the object store within {limit:.0f} s"
                ) from None
            return
        directory, name = final.rsplit("/", 1)
        self.fs.makedirs(directory, exist_ok=True)
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
        """Remove a partition's latest table, so that ordinary reads no longer find it
        (history copies stay). A partition held in a compacted file is removed from it too:
        the file is written again without its latest copy, or with that copy no longer
        current when it is also a history copy."""
        path = self.path(asset, partition)
        if self.fs.exists(path):
            self.fs.rm(path)
        found = self._current_copy(asset, partition)
        if found is not None:
            self._uncurrent(*found)

    def _uncurrent(self, path: str, gone: Copy) -> None:
        """Write the compacted file at ``path`` again without ``gone`` as a current copy."""
        manifest = self._manifest(path)
        assert manifest is not None  # _current_copy found it
        old = pq.ParquetFile(io.BytesIO(self.fs.cat_file(path)))
        sources = []
        for c in manifest.copies:
            if c.copy == gone.copy and c.kind == compacted.PART_COPY:
                continue
            source = _source(c, lambda c=c: compacted.read_copy(old, c))
            sources.append(replace(source, current=False) if c.copy == gone.copy else source)
        if sources:
            self._put_atomic(path, compacted.encode(manifest.asset, dict(manifest.group), sources))
        else:
            self.fs.rm_file(path)
        self._manifests.pop(path, None)

    # -- reads ---------------------------------------------------------------------------------
    def exists(self, asset: str, partition: Mapping[str, str] | None = None) -> bool:
        return self.fs.exists(self.path(asset, partition)) or (
            self._current_copy(asset, partition) is not None
        )

    def read(
        self,
        asset: str,
        partition: Mapping[str, str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Read one partition (only ``columns`` when given); a missing or unreadable file
        raises an error naming it."""
        path = self.path(asset, partition)
        where = self.url(asset, partition)
        label = _label(asset, partition)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            found = self._current_copy(asset, partition)
            if found is None:
                raise PartitionNotFoundError(
                    f"{label} has not been materialized (no file at {where})"
                ) from None
            table = self._read_copy(*found, label)
            try:
                return table if columns is None else table.select(list(columns))
            except KeyError as exc:
                raise CorruptPartitionError(
                    f"{label} (compacted in {found[0]}) has no column {exc}"
                ) from None
        try:
            return pq.read_table(pa.BufferReader(data), columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptPartitionError(
                f"{label} at {where} is not a readable Parquet file: {exc}"
            ) from None

    def read_many(
        self, asset: str, partitions: Sequence[Mapping[str, str] | None]
    ) -> list[pa.Table]:
        """:meth:`read` of several partitions, a few at a time; the tables in order. A missing
        or unreadable partition raises :meth:`read`'s error (the first in order)."""
        return _each(lambda partition: self.read(asset, partition), partitions)

    def read_bytes(self, asset: str, partition: Mapping[str, str] | None = None) -> bytes | None:
        """One partition's stored file as it is (to digest it, say), or None if there is none.
        A compacted partition's table is written out again (same table, not the same bytes as
        its original file)."""
        try:
            return self.fs.cat_file(self.path(asset, partition))
        except FileNotFoundError:
            found = self._current_copy(asset, partition)
            if found is None:
                return None
            buffer = io.BytesIO()
            table = self._read_copy(*found, _label(asset, partition))
            pq.write_table(table, buffer, compression="zstd")
            return buffer.getvalue()

    def partitions(
        self, asset: str, within: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        """Every stored partition of an asset, as its dimension → value mapping (compacted
        ones included); with ``within`` (the leading dimensions' values, e.g. one model
        version), only those under it, its folder listed alone."""
        return [partition for partition, _ in self.current_files(asset, within)]

    def current_files(
        self, asset: str, within: Mapping[str, str] | None = None
    ) -> list[tuple[dict[str, str], str]]:
        """Every stored partition of ``asset`` (``within``: as for :meth:`partitions`) with
        the file an ordinary read of it returns: its ``part.parquet``, or for a compacted one
        its copy (``<compacted file>#<copy>``, read with :meth:`read_path`)."""
        found = {
            tuple(p.items()): (p, self.path(asset, p))
            for p in self._plain_partitions(asset, within)
        }
        wanted = set((within or {}).items())
        for path, manifest in self._compacted(asset):
            for key, copy in manifest.current().items():
                if wanted <= set(key):
                    found.setdefault(key, (dict(key), f"{path}#{copy.copy}"))
        return sorted(found.values(), key=lambda pair: self.path(asset, pair[0]))

    def _plain_partitions(
        self, asset: str, within: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        """The partitions with a ``part.parquet``; ``within`` (the first dimension and its
        value) lists only that folder."""
        base = f"{self.root}/{asset}"
        folder = self.partition_dir(asset, within)
        if not self.is_local:
            # fsspec shares one filesystem object per URL in a process and caches listings in
            # it; other processes (workers) write here too, so list afresh.
            self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return []
        found = []
        for path in sorted(self._find(folder)):
            if not path.endswith("/" + PART_FILE) or not path.startswith(folder + "/"):
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
        return _concat(
            (partition, self.read(asset, partition)) for partition in self.partitions(asset)
        )

    def history(self, asset: str) -> dict[tuple[tuple[str, str], ...], list[tuple[datetime, str]]]:
        """Each partition's history copies, oldest first: partition items → (written at, path).
        A compacted copy's path is ``<compacted file>#<copy>`` (see the module docstring)."""
        found = self._plain_history(asset)
        plain = {path.rsplit("/", 1)[-1] for copies in found.values() for _, path in copies}
        for path, manifest in self._compacted(asset):
            for copy in manifest.copies:
                if copy.kind != compacted.HISTORY_COPY or copy.name in plain:
                    continue  # an original still there is read instead
                found.setdefault(copy.partition, []).append(
                    (copy.written_at, f"{path}#{copy.copy}")
                )
        for copies in found.values():
            copies.sort(key=lambda item: (item[0], item[1].rsplit("/", 1)[-1]))
        return found

    def _plain_history(
        self, asset: str, within: Mapping[str, str] | None = None
    ) -> dict[tuple[tuple[str, str], ...], list[tuple[datetime, str]]]:
        base = f"{self.root}/{HISTORY_DIR}/{asset}"
        folder = self.history_dir(asset, within)
        if not self.is_local:
            self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return {}
        found: dict[tuple[tuple[str, str], ...], list[tuple[datetime, str]]] = {}
        for path in sorted(self._find(folder)):
            segments = path[len(base) :].strip("/").split("/")
            name = segments[-1]
            if name.startswith(".") or not name.endswith(".parquet"):
                continue  # a temporary file of a write in progress
            partition = []
            for segment in segments[:-1]:
                dim, sep, value = segment.partition("=")
                if not sep:
                    raise CorruptPartitionError(f"history of asset {asset!r}: stray path {path}")
                partition.append((dim, unquote(value)))
            try:
                written = _written_at(name.split("-", 1)[0])
            except ValueError:
                raise CorruptPartitionError(
                    f"history of asset {asset!r}: {path} is not named <written_at>-<id>.parquet"
                ) from None
            found.setdefault(tuple(partition), []).append((written, path))
        for copies in found.values():
            copies.sort()
        return found

    def read_all_as_of(
        self, asset: str, as_of: datetime, cache: dict[str, pa.Table] | None = None
    ) -> pa.Table | None:
        """Every partition of ``asset`` as it stood just before ``as_of`` (timezone-aware).

        A partition with history reads its latest copy written before ``as_of`` and is left
        out if it had none then; one without history reads ``part.parquet`` (see the module
        docstring). ``cache`` (path → table) saves rereading a copy for several instants.
        """
        cache = {} if cache is None else cache
        tables = []
        for partition, path in self.files_as_of(asset, as_of):
            if path not in cache:
                cache[path] = self._read_path(path, _label(asset, partition))
            tables.append((partition, cache[path]))
        return _concat(tables)

    def files_as_of(self, asset: str, as_of: datetime) -> list[tuple[dict[str, str], str]]:
        """The stored file of each partition of ``asset`` as it stood just before ``as_of``,
        in partition order: the files :meth:`read_all_as_of` reads, also for a reader that
        queries them without loading them (``assay.storage.query``). A compacted copy's path
        is ``<compacted file>#<copy>``."""
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        history = self.history(asset)
        chosen: list[tuple[dict[str, str], str]] = []
        for key, copies in sorted(history.items()):
            before = [path for written, path in copies if written < as_of]
            if before:
                chosen.append((dict(key), before[-1]))
        plain = self._plain_partitions(asset)
        for partition in plain:
            if tuple(partition.items()) in history:
                continue
            path = self.path(asset, partition)
            modified = self._modified(path)
            if modified is None or modified < as_of:
                chosen.append((partition, path))
        seen = {tuple(p.items()) for p in plain}
        for path, manifest in self._compacted(asset):
            for key, copy in manifest.current().items():
                if key in history or key in seen or copy.kind != compacted.PART_COPY:
                    continue
                if copy.written_at is None or copy.written_at < as_of:
                    chosen.append((dict(key), f"{path}#{copy.copy}"))
        chosen.sort(key=lambda item: tuple(item[0].items()))
        return chosen

    def _modified(self, path: str) -> datetime | None:
        try:
            modified = self.fs.modified(path)
        except (NotImplementedError, AttributeError, OSError):
            return None
        return modified.replace(tzinfo=UTC) if modified.tzinfo is None else modified

    def read_path(self, path: str, label: str) -> pa.Table:
        """The table at ``path`` as :meth:`files_as_of` names it: a file, or a compacted copy
        (``<compacted file>#<copy>``); ``label`` names it in errors."""
        return self._read_path(path, label)

    def _read_path(self, path: str, label: str) -> pa.Table:
        reference = self.compacted_reference(path)
        if reference is not None:
            file, copy_id = reference
            manifest = self._manifest(file)
            copy = None if manifest is None else _copy_named(manifest, copy_id)
            if copy is None:
                raise PartitionNotFoundError(f"{label}: {path} is no longer stored")
            return self._read_copy(file, copy, label)
        url = path if self.is_local else f"{self.protocol}://{path.lstrip('/')}"
        try:
            return pq.read_table(pa.BufferReader(self.fs.cat_file(path)))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptPartitionError(
                f"{label} at {url} is not a readable Parquet file: {exc}"
            ) from None

    # -- compacted groups ------------------------------------------------------------------------
    def compacted_path(self, asset: str, group: Mapping[str, str]) -> str:
        """Where the compacted file of ``group`` (one dimension → value) of ``asset`` lives."""
        if len(group) != 1:
            raise ValueError(f"a compacted group is one dimension and its value, not {group}")
        ((dim, value),) = group.items()
        return f"{self.root}/{COMPACTED_DIR}/{asset}/{dim}={quote(str(value), safe='@-_.')}.parquet"

    def compacted_reference(self, path: str) -> tuple[str, str] | None:
        """(compacted file, copy) when ``path`` names a compacted copy, else None."""
        if not path.startswith(f"{self.root}/{COMPACTED_DIR}/") or "#" not in path:
            return None
        file, copy_id = path.rsplit("#", 1)
        return file, copy_id

    def compacted_groups(self, asset: str) -> list[dict[str, str]]:
        """The groups of ``asset`` that have a compacted file."""
        return [dict(manifest.group) for _, manifest in self._compacted(asset)]

    def compact(self, asset: str, group: Mapping[str, str]) -> CompactedGroup:
        """Fold every stored file of the partitions of ``asset`` in ``group`` (e.g.
        ``{"model_version": "m@v1"}``) into its compacted file, then remove the originals.

        The compacted file is written first, atomically, and holds whatever an earlier
        compaction of the group had plus the files written since; the originals go only
        after. A compaction stopped between the two leaves both, and readers read the
        originals (see the module docstring); running it again finishes it. A latest file
        rewritten while compacting is left in place."""
        ((dim, value),) = dict(group).items()
        target = self.compacted_path(asset, group)
        existing = self._manifest(target)
        # The group's dimension comes first in the store's paths (model_version does), so
        # only its folder is listed.
        plain_history = {
            key: copies
            for key, copies in self._plain_history(asset, group).items()
            if key and key[0] == (dim, value)
        }
        plain_parts = [
            p for p in self._plain_partitions(asset, group) if next(iter(p.items())) == (dim, value)
        ]
        if not plain_history and not plain_parts:
            return CompactedGroup(asset, dict(group), target, 0, 0, existing is not None)
        history_base = f"{self.root}/{HISTORY_DIR}/{asset}/"
        asset_base = f"{self.root}/{asset}/"
        sources: dict[str, Source] = {}
        if existing is not None:
            old = pq.ParquetFile(io.BytesIO(self.fs.cat_file(target)))
            for copy in existing.copies:
                sources[copy.copy] = _source(copy, lambda c=copy: compacted.read_copy(old, c))
        originals: dict[str, bytes] = {}
        for key, copies in plain_history.items():
            for written, path in copies:
                data = self._cat(path, _label(asset, dict(key)))
                originals[path] = data
                sources[path[len(history_base) :]] = _plain_source(
                    path[len(history_base) :], compacted.HISTORY_COPY, key, written, False, data
                )
        for partition in plain_parts:
            key = tuple(partition.items())
            path = self.path(asset, partition)
            data = self._cat(path, _label(asset, partition))
            originals[path] = data
            for copy_id, source in list(sources.items()):
                if source.partition == key and source.current:  # superseded by this file
                    if source.kind == compacted.PART_COPY:
                        del sources[copy_id]
                    else:
                        sources[copy_id] = replace(source, current=False)
            latest = _latest_history(sources.values(), key)
            if latest is not None and _same_table(
                latest, originals.get(history_base + latest.copy), data
            ):
                sources[latest.copy] = replace(latest, current=True)
            else:
                copy_id = path[len(asset_base) :]
                sources[copy_id] = _plain_source(
                    copy_id, compacted.PART_COPY, key, self._modified(path), True, data
                )
        ordered = sorted(sources.values(), key=lambda s: (s.partition, s.kind, s.copy))
        self._put_atomic(target, compacted.encode(asset, dict(group), ordered))
        self._manifests.pop(target, None)
        removed = 0
        for path, data in originals.items():
            if path.endswith("/" + PART_FILE):
                try:
                    if self.fs.cat_file(path) != data:
                        continue  # written again meanwhile: the newer file stays and is read
                except FileNotFoundError:
                    continue
            self.fs.rm_file(path)
            removed += 1
        self._prune_empty(
            [f"{self.root}/{asset}", f"{self.root}/{HISTORY_DIR}/{asset}"],
            {path.rsplit("/", 1)[0] for path in originals},
        )
        rows = sum(s.rows for s in ordered)
        return CompactedGroup(asset, dict(group), target, removed, rows, existing is not None)

    def _cat(self, path: str, label: str) -> bytes:
        try:
            data = self.fs.cat_file(path)
            pq.read_metadata(pa.BufferReader(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptPartitionError(
                f"{label}: {path} cannot be compacted, it is not a readable Parquet file: {exc}"
            ) from None
        return data

    def _prune_empty(self, bases: list[str], folders: set[str]) -> None:
        """Remove the folders left empty by a compaction, up to (not including) ``bases``."""
        if not self.is_local:
            return  # object stores have no folders
        for folder in sorted(folders, key=len, reverse=True):
            while any(folder.startswith(base + "/") for base in bases):
                try:
                    os.rmdir(folder)
                except OSError:
                    break  # not empty (or gone): stop climbing
                folder = folder.rsplit("/", 1)[0]

    def _find(self, folder: str) -> list[str]:
        """Every file under ``folder``, as fsspec's ``find`` names them. A local folder is
        walked with ``os.walk``: fsspec's local ``find`` stats every entry it lists, which
        took most of the listing of a store with tens of thousands of files."""
        if not self.is_local:
            return [str(p) for p in self.fs.find(folder)]
        for top, paths in self._listed_files.items():
            if folder == top:
                return list(paths)
            if folder.startswith(f"{top}/"):
                return [path for path in paths if path.startswith(f"{folder}/")]
        found = []
        for directory, _, names in os.walk(folder):
            found += [f"{directory}/{name}" for name in names]
        return found

    def _compacted(self, asset: str) -> list[tuple[str, Manifest]]:
        base = f"{self.root}/{COMPACTED_DIR}/{asset}"
        if not self.is_local:
            self.fs.invalidate_cache(base)
        if not self.fs.exists(base):
            return []
        found = []
        for path in sorted(str(p) for p in self.fs.ls(base, detail=False)):
            name = path.rsplit("/", 1)[-1]
            if name.startswith(".") or not name.endswith(".parquet"):
                continue
            manifest = self._manifest(path)
            if manifest is not None:
                found.append((path, manifest))
        return found

    def file_stamp(self, path: str) -> str | None:
        """A stored file's size and modification time (an object store's ETag too): changes
        whenever the file is rewritten; None if there is no file at ``path``."""
        if self.is_local:
            listed = self._listed_stamps.get(path)
            if listed is not None:
                return listed
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            return f"{st.st_size}|{st.st_mtime_ns}"
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        when = next(
            (info[k] for k in ("mtime", "LastModified", "last_modified", "created") if k in info),
            "",
        )
        return f"{info.get('size')}|{when}|{info.get('ETag', '')}"

    def _manifest(self, path: str) -> Manifest | None:
        """The manifest of the compacted file at ``path`` (None if there is none), cached
        while the file's size and modification time stay the same."""
        stamp = self.file_stamp(path)
        if stamp is None:
            return None
        cached = self._manifests.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with self.fs.open(path, "rb") as f:
                schema = pq.read_schema(f)
            manifest = compacted.decode_manifest(schema, path)
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise CorruptPartitionError(f"compacted file {path} is unreadable: {exc}") from None
        self._manifests[path] = (stamp, manifest)
        return manifest

    def _current_copy(
        self, asset: str, partition: Mapping[str, str] | None
    ) -> tuple[str, Copy] | None:
        """The compacted file and copy an ordinary read of ``partition`` returns, if any."""
        key = tuple((partition or {}).items())
        for dim, value in key:
            path = self.compacted_path(asset, {dim: value})
            manifest = self._manifest(path)
            if manifest is not None and key in manifest.current():
                return path, manifest.current()[key]
        return None

    def _read_copy(self, path: str, copy: Copy, label: str) -> pa.Table:
        try:
            with self.fs.open(path, "rb") as f:
                return compacted.read_copy(pq.ParquetFile(f), copy)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptPartitionError(
                f"{label} (compacted copy {copy.copy} in {path}) is unreadable: {exc}"
            ) from None


@dataclass(frozen=True)
class CompactedGroup:
    """What :meth:`ParquetStore.compact` did."""

    asset: str
    group: dict[str, str]
    path: str
    files_removed: int
    rows: int
    merged: bool  # an earlier compacted file of the group was folded in


def _latest_history(sources: Iterable[Source], key: tuple[tuple[str, str], ...]) -> Source | None:
    copies = [s for s in sources if s.partition == key and s.kind == compacted.HISTORY_COPY]
    return max(copies, key=lambda s: (s.written_at, s.name), default=None)


def _same_table(source: Source, original: bytes | None, data: bytes) -> bool:
    """Whether the history copy ``source`` (its file's bytes when still stored) holds the
    latest file ``data``: then the copy is what an ordinary read returns."""
    if original is not None:
        return original == data
    table = pq.read_table(pa.BufferReader(data))
    return table.schema.equals(source.schema, check_metadata=True) and source.read().equals(table)


def _copy_named(manifest: Manifest, copy_id: str) -> Copy | None:
    return next((c for c in manifest.copies if c.copy == copy_id), None)


def _source(copy: Copy, read: Callable[[], pa.Table]) -> Source:
    return Source(
        copy.copy,
        copy.kind,
        copy.partition,
        copy.written_at,
        copy.current,
        copy.schema,
        copy.rows,
        read,
    )


def _plain_source(
    copy_id: str,
    kind: str,
    key: tuple[tuple[str, str], ...],
    written: datetime | None,
    current: bool,
    data: bytes,
) -> Source:
    file = pq.ParquetFile(pa.BufferReader(data))
    return Source(
        copy_id,
        kind,
        key,
        written,
        current,
        file.schema_arrow,
        file.metadata.num_rows,
        lambda: pq.read_table(pa.BufferReader(data)),
    )


# How many partitions one read_many/write_many moves at once: enough to overlap an object
# store's round trips, few enough for a shared machine's cores and the store's connections.
IO_THREADS = 8


def _each(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[work(item) for item in items]``, ``IO_THREADS`` at a time; every item is tried and
    the first failure in order is raised after all are done."""
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(IO_THREADS, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
    return [future.result() for future in futures]


def _concat(parts: Iterable[tuple[Mapping[str, str], pa.Table]]) -> pa.Table | None:
    """Partitions' tables concatenated, each with a column per partition dimension."""
    tables = []
    for partition, table in parts:
        for dim, value in partition.items():
            if dim not in table.column_names:
                table = table.append_column(dim, pa.array([value] * table.num_rows, pa.string()))
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
