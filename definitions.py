"""The code location: one ``Definitions`` that workspace.yaml loads (working directory: .)."""

import os

from dagster import Definitions, EnvVar

from assets import all_assets
from assets.checks import all_checks
from resources import ModelsResource, SuiteResource, assay_resources
from resources.executor import executor_from_env
from sensors import all_jobs, all_schedules, all_sensors
from sensors.mlflow import mlflow_sensors


def _env(variable: str) -> EnvVar | None:
    """``EnvVar(variable)`` when the variable is set: Dagster then resolves it at run time and
    shows only its name in the UI and run config, never the value (a database URL may carry a
    password). Unset, the resource keeps its local default."""
    return EnvVar(variable) if os.environ.get(variable) else None


defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    sensors=[*all_sensors, *mlflow_sensors()],
    schedules=all_schedules,
    jobs=all_jobs,
    # ASSAY_EXECUTOR: unset keeps Dagster's default; `celery` spreads steps over workers.
    executor=executor_from_env(),
    resources=assay_resources(
        storage_url=_env("ASSAY_STORAGE_URL"),
        registry_url=_env("ASSAY_REGISTRY_URL"),
        suite=SuiteResource(path=_env("ASSAY_SUITE")),
        models=ModelsResource(request_cache_url=_env("ASSAY_REQUEST_CACHE_URL")),
    ),
)
