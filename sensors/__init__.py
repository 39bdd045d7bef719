"""Dagster sensors and schedules of assay."""

from sensors.evaluations import evaluation_recorder_sensor
from sensors.promotion import model_promotion_sensor
from sensors.retention import retention_job, retention_schedule
from sensors.schedules import (
    dashboard_refresh_sensor,
    nightly_alias_reevaluation,
    rankings_refresh_sensor,
)

all_sensors = [
    model_promotion_sensor,
    evaluation_recorder_sensor,
    rankings_refresh_sensor,
    dashboard_refresh_sensor,
]
all_schedules = [nightly_alias_reevaluation, retention_schedule]
all_jobs = [retention_job]

__all__ = [
    "all_jobs",
    "all_schedules",
    "all_sensors",
    "dashboard_refresh_sensor",
    "evaluation_recorder_sensor",
    "model_promotion_sensor",
    "nightly_alias_reevaluation",
    "rankings_refresh_sensor",
    "retention_job",
    "retention_schedule",
]
