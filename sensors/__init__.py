"""Dagster sensors and schedules of assay."""
