"""How the explorer writes files: the site folders (a local directory or a folder of a
store), the CSV/JSON exports, and the build manifest that makes rebuilds incremental.

The manifest (``_build.json`` in the site folder) records, for every file the last build
produced, a digest of its content (pages: rendered with a placeholder for the build time,
so a page whose data did not change digests the same), and for every unit (a partition's
data, a page with its exports) a digest of its inputs and the files it made. The inputs are
cheap to know: the fingerprints of the stored files the unit reads (path, size, modified
time; see :mod:`.results`), the board rows it shows, the build's settings and
:func:`code_digest`, never the build's day or time. A unit whose inputs match keeps its
files without reading data or rendering; a rendered page is written only if its content
changed. The build deletes the files the site folder holds that it no longer produces. It
deletes the manifest before its first write and writes it last, so a build that stops
halfway leaves none and the next build writes everything.

Before any unit, one digest of all the build's inputs (:mod:`.sitewide`: the listing of
every stored file the explorer reads, the inputs held in memory, the code) is compared with
the one the manifest records: when it matches and the folder holds exactly the files of the
last build, nothing is read, rendered or written at all. A file deleted from the folder or
added to it sends the build unit by unit, as does any change in the inputs; a file edited
in place is not noticed, by this check or the units'.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson

from assay.report.render import BUILD_TIME_MARK, _clean

Writer = Callable[[str, bytes], object]

MANIFEST = "_build.json"
# Bump when what a build writes changes in a way the code digest below does not see.
BUILD_FORMAT = "4"
# The code a page or a partition's files are made by: when it changes, all are rebuilt.
_CODE = ("report", "compare", "stats")


@functools.cache
def code_digest() -> str:
    """A digest of the explorer's code, templates and static files, and of the statistics
    behind its pages, with :data:`BUILD_FORMAT`."""
    root = Path(__file__).resolve().parent.parent
    hasher = hashlib.sha256(BUILD_FORMAT.encode())
    for package in _CODE:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".html", ".js", ".css"):
                hasher.update(path.relative_to(root).as_posix().encode() + b"\0")
                hasher.update(hashlib.sha256(path.read_bytes()).digest())
    return hasher.hexdigest()


# OWASP's CSV injection rule: a spreadsheet reads a cell starting with one of these as a
# formula (tab and carriage return too, since some programs strip them first).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``=``, ``+``,
    ``-``, ``@``, tab or carriage return gets a leading single quote; numbers (negative ones
    included, as numbers or as their plain text) stay as they are."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    header, body = csv_parts(rows)
    return (header + body).encode("utf-8")


def csv_parts(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The header line and the rows' lines of the CSV export of ``rows`` (columns in the
    order the rows first name them): a page that joins several parts' lines under one
    header writes what :func:`_csv` writes for all their rows."""
    buffer = io.StringIO()
    columns: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for c in row:
            if c not in seen:
                seen.add(c)
                columns.append(c)
    # RFC 4180's CRLF: the writer then quotes every field holding a CR or an LF.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([csv_cell(c) for c in columns])
    header = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    writer.writerows([_csv_value(row.get(c)) for c in columns] for row in rows)
    return header, buffer.getvalue()


def _csv_value(value: Any) -> Any:
    """A row's value as its CSV cell: NaN and infinities empty, like a missing value."""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, list | tuple | dict):
        value = _clean(value)
    return csv_cell(value)


def _json(rows: Any) -> bytes:
    # One row per line: readable, and without ``indent`` (which leaves json's C encoder).
    if isinstance(rows, list):
        body = ",\n".join(_json_row(r) for r in rows)
        return f"[\n{body}\n]\n".encode()
    return json.dumps(_clean(rows), ensure_ascii=False).encode("utf-8")


