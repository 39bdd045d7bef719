"""One digest of everything an explorer build reads, so a rebuild with nothing changed is
told apart without looking at any unit (:mod:`.writing`).

The digest covers the code (:func:`~.writing.code_digest`), the build's settings, the
inputs held in memory (the board, the stored rankings, the registry's events and versions,
the day, tables given in memory) and a listing of every stored file of the assets the
explorer reads (:data:`READ_ASSETS`: their ``part.parquet`` files, history copies and
compacted files), each with its size and modification time, as
:func:`~.results.file_fingerprint` stamps one file. Every unit's inputs are drawn from
these, so when the digest matches the last build's, every unit's inputs do too; when
anything in them differs (a new or rewritten file of any partition, however far from the
pages it shows), the build goes on unit by unit as before. Where a value held in memory is
of a kind this module does not know how to digest, there is no digest and the build goes
unit by unit.

On a local store the listing is kept in the manifest as a tree (each folder's modification
time, each file's size and modification time), and the next build confirms it with one
``stat`` per folder and file rather than listing every folder again (:func:`store_listing`);
once something changed, only the folders whose modification time changed are listed again.
The wall clock is read only to tell which folders were modified too recently for their
time to be trusted; it never enters a digest. The build then reads the store as this listing
found it (:func:`listed_files`, :meth:`ParquetStore.listed`): the folders of the assets it
reads are walked once per build, not again by each reader of their partitions.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from assay.report.results import table_digest
from assay.report.writing import inputs_digest
from assay.storage.contract import (
    CONTAMINATION,
    INSTANCE_SCORES,
    JUDGE_REPLIES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    SCENARIO_INSTANCES,
)
from assay.storage.parquet import COMPACTED_DIR, HISTORY_DIR, ParquetStore

if TYPE_CHECKING:
    from assay.report.data import ExplorerData

# The stored assets a build reads (through :mod:`.results` and the partition units); the
# rankings and the registry reach it through ``ExplorerData``.
READ_ASSETS = (
    MODEL_OUTPUTS,
    INSTANCE_SCORES,
    METRIC_TABLES,
    JUDGE_REPLIES,
    CONTAMINATION,
    SCENARIO_INSTANCES,
)


class _Unknown(Exception):
    """A value held in memory that has no canonical form here."""


def site_inputs(data: ExplorerData, n_resamples: int, listing: str) -> str | None:
    """The digest of everything a build of ``data`` reads (see the module docstring), with
    ``listing`` the digest of the store's files (:func:`store_listing`), or None where some
    input held in memory cannot be digested."""
    try:
        held = {
            f.name: _plain(getattr(data, f.name))
            for f in dataclasses.fields(data)
            if f.name != "store"
        }
    except _Unknown:
        return None
    return inputs_digest(
        "site",
        n_resamples,
        data.store.base_url,
        hashlib.sha256(json.dumps(held, allow_nan=True).encode()).hexdigest(),
        listing,
    )


# A folder whose modification time is this close to the listing's (or later) may change
# again within the same tick of the filesystem's clock (FAT's is 2 s): it is listed again.
_RACY_NS = 3_000_000_000


@dataclass(frozen=True)
class Listing:
    """The stored files a build reads: ``digest`` of each path with its size and modification
    time; ``recorded`` (a local store only) the tree it was taken from, which the next build
    confirms with one ``stat`` per folder and file instead of listing every folder again;
    ``walked``: listed now (False: the recorded tree was found as it was)."""

    digest: str
    recorded: dict[str, Any] | None
    walked: bool


def store_listing(
    store: ParquetStore, assets: Sequence[str] = READ_ASSETS, recorded: Any = None
) -> Listing:
    """The listing of every file under the folders of ``assets`` (their partitions, history
    copies and compacted files), each with its size and modification time.

    On a local store, ``recorded`` (the last build's :attr:`Listing.recorded`) is confirmed
    instead where it can be: every folder's modification time is the one recorded (a file
    created, removed or renamed in a folder changes it; a folder modified within
    ``_RACY_NS`` of the recording is listed again and its names compared) and every file's
    size and modification time too, as a partition's fingerprint compares them. Where it
    does not hold, the folders are listed again, but a folder whose time is the recorded
    one keeps its recorded names (see :func:`_tree`)."""
    folders = [
        f"{prefix}{asset}"
        for asset in assets
        for prefix in ("", f"{HISTORY_DIR}/", f"{COMPACTED_DIR}/")
    ]
    if not store.is_local:
        hasher = hashlib.sha256()
        for folder in folders:
            hasher.update(f"\0{folder}\0".encode())
            for line in _remote_lines(store, f"{store.root}/{folder}"):
                hasher.update(line.encode() + b"\n")
        return Listing(hasher.hexdigest(), None, True)
    if (
        isinstance(recorded, dict)
        and recorded.get("folders") == folders
        and isinstance(recorded.get("tree"), dict)
        and isinstance(recorded.get("digest"), str)
        and all(_same(f"{store.root}/{f}", recorded["tree"].get(f, False)) for f in folders)
    ):
        return Listing(recorded["digest"], recorded, False)
    racy_after = time.time_ns() - _RACY_NS
    before = recorded.get("tree") if isinstance(recorded, dict) else None
    before = before if isinstance(before, dict) else {}
    tree = {
        folder: _tree(f"{store.root}/{folder}", racy_after, before.get(folder))
        for folder in folders
    }
    hasher = hashlib.sha256()
    for folder in folders:
        hasher.update(f"\0{folder}\0".encode())
        stamps: dict[str, str] = {}
        _stamps(tree[folder], "", stamps)
        for line in sorted(f"{path}|{stamp}" for path, stamp in stamps.items()):
            # A name that is not valid UTF-8 is hashed as its bytes (os.fsencode).
            hasher.update(line.encode(errors="surrogateescape") + b"\n")
    digest = hasher.hexdigest()
    return Listing(digest, {"digest": digest, "folders": folders, "tree": tree}, True)


def listed_files(store: ParquetStore, listing: Listing) -> dict[str, dict[str, str]] | None:
    """Every file under each folder of a local store's ``listing``, as a walk of the folder
    names them, with its size and modification time as listed (the store's
    :meth:`~ParquetStore.file_stamp`), for :meth:`ParquetStore.listed`: the build reads the
    store as it was listed rather than listing it again; None without a recorded tree (an
    object store)."""
    recorded = listing.recorded
    if recorded is None:
        return None
    files = {}
    for folder in recorded["folders"]:
        base = f"{store.root}/{folder}"
        files[base] = stamps = {}
        _stamps(recorded["tree"].get(folder), base, stamps)
    return files


def _stamps(node: Any, base: str, out: dict[str, str]) -> None:
    """The files of the recorded folder ``node`` at ``base`` (none if it was not there),
    each with its ``size|modified``."""
    if node is None:
        return
    for name, child in node[1].items():
        if isinstance(child[1], dict):
            _stamps(child, f"{base}/{name}", out)
        else:
            out[f"{base}/{name}"] = f"{child[0]}|{child[1]}"


def _remote_lines(store: ParquetStore, base: str) -> list[str]:
    """``path|size|modified|etag`` of each object under ``base``, sorted."""
    store.fs.invalidate_cache(base)
    if not store.fs.isdir(base):
        return []
    lines = []
    for path, info in store.fs.find(base, detail=True).items():
        when = next(
            (info[k] for k in ("mtime", "LastModified", "last_modified", "created") if k in info),
            "",
        )
        lines.append(f"{path}|{info.get('size')}|{when}|{info.get('ETag', '')}")
    return sorted(lines)


# A recorded tree: a folder is ``[modified or None (racy), {name: node}]``, a file
# ``[size, modified]``, a folder that was not there ``None``.


def _tree(path: str, racy_after: int, recorded: Any = None) -> list | None:
    """The folder at ``path`` as a recorded tree (its modification time read before its
    names, so a change while it is listed shows next time).

    A folder whose modification time is the one ``recorded`` (its node in the last listing)
    holds the names recorded: they are taken from there rather than listed again, and only
    its files' sizes and modification times are read (a file rewritten in place keeps its
    folder's time). A store adding a version changes the folders that hold the new
    partitions, not those of the others, which are then not listed again."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    names = _recorded_names(recorded, st.st_mtime_ns)
    if names is None:
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        names = {e.name: e.is_dir(follow_symlinks=False) for e in entries}
    before = recorded[1] if _is_folder(recorded) else {}
    children: dict[str, list | None] = {}
    for name, is_folder in names.items():
        child_path = f"{path}/{name}"
        if is_folder:
            child = _tree(child_path, racy_after, before.get(name))
            if child is None:  # removed since it was listed
                continue
        else:
            try:
                found = os.stat(child_path)
            except FileNotFoundError:
                continue
            child = [found.st_size, found.st_mtime_ns]
        children[name] = child
    return [None if st.st_mtime_ns >= racy_after else st.st_mtime_ns, children]


