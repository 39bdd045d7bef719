"""The code location: one ``Definitions`` that workspace.yaml loads (working directory: .)."""

from dagster import Definitions

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

defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    sensors=[*all_sensors, *mlflow_sensors()],
    schedules=all_schedules,
    resources={
        "parquet_io_manager": ParquetIOManager(),
        "storage": StorageResource(),
        "registry": RegistryResource(),
        "suite": SuiteResource(),
        "models": ModelsResource(),
    },
)
