"""How the explorer writes files: the writer callables, the CSV/JSON exports and the
summary of what a build wrote."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.report.render import _clean

Writer = Callable[[str, bytes], object]


def _csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in _clean(dict(row)).items()})
    return buffer.getvalue().encode("utf-8")


def _json(rows: Any) -> bytes:
    return json.dumps(_clean(rows), ensure_ascii=False, indent=1).encode("utf-8")


@dataclass
class SiteSummary:
    """What a build wrote."""

    files: int = 0
    bytes: int = 0
    pages: list[str] = field(default_factory=list)


class _Site:
    def __init__(self, write: Writer) -> None:
        self._write = write
        self.summary = SiteSummary()

    def put(self, path: str, data: bytes) -> None:
        self._write(path, data)
        self.summary.files += 1
        self.summary.bytes += len(data)
        if path.endswith(".html"):
            self.summary.pages.append(path)

    def export(self, name: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Write ``export/<name>.csv`` and ``.json``; return their links."""
        links = {"csv": f"export/{name}.csv", "json": f"export/{name}.json"}
        self.put(links["csv"], _csv(rows))
        self.put(links["json"], _json(list(rows)))
        return links


def store_writer(store: Any, prefix: str = "explorer") -> Writer:
    """Write the site under ``prefix`` of a :class:`~assay.storage.ParquetStore` (local
    directory or object store), each file atomically."""

    def write(path: str, data: bytes) -> str:
        return store.write_file(f"{prefix}/{path}", data)

    return write


def directory_writer(root: Any) -> Writer:
    """Write the site into a local directory (created as needed)."""
    from pathlib import Path

    base = Path(root)

    def write(path: str, data: bytes) -> None:
        target = base / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    return write