def _is_folder(node: Any) -> bool:
    return type(node) is list and len(node) == 2 and type(node[1]) is dict


def _recorded_names(node: Any, modified: int) -> dict[str, bool] | None:
    """name → is a folder, of a recorded folder ``node`` whose (trusted) modification time
    is ``modified``; None when the folder must be listed."""
    if not _is_folder(node) or node[0] is None or node[0] != modified:
        return None
    names = {}
    for name, child in node[1].items():
        if child is None or type(child) is not list or len(child) != 2:
            return None
        names[name] = type(child[1]) is dict
    return names


def _same(path: str, node: Any) -> bool:
    """Whether ``path`` is as the recorded ``node`` says (False for anything malformed)."""
    if node is None:
        return not os.path.lexists(path)
    if not isinstance(node, list) or len(node) != 2:
        return False
    first, second = node
    if type(second) is not dict:
        return _same_file(path, first, second)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    if first is None:
        try:
            names = {entry.name for entry in os.scandir(path)}
        except OSError:
            return False
        if names != second.keys():
            return False
    elif st.st_mtime_ns != first:
        return False
    # Files inline (most nodes are files: one call less each), folders recursively.
    for name, child in second.items():
        if type(child) is list and len(child) == 2 and type(child[1]) is int:
            try:
                found = os.stat(f"{path}/{name}")
            except OSError:
                return False
            if found.st_mtime_ns != child[1] or found.st_size != child[0]:
                return False
        elif not _same(f"{path}/{name}", child):
            return False
    return True


def _same_file(path: str, size: Any, modified: Any) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_size == size and st.st_mtime_ns == modified


_SCALARS = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}  # a dataclass's field names, by its type


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data that tells apart any two values a page could show
    differently: dict order kept, sets sorted, arrays and tables in full."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict and all(type(k) is str and type(v) in _SCALARS for k, v in value.items()):
        return value  # as it stands: json.dumps keeps its order
    if (kind is list or kind is tuple) and all(type(v) in _SCALARS for v in value):
        return value
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        values = [getattr(value, name) for name in names]
        return [
            kind.__name__,
            names,
            [v if type(v) in _SCALARS else _plain(v) for v in values],
        ]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return ["enum", type(value).__name__, _plain(value.value)]
    if isinstance(value, datetime | date):
        return ["time", value.isoformat()]
    if isinstance(value, dict):
        return ["dict", [[_plain(k), _plain(v)] for k, v in value.items()]]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return ["set", sorted((_plain(v) for v in value), key=json.dumps)]
    if isinstance(value, np.ndarray):
        return ["array", str(value.dtype), list(value.shape), _plain(value.tolist())]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, pa.Table):
        return ["table", table_digest(value)]
    raise _Unknown(type(value).__name__)
