"""Telling an outage (retry at the next tick, cursor held) from a fact about one item (record
it and move on), for the sensors that read the registry and the stored tables."""

from __future__ import annotations

from assay.storage.parquet import ParquetStore


def is_registry_outage(exc: BaseException) -> bool:
    """The registry's database failing (SQLAlchemy's ``DBAPIError``), by class name so the
    sensors need no SQLAlchemy import."""
    return any(cls.__name__ == "DBAPIError" for cls in type(exc).__mro__)


def storage_reachable(store: ParquetStore) -> bool:
    """Whether the store's root answers a listing now: an error reading one file while it
    does is about that file, not an outage."""
    try:
        store.fs.ls(store.root)
    except FileNotFoundError:
        return True
    except Exception:
        return False
    return True
