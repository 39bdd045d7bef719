"""MLflow: aliases mirrored into assay's registry, and evaluations logged back as runs.

``mlflow_export_sensor`` logs every new ``metric_tables`` partition (each evaluation) as an
MLflow run in the ``assay-evaluations`` experiment, tagged with its model version and linked to
the MLflow model version when the version was mirrored from MLflow. Its cursor is the last
materialization exported; each run carries the tag ``assay.evaluation`` = ``<partition
key>#<storage id>`` and is looked up before logging, so a repeated tick logs nothing twice.
MLflow unreachable → SkipReason with the cause, cursor left before the first evaluation not
logged, retried at the next tick. An evaluation that cannot be exported (its version gone from
the registry, its tables unreadable) is skipped with a warning. It starts running by default
when a tracking URI is configured at load time.

``mlflow_alias_sensor``:

Each tick reads every MLflow model's alias map, diffs it with the cursor (the previous map
as JSON, with each model's creation time so a deleted and re-created model counts as new),
and mirrors the changes into assay's registry (``assay.integrations.mlflow``). This sensor
launches no runs: the alias events it writes are what ``model_promotion_sensor`` turns into
evaluation runs. MLflow unreachable → SkipReason with the cause, cursor unchanged. An alias
whose MLflow version has no source assay can serve is deferred: left out of the cursor and
retried every tick until the version gets an ``assay.source`` tag. A gated alias
(``champion``) is not moved by the sync unless ``ASSAY_MLFLOW_SYNC_MOVES_GATED=1``: in assay
only a promoter moves it.

The tracking URI comes from ``ASSAY_MLFLOW_TRACKING_URI`` or ``MLFLOW_TRACKING_URI``, read at
tick time; credentials go through MLflow's own variables (``MLFLOW_TRACKING_TOKEN``, ...).
"""

import os

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, MODEL_VERSION, SCENARIO
from assets.partitions import evaluation_partitions
from resources import RegistryResource, StorageResource
from sensors.outages import is_registry_outage
from sensors.promotion import sensor_interval_s

URI_VARIABLES = ("ASSAY_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")


def tracking_uri_from_env() -> str | None:
    """The first of ``URI_VARIABLES`` that is set and non-empty."""
    for name in URI_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


MOVES_GATED_VARIABLE = "ASSAY_MLFLOW_SYNC_MOVES_GATED"


def build_mlflow_alias_sensor(
    tracking_uri: str | None = None,
    name: str = "mlflow_alias_sensor",
    minimum_interval_seconds: int = 60,
    move_gated_aliases: bool | None = None,
):
    """The sync sensor for ``tracking_uri`` (None: read from the environment at each tick).

    ``move_gated_aliases`` (None: ``ASSAY_MLFLOW_SYNC_MOVES_GATED=1``, read at each tick) lets
    MLflow's writers move gated aliases such as ``champion``; by default they cannot.
    """

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
        move_gated = (
            os.environ.get(MOVES_GATED_VARIABLE) == "1"
            if move_gated_aliases is None
            else move_gated_aliases
        )
        results = mirror_changes(changes, registry.open(), move_gated=move_gated)
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


def build_mlflow_export_sensor(
    tracking_uri: str | None = None,
    name: str = "mlflow_export_sensor",
    minimum_interval_seconds: int | None = None,
    max_per_tick: int = 50,
    experiment: str | None = None,
):
    """The export sensor for ``tracking_uri`` (None: read from the environment each tick)."""
    configured = tracking_uri or tracking_uri_from_env()
    interval = minimum_interval_seconds or sensor_interval_s()

    @sensor(
        name=name,
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING if configured else DefaultSensorStatus.STOPPED,
        description="Logs each new evaluation (metric_tables partition) as an MLflow run "
        "linked to its model version, once.",
    )
    def _mlflow_export_sensor(
        context: SensorEvaluationContext, registry: RegistryResource, storage: StorageResource
    ):
        from assay.integrations.mlflow import (
            MlflowRejected,
            MlflowUnavailable,
            export_stored_evaluation,
            redact_uri,
            stored_provenance,
        )

        uri = tracking_uri or tracking_uri_from_env()
        if uri is None:
            return SkipReason(f"no MLflow tracking URI: set {' or '.join(URI_VARIABLES)}")
        after = int(context.cursor or 0)
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(METRIC_TABLES), after_storage_id=after),
            limit=max_per_tick,
            ascending=True,
        ).records
        if not records:
            return SkipReason(f"no evaluations after storage id {after}")
        store, logged, found, skipped = storage.store(), [], 0, 0
        refusals: list[AssetObservation] = []
        cursor = after
        for record in records:
            key = record.partition_key
            if key is not None:
                dims = evaluation_partitions.get_partition_key_from_str(key).keys_by_dimension
                evaluation = f"{key}#{record.storage_id}"
                try:
                    version = registry.open().get_version(dims[MODEL_VERSION])
                    done = export_stored_evaluation(
                        uri,
                        evaluation,
                        store.read(METRIC_TABLES, dims),
                        store.read(INSTANCE_SCORES, dims),
                        version,
                        dims[SCENARIO],
                        provenance=stored_provenance(store, dims),
                        **({"experiment": experiment} if experiment else {}),
                    )
                except MlflowRejected as exc:
                    # Recorded against the evaluation, where its page shows it; later ones
                    # still go.
                    skipped += 1
                    context.log.warning(f"{evaluation} not exported: {exc}")
                    refusals.append(
                        AssetObservation(
                            AssetKey(METRIC_TABLES),
                            partition=key,
                            metadata={"mlflow_export": f"refused: {exc}"[:1000]},
                        )
                    )
                except MlflowUnavailable as exc:
                    return SensorResult(
                        skip_reason=SkipReason(
                            f"{exc}; {len(logged)} logged this tick; cursor stays at storage "
                            f"id {cursor}, retried at the next tick"
                        ),
                        asset_events=refusals,
                    )
                except Exception as exc:
                    if is_registry_outage(exc):
                        return SensorResult(
                            skip_reason=SkipReason(
                                f"registry unreachable ({type(exc).__name__}); cursor stays "
                                f"at storage id {cursor}, retried at the next tick"
                            ),
                            asset_events=refusals,
                        )
                    # This evaluation cannot be exported; later ones still are.
                    skipped += 1
                    context.log.warning(f"{evaluation} not exported: {type(exc).__name__}: {exc}")
                else:
                    if done.logged:
                        logged.append(done.run_id)
                        context.log.info(
                            f"{evaluation} logged to {redact_uri(uri)} as run {done.run_id}"
                        )
                    else:
                        found += 1
            cursor = record.storage_id
            context.update_cursor(str(cursor))
        return SensorResult(
            skip_reason=SkipReason(
                f"logged {len(logged)} evaluations to MLflow ({found} already logged, "
                f"{skipped} not exportable); nothing to launch"
            ),
            asset_events=refusals,
        )

    return _mlflow_export_sensor


def mlflow_sensors() -> list:
    """``[mlflow_alias_sensor, mlflow_export_sensor]`` when mlflow is importable, else ``[]``."""
    from assay.integrations.mlflow import mlflow_available

    if not mlflow_available():
        return []
    return [build_mlflow_alias_sensor(), build_mlflow_export_sensor()]
