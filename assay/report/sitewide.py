"""One digest of everything an explorer build reads, so a rebuild with nothing changed is
told apart without looking at any unit (:mod:`.writing`).

The digest covers the code (:func:`~.writing.code_digest`), the build's settings, the
inputs held in memory (the board, the stored rankings, the registry's events and versions,
the day, tables given in memory) and a listing of every stored file of the assets the
explorer reads (:data:`READ_ASSETS`: their ``part.parquet`` files, history copies and
compacted files), each with its size and modification time, as :func:`~.results.
file_fingerprint` stamps one file. Every unit's inputs are drawn from these, so when the
digest matches the last build's, every unit's inputs do too; when anything in them differs
(a new or rewritten file of any partition, however far from the pages it shows), the build
goes on unit by unit as before. Where a value held in memory is of a kind this module does
not know how to digest, there is no digest and the build goes unit by unit.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
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


def site_inputs(data: ExplorerData, n_resamples: int) -> str | None:
    """The digest of everything a build of ``data`` reads (see the module docstring), or
    None where some input held in memory cannot be digested."""
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
        store_listing(data.store, READ_ASSETS),
    )


def store_listing(store: ParquetStore, assets: tuple[str, ...]) -> str:
    """A digest of every file under the folders of ``assets`` (their partitions, history
    copies and compacted files): each path with its size and modification time."""
    hasher = hashlib.sha256()
    for asset in assets:
        for folder in (asset, f"{HISTORY_DIR}/{asset}", f"{COMPACTED_DIR}/{asset}"):
            base = f"{store.root}/{folder}"
            hasher.update(f"\0{folder}\0".encode())
            for line in _listed(store, base):
                hasher.update(line.encode() + b"\n")
    return hasher.hexdigest()


def _listed(store: ParquetStore, base: str) -> list[str]:
    """``relative path|size|modified`` of each file under ``base``, sorted."""
    if store.is_local:
        found: list[str] = []
        _walk(base, "", found)
        return sorted(found)
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


def _walk(folder: str, relative: str, found: list[str]) -> None:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        name = f"{relative}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            _walk(entry.path, name, found)
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:  # removed since it was listed
            continue
        found.append(f"{name}|{st.st_size}|{st.st_mtime_ns}")


_SCALARS = frozenset({str, int, float, bool, type(None)})


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
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return ["enum", type(value).__name__, _plain(value.value)]
    if isinstance(value, datetime | date):
        return ["time", value.isoformat()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [
            type(value).__name__,
            [[f.name, _plain(getattr(value, f.name))] for f in dataclasses.fields(value)],
        ]
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
