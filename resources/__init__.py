"""Dagster resources: thin wrappers that hand the assay library its configured parts."""

from resources.io_manager import ParquetIOManager
from resources.resources import (
    ModelsResource,
    RegistryResource,
    StorageResource,
    SuiteResource,
)

__all__ = [
    "ModelsResource",
    "ParquetIOManager",
    "RegistryResource",
    "StorageResource",
    "SuiteResource",
    "assay_resources",
]


def assay_resources(
    *,
    storage_url: str | None = None,
    registry_url: str | None = None,
    suite: SuiteResource | None = None,
    models: ModelsResource | None = None,
) -> dict[str, object]:
    """Every resource the assets expect, under the keys they use; unset parts keep their
    defaults (local storage under ``.assay``, the default registry, the shipped suite)."""
    storage = {} if storage_url is None else {"base_url": storage_url}
    return {
        "parquet_io_manager": ParquetIOManager(**storage),
        "storage": StorageResource(**storage),
        "registry": RegistryResource(**({} if registry_url is None else {"url": registry_url})),
        "suite": suite or SuiteResource(),
        "models": models or ModelsResource(),
    }
