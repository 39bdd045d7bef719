"""Scenarios: sources of evaluation instances, registered by name."""

# Importing the modules registers the scenarios they define.
from assay.scenarios import custom as _custom  # noqa: F401
from assay.scenarios import generated as _generated  # noqa: F401
from assay.scenarios import helm_bridge as _helm_bridge  # noqa: F401
from assay.scenarios import ifeval as _ifeval  # noqa: F401
from assay.scenarios import lm_eval_requests as _lm_eval  # noqa: F401
from assay.scenarios import public as _public  # noqa: F401
from assay.scenarios import synthetic as _synthetic  # noqa: F401
from assay.scenarios.base import (
    ENTRY_POINT_GROUP,
    PluginScenario,
    Scenario,
    ScenarioData,
    get_scenario,
    register_scenario,
    scenario_args_model,
    scenario_names,
    split,
)
from assay.scenarios.custom import ColumnMapping, CustomFileScenario, iter_instances
from assay.scenarios.download import DataSourceError, fetch
from assay.scenarios.files import DataFileError, iter_rows

__all__ = [
    "ENTRY_POINT_GROUP",
    "ColumnMapping",
    "CustomFileScenario",
    "DataFileError",
    "DataSourceError",
    "PluginScenario",
    "Scenario",
    "ScenarioData",
    "fetch",
    "get_scenario",
    "iter_instances",
    "iter_rows",
    "register_scenario",
    "scenario_args_model",
    "scenario_names",
    "split",
]
