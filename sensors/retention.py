"""Retention: retired versions' results compacted, their ``model_version`` keys removed.

The library decides which versions are retired and folds their files
(:mod:`assay.storage.retention`); the ``retention`` job does it and deletes each retired
version's key from the ``model_version`` dynamic partitions, so the partitions Dagster tracks
stay about the versions in use (see README, "Retention"). A version that is brought back (un-
archived and promoted) gets its key again from the promotion sensor, which adds the key of
every version it records that the instance does not know.

``$ASSAY_RETENTION_CRON`` (default ``30 3 * * *``) schedules the job; ``$ASSAY_RETENTION``
set to ``on`` starts the schedule running, otherwise it is turned on in the UI.
"""

import os
from datetime import UTC, datetime

from dagster import (
    DefaultScheduleStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    job,
    op,
)

from assay.storage.contract import MODEL_VERSION
from assay.storage.retention import RetentionPolicy, compact_version, retired_versions
from resources import RegistryResource, StorageResource
from sensors.promotion import active_evaluation


@op(
    name="retire_versions",
    description="Compacts the results of every retired version (archived for "
    "$ASSAY_RETENTION_ARCHIVED_DAYS days, holding no alias) into one file per table and "
    "removes its model_version partition key. A version being evaluated is left for the next "
    "run.",
)
def retire_versions(
    context: OpExecutionContext, registry: RegistryResource, storage: StorageResource
) -> Output[dict[str, int]]:
    policy = RetentionPolicy.from_env()
    store = storage.store()
    instance = context.instance
    known = set(instance.get_dynamic_partitions(MODEL_VERSION))
    retired = retired_versions(registry.open(), datetime.now(UTC), policy)
    context.log.info(
        f"{len(retired)} retired versions (archived ≥ {policy.archived_days:g} days, no "
        f"alias), {len([r for r in retired if r.key in known])} of them still have a key"
    )
    removed, files, failed = [], 0, []
    for version in retired:
        running = active_evaluation(instance, version.key)
        if running is not None:
            context.log.info(f"{version.key}: skipped, run {running} evaluates it")
            continue
        try:
            done = compact_version(store, version.key)
        except Exception as exc:  # one version's files must not stop the others
            failed.append(f"{version.key}: {type(exc).__name__}: {exc}")
            context.log.error(f"{version.key}: not compacted, key kept: {exc}")
            continue
        files += done.files_removed
        context.log.info(done.summary())
        if version.key in known:
            instance.delete_dynamic_partition(MODEL_VERSION, version.key)
            removed.append(version.key)
            context.log.info(f"{version.key}: model_version partition key removed")
    live = len(instance.get_dynamic_partitions(MODEL_VERSION))
    context.log.info(
        f"removed {len(removed)} keys, compacted {files} files; {live} model_version keys remain"
    )
    if failed:
        raise Failure(
            f"{len(failed)} retired versions could not be compacted (their keys are kept)",
            metadata={"failed": MetadataValue.md("\n".join(f"- {f}" for f in failed))},
        )
    return Output(
        {"keys_removed": len(removed), "files_compacted": files, "keys_left": live},
        metadata={
            "retired": len(retired),
            "keys_removed": len(removed),
            "files_compacted": files,
            "model_version_keys": live,
            "removed": MetadataValue.md("\n".join(f"- {k}" for k in removed) or "none"),
        },
    )


@job(
    name="retention",
    description="Compacts retired versions' results and removes their model_version keys "
    "(README: Retention).",
)
def retention_job():
    retire_versions()


retention_schedule = ScheduleDefinition(
    name="retention_schedule",
    cron_schedule=os.environ.get("ASSAY_RETENTION_CRON", "30 3 * * *"),
    job=retention_job,
    default_status=DefaultScheduleStatus.RUNNING
    if os.environ.get("ASSAY_RETENTION", "").strip().lower() == "on"
    else DefaultScheduleStatus.STOPPED,
    description="Runs the retention job (README: Retention).",
)
