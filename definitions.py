"""The code location: one ``Definitions`` that workspace.yaml loads (working directory: .)."""

import os

from dagster import Definitions, EnvVar

from assets import all_assets
from assets.checks import all_checks
from resources import (
    ModelsResource,
    ParquetIOManager,
    RegistryResource,
    StorageResource,
    SuiteResource,
)
from sensors import all_schedules, all_sensors
from sensors.mlflow import mlflow_sensors


def _env(field: str, variable: str) -> dict[str, EnvVar]:
    """``{field: EnvVar(variable)}`` when the variable is set: Dagster then resolves it at run
    time and shows only its name in the UI and run config, never the value (a database URL
    may carry a password). Unset, the resource keeps its local default."""
    return {field: EnvVar(variable)} if os.environ.get(variable) else {}


defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    sensors=[*all_sensors, *mlflow_sensors()],
    schedules=all_schedules,
    resources={
        "parquet_io_manager": ParquetIOManager(**_env("base_url", "ASSAY_STORAGE_URL")),
        "storage": StorageResource(**_env("base_url", "ASSAY_STORAGE_URL")),
        "registry": RegistryResource(**_env("url", "ASSAY_REGISTRY_URL")),
        "suite": SuiteResource(**_env("path", "ASSAY_SUITE")),
        "models": ModelsResource(**_env("request_cache_url", "ASSAY_REQUEST_CACHE_URL")),
    },
)
