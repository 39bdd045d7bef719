"""The results explorer: a static site from the leaderboard down to a single prediction.

``build_site(ExplorerData(...), writer)`` writes every page, chart and export through a
writer (a local directory, or a :class:`~assay.storage.ParquetStore` on any fsspec URL);
see :mod:`assay.report.site` for the layout and :mod:`assay.report.data` for the inputs.
"""

from assay.report.data import ExplorerData
from assay.report.site import (
    SiteSummary,
    build_site,
    directory_writer,
    scenario_page,
    store_writer,
)
from assay.storage.parquet import ParquetStore

EXPLORER_DIR = "explorer"


def explorer_url(store: ParquetStore, page: str = "index.html") -> str:
    """Where a page of the explorer written into ``store`` lives: a local path, or a URL
    on an object store."""
    path = f"{store.root.rstrip('/')}/{EXPLORER_DIR}/{page}"
    return path if store.is_local else f"{store.protocol}://{path.lstrip('/')}"


__all__ = [
    "EXPLORER_DIR",
    "ExplorerData",
    "SiteSummary",
    "build_site",
    "directory_writer",
    "explorer_url",
    "scenario_page",
    "store_writer",
]
