"""Scenarios: sources of evaluation instances, registered by name."""

from assay.scenarios import synthetic as _synthetic  # noqa: F401  (registers the shipped ones)
from assay.scenarios.base import (
    Scenario,
    ScenarioData,
    get_scenario,
    register_scenario,
    scenario_names,
    split,
)

__all__ = [
    "Scenario",
    "ScenarioData",
    "get_scenario",
    "register_scenario",
    "scenario_names",
    "split",
]
