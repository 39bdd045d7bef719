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
]
