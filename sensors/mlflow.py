"""MLflow alias sync: a real MLflow registry's aliases mirrored into assay's registry.

Each tick reads every MLflow model's alias map, diffs it with the cursor (the previous map
as JSON, with each model's creation time so a deleted and re-created model counts as new),
and mirrors the changes into assay's registry (``assay.integrations.mlflow``). This sensor
launches no runs: the alias events it writes are what ``model_promotion_sensor`` turns into
evaluation runs. MLflow unreachable → SkipReason with the cause, cursor unchanged. An alias
whose MLflow version has no source assay can serve is deferred: left out of the cursor and
retried every tick until the version gets an ``assay.source`` tag.

The tracking URI comes from ``ASSAY_MLFLOW_TRACKING_URI`` or ``MLFLOW_TRACKING_URI``, read at
tick time; credentials go through MLflow's own variables (``MLFLOW_TRACKING_TOKEN``, ...).
"""

import os

from dagster import SensorEvaluationContext, SensorResult, SkipReason, sensor

from resources import RegistryResource

URI_VARIABLES = ("ASSAY_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")


def tracking_uri_from_env() -> str | None:
    """The first of ``URI_VARIABLES`` that is set and non-empty."""
    for name in URI_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def build_mlflow_alias_sensor(
    tracking_uri: str | None = None,
    name: str = "mlflow_alias_sensor",
    minimum_interval_seconds: int = 60,
):
    """The sync sensor for ``tracking_uri`` (None: read from the environment at each tick)."""

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        description="Mirrors MLflow model aliases into the assay registry; "
        "model_promotion_sensor then evaluates the promoted versions.",
    )
    def _mlflow_alias_sensor(context: SensorEvaluationContext, registry: RegistryResource):
        from assay.integrations.mlflow import (
            MlflowRegistryWatcher,
            MlflowUnavailable,
            alias_map_from_json,
            alias_map_to_json,
            cursor_after,
            diff_alias_maps,
            mirror_changes,
            redact_uri,
        )

        uri = tracking_uri or tracking_uri_from_env()
        if uri is None:
            return SkipReason(f"no MLflow tracking URI: set {' or '.join(URI_VARIABLES)}")
        previous = alias_map_from_json(context.cursor)
        watcher = MlflowRegistryWatcher(uri)
        try:
            current = watcher.snapshot()
            changes = watcher.with_targets(diff_alias_maps(previous, current))
        except MlflowUnavailable as exc:
            return SkipReason(f"{exc}; cursor unchanged")
        except Exception as exc:  # an MLflow error while reading versions: retry next tick
            return SkipReason(
                f"reading MLflow at {redact_uri(uri)} failed ({type(exc).__name__}: {exc}); "
                "cursor unchanged"
            )
        if not changes:
            return SensorResult(
                skip_reason=SkipReason(f"no alias changes in {len(current)} MLflow models"),
                cursor=alias_map_to_json(current),
            )
        # A registry failure raises here: the tick fails and the cursor stays put.
        results = mirror_changes(changes, registry.open())
        # Deferred changes stay out of the cursor, so they are retried at the next tick.
        cursor = alias_map_to_json(cursor_after(current, results))
        lines = []
        for r in results:
            c = r.change
            what = f"{c.model}@{c.alias}: {c.before} -> {c.after} ({r.action}"
            what += f", {r.key})" if r.key else ")"
            if r.reason:
                what += f" [{r.reason}]"
            lines.append(what)
            context.log.info(what)
        applied = sum(r.action in ("alias_set", "alias_removed") for r in results)
        return SensorResult(
            skip_reason=SkipReason(
                f"mirrored {applied} of {len(results)} MLflow alias changes; "
                "model_promotion_sensor launches the evaluations: " + "; ".join(lines)[:900]
            ),
            cursor=cursor,
        )

    return _mlflow_alias_sensor


def mlflow_sensors() -> list:
    """``[mlflow_alias_sensor]`` when mlflow is importable, else ``[]``."""
    from assay.integrations.mlflow import mlflow_available

    return [build_mlflow_alias_sensor()] if mlflow_available() else []