def _json_row(row: Any) -> str:
    """One row as JSON, NaN and infinities as null (the row is walked only when it has one)."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_clean(row), ensure_ascii=False)


def export_part(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One version's part of an export that its page assembles in the browser: ``[CSV
    header, CSV lines, JSON rows]``. The parts' lines joined in order under the header of the
    first part that has lines (``"\\r\\n"`` when none has), and their JSON rows joined as
    :func:`_json` joins rows, are the bytes :meth:`_Site.export` writes for all their rows."""
    header, body = csv_parts(rows)
    return [header, body, [_json_row(r) for r in rows]]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inputs_digest(*parts: Any) -> str:
    """A digest of a unit's inputs (JSON-able values) with the code's digest."""
    text = json.dumps([code_digest(), *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@runtime_checkable
class SiteFolder(Protocol):
    """Where a site lives: write, read, list and delete files by their path in the site."""

    def write(self, path: str, data: bytes) -> object: ...

    def read(self, path: str) -> bytes | None: ...

    def files(self) -> list[str]: ...

    def delete(self, path: str) -> None: ...


@dataclass(frozen=True)
class DirectorySite:
    """A site in a local directory (created as needed). Calling it writes a file."""

    root: Path

    def _path(self, path: str) -> Path:
        _check(path)
        return self.root / path

    def write(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    __call__ = write

    def read(self, path: str) -> bytes | None:
        target = self._path(path)
        return target.read_bytes() if target.is_file() else None

    def files(self) -> list[str]:
        # Links are not followed, nor listed: nothing outside the directory is deleted.
        return _local_files(str(self.root), links=False)

    def delete(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)


@dataclass(frozen=True)
class StoreSite:
    """A site under ``prefix`` of a :class:`~assay.storage.ParquetStore` (local directory or
    object store), each file written atomically. Calling it writes a file."""

    store: Any
    prefix: str = "explorer"

    def write(self, path: str, data: bytes) -> str:
        _check(path)
        return self.store.write_file(f"{self.prefix}/{path}", data)

    __call__ = write

    def read(self, path: str) -> bytes | None:
        _check(path)
        return self.store.read_file(f"{self.prefix}/{path}")

    def files(self) -> list[str]:
        if getattr(self.store, "is_local", False):
            # As the store lists them: a link is a file of the site (deleted when stale).
            return _local_files(f"{self.store.root}/{self.prefix}", links=True)
        return self.store.list_files(self.prefix)

    def delete(self, path: str) -> None:
        _check(path)
        self.store.delete_file(f"{self.prefix}/{path}")


def _local_files(root: str, *, links: bool) -> list[str]:
    """The files under the local folder ``root``, as sorted relative paths: plain files, and
    with ``links`` links too (as names: a linked folder is not followed). Nothing outside the
    folder is listed, hence deleted."""
    found: list[str] = []
    folders = [("", root)]
    while folders:
        relative, folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = f"{relative}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                folders.append((f"{name}/", entry.path))
            elif links or entry.is_file(follow_symlinks=False):
                found.append(name)
    return sorted(found)


def _check(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"site path {path!r} is not a relative path of plain names")


def store_writer(store: Any, prefix: str = "explorer") -> StoreSite:
    """Write the site under ``prefix`` of a :class:`~assay.storage.ParquetStore`."""
    return StoreSite(store, prefix)


def directory_writer(root: Any) -> DirectorySite:
    """Write the site into a local directory (created as needed)."""
    return DirectorySite(Path(root))


@dataclass
class SiteSummary:
    """What a build wrote: ``files`` and ``bytes`` count every file of the site (written or
    left as it was), ``written`` / ``unchanged`` split them, ``deleted`` lists the files of an
    earlier build that this one no longer produces. ``units_rendered`` / ``units_skipped``
    count the pages (with their exports) rendered or kept because their inputs matched the
    last build's; ``partitions_built`` / ``partitions_unchanged`` the same for partitions'
    data files. ``site_unchanged``: the site-wide digest of the inputs matched the last
    build's (:mod:`.sitewide`), so every unit was kept without being looked at
    (``units_checked``, the units whose inputs were compared, is 0); ``store_walked``: the
    store's folders were listed for it (False: the last build's listing was confirmed, or
    the site is written through a plain writer, which has no manifest)."""

    files: int = 0
    bytes: int = 0
    pages: list[str] = field(default_factory=list)
    written: int = 0
    unchanged: int = 0
    partitions_built: int = 0
    partitions_unchanged: int = 0
    units_rendered: int = 0
    units_skipped: int = 0
    rendered: list[str] = field(default_factory=list)  # the units rendered, by key
    deleted: list[str] = field(default_factory=list)
    units_checked: int = 0  # times a unit's inputs were compared with the last build's
    site_unchanged: bool = False  # the site-wide inputs matched: no unit was looked at
    store_walked: bool = False  # the store's folders listed (not the last listing confirmed)


class _Site:
    """The files of one build: writes what changed, remembers every file it produced."""

    def __init__(self, write: Writer | SiteFolder) -> None:
        self.folder = write if isinstance(write, SiteFolder) else None
        self._write = write.write if isinstance(write, SiteFolder) else write
        self.summary = SiteSummary()
        self.previous: dict[str, Any] = {"files": {}, "partitions": {}}
        self.existing: set[str] = set()
        if self.folder is not None:
            self.existing = set(self.folder.files())
            self.previous = _read_manifest(self.folder) if MANIFEST in self.existing else {}
            self.previous.setdefault("files", {})
            self.previous.setdefault("partitions", {})
        self.files: dict[str, str] = {}  # path → content digest, this build
        self.sizes: dict[str, int] = {}
        self.partitions: dict[str, dict[str, Any]] = {}
        self._unit: list[str] | None = None  # the files of the unit being rendered
        self.inputs: str | None = None  # the site-wide digest of this build's inputs
        self.listing: Mapping[str, Any] | None = None  # the store's listing it was taken from

    def unchanged_site(self, inputs: str | None) -> bool:
        """Whether the whole site's inputs (:mod:`.sitewide`) match the last build's and the
        folder holds exactly the files that build made: then every unit would be kept, and
        the summary says so without looking at any (``site_unchanged``)."""
        before = self.previous.get("site") or {}
        files = self.previous["files"]
        if (
            inputs is None
            or self.folder is None
            or before.get("inputs") != inputs
            or self.existing != set(files) | {MANIFEST}
        ):
            return False
        sizes = self.previous.get("sizes", {})
        summary = self.summary
        summary.site_unchanged = True
        summary.files = summary.unchanged = len(files)
        summary.bytes = sum(int(sizes.get(path, 0)) for path in files)
        summary.pages = [p for p in before.get("pages") or [] if isinstance(p, str)]
        summary.units_skipped = int(before.get("units") or 0)
        summary.partitions_unchanged = int(before.get("partitions") or 0)
        return True

    def previous_listing(self) -> Any:
        """The listing of the store the last build recorded (:mod:`.sitewide`), if any."""
        return (self.previous.get("site") or {}).get("listing")

    def start(self, inputs: str | None, listing: Mapping[str, Any] | None = None) -> None:
        """Begin writing: the manifest goes first (a build that stops halfway leaves none),
        and the site-wide digest ``inputs`` with the store's ``listing`` it was taken from
        go into the one :meth:`finish` writes."""
        self.inputs, self.listing = inputs, listing
        if self.folder is not None and MANIFEST in self.existing:
            self.folder.delete(MANIFEST)

    @contextlib.contextmanager
    def unit(self, key: str, inputs: str) -> Iterator[bool]:
        """Render the unit ``key`` (a page and its exports) unless its inputs match the
        last build's and its files are all there: yields False (its files kept as they
        are) or True (render it; the files written meanwhile are its files)."""
        if self.unchanged_unit(key, inputs):
            self.summary.units_skipped += 1
            yield False
            return
        if self._unit is not None:
            raise RuntimeError(f"unit {key!r} started inside another unit")
        self._unit = files = []
        try:
            yield True
        finally:
            self._unit = None
        self.rendered_unit(key, inputs, files)

    def rendered_unit(self, key: str, inputs: str, files: Sequence[str]) -> None:
        """Record the unit ``key`` as rendered by this build, with the files it made."""
        self.record_unit(key, inputs, files)
        self.summary.units_rendered += 1
        self.summary.rendered.append(key)

    def put(
        self, path: str, data: bytes, *, build_time: str | None = None, mend: bool = False
    ) -> None:
        """Write ``path`` unless the site already holds the same content. With
        ``build_time``, ``data`` holds :data:`BUILD_TIME_MARK` where the time goes, and the
        digest is of the page without it. With ``mend``, write it anyway (the file the
        folder holds did not read as what the manifest says it is)."""
        key = digest(data)
        if build_time is not None:
            data = data.replace(BUILD_TIME_MARK.encode(), build_time.encode())
        if not mend and self.previous["files"].get(path) == key and path in self.existing:
            self.summary.unchanged += 1
        else:
            self._write(path, data)
            self.summary.written += 1
        self._record(path, key, len(data))
        if self._unit is not None:
            self._unit.append(path)

    def previous_file(self, path: str) -> bool:
        """Whether the last build wrote ``path`` and the folder still holds it."""
        return path in self.previous["files"] and path in self.existing

    def wrote(self, path: str, key: str, size: int) -> None:
        """A file another process wrote for this build."""
        self.summary.written += 1
        self._record(path, key, size)

    def unchanged_unit(self, key: str, inputs: str) -> bool:
        """Whether the unit ``key`` (a partition, a comparison) had these inputs at the last
        build and its files are all still there; if so, they are kept as they are."""
        self.summary.units_checked += 1
        before = self.previous["partitions"].get(key) or {}
        files = before.get("files") or []
        if before.get("inputs") != inputs or not self._all_there(files):
            return False
        for path in files:
            self.keep(path)
        self.partitions[key] = {"inputs": inputs, "files": list(files)}
        return True

    def _all_there(self, files: Sequence[str]) -> bool:
        return bool(files) and all(
            isinstance(f, str) and f in self.existing and f in self.previous["files"] for f in files
        )

    def record_unit(self, key: str, inputs: str, files: Sequence[str]) -> None:
        self.partitions[key] = {"inputs": inputs, "files": list(files)}

    def keep(self, path: str) -> bool:
        """Keep ``path`` from the previous build as it is; False if it is not there."""
        key = self.previous["files"].get(path)
        if key is None or path not in self.existing:
            return False
        self.summary.unchanged += 1
        self._record(path, key, int(self.previous.get("sizes", {}).get(path, 0)))
        return True

    def _record(self, path: str, key: str, size: int) -> None:
        if path in self.files:
            self.summary.files -= 1
            self.summary.bytes -= self.sizes[path]
        self.files[path], self.sizes[path] = key, size
        self.summary.files += 1
        self.summary.bytes += size
        if path.endswith(".html") and path not in self.summary.pages:
            self.summary.pages.append(path)

    def export(self, name: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Write ``export/<name>.csv`` and ``.json``; return their links."""
        links = {"csv": f"export/{name}.csv", "json": f"export/{name}.json"}
        self.put(links["csv"], _csv(rows))
        self.put(links["json"], _json(list(rows)))
        return links

    def finish(self) -> None:
        """Delete what an earlier build wrote and this one did not, then write the manifest."""
        if self.folder is None:
            return
        for path in sorted(self.existing - set(self.files) - {MANIFEST}):
            self.folder.delete(path)
            self.summary.deleted.append(path)
        manifest = {
            "format": BUILD_FORMAT,
            "files": self.files,
            "sizes": self.sizes,
            "partitions": self.partitions,
        }
        if self.inputs is not None:
            summary = self.summary
            manifest["site"] = {
                "inputs": self.inputs,
                "units": summary.units_rendered + summary.units_skipped,
                "partitions": summary.partitions_built + summary.partitions_unchanged,
                "pages": summary.pages,
                "listing": self.listing,
            }
        self.folder.write(MANIFEST, _manifest_bytes(manifest))


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as JSON with sorted keys: orjson's encoder (a tenth of the time of the
    standard library's on a manifest of tens of thousands of files), or the standard one for
    what orjson refuses (a name that is not valid UTF-8, as a store may hold)."""
    try:
        return orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(manifest, sort_keys=True).encode("utf-8")


def _read_manifest(folder: SiteFolder) -> dict[str, Any]:
    """The previous build's manifest; anything unreadable or of another format counts as
    none (every file is then written)."""
    try:
        manifest = _manifest_of(folder.read(MANIFEST) or b"{}")
    except ValueError:
        return {}
    if not isinstance(manifest, dict) or manifest.get("format") != BUILD_FORMAT:
        return {}
    out: dict[str, Any] = {}
    for part in ("files", "sizes", "partitions", "site"):
        value = manifest.get(part)
        out[part] = value if isinstance(value, dict) else {}
    return out


def _manifest_of(data: bytes) -> Any:
    """The manifest's JSON: orjson's decoder, or the standard one for the escaped names that
    are not valid UTF-8 which :func:`_manifest_bytes` writes through it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
