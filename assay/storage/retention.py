"""Retention: which model versions are retired, and folding a retired version's files.

A team that evaluates every nightly checkpoint adds a ``model_version`` partition key per
version, times every scenario: Dagster's partitions grow without end. A version is *retired*
once it has been in the registry's ``Archived`` stage for ``archived_days`` (and holds no
alias, which would keep it in use). Retiring it here compacts its evaluation tables: every
file it left in each table (each scenario's latest file and its history copies) is folded
into one file per table (:meth:`ParquetStore.compact`), with each copy's rows and write time,
so its results stay readable as they were, on the boards of past days too. The Dagster side
(``sensors/retention.py``) then removes its key from the ``model_version`` partitions.

``$ASSAY_RETENTION_ARCHIVED_DAYS`` (default 30; 0 retires a version as soon as it is
archived) sets ``archived_days``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from assay.registry import Registry
from assay.registry.entities import EventKind, Stage
from assay.storage.contract import (
    CONTAMINATION,
    INSTANCE_SCORES,
    JUDGE_REPLIES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    MODEL_VERSION,
)
from assay.storage.parquet import CompactedGroup, ParquetStore

# The tables partitioned by model version × scenario: what a retired version's keys held.
RETAINED_TABLES = (MODEL_OUTPUTS, INSTANCE_SCORES, METRIC_TABLES, JUDGE_REPLIES, CONTAMINATION)
ARCHIVED_DAYS_ENV = "ASSAY_RETENTION_ARCHIVED_DAYS"


@dataclass(frozen=True)
class RetentionPolicy:
    """A version is retired after ``archived_days`` in the Archived stage, holding no alias."""

    archived_days: float = 30.0

    def __post_init__(self) -> None:
        if not self.archived_days >= 0:
            raise ValueError(f"archived_days must be 0 or more, got {self.archived_days!r}")

    @classmethod
    def from_env(cls) -> RetentionPolicy:
        """``$ASSAY_RETENTION_ARCHIVED_DAYS`` (default 30)."""
        raw = os.environ.get(ARCHIVED_DAYS_ENV, "").strip()
        if not raw:
            return cls()
        try:
            days = float(raw)
        except ValueError:
            raise ValueError(f"{ARCHIVED_DAYS_ENV}={raw!r} is not a number of days") from None
        if not days >= 0:
            raise ValueError(f"{ARCHIVED_DAYS_ENV}={raw!r} must be 0 or more days")
        return cls(days)


@dataclass(frozen=True)
class Retired:
    """A retired version and when it was archived (its last move into the stage)."""

    key: str
    archived_at: datetime


def retired_versions(
    registry: Registry, now: datetime, policy: RetentionPolicy | None = None
) -> list[Retired]:
    """The versions retired at ``now`` (timezone-aware) under ``policy``, by key."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    policy = policy or RetentionPolicy.from_env()
    cutoff = now - timedelta(days=policy.archived_days)
    archived = [v for v in registry.versions() if v.stage is Stage.ARCHIVED and not v.aliases]
    moved = _archived_at(registry, {v.model for v in archived})
    found = []
    for version in archived:
        when = moved.get((version.model, version.version), version.created_at)
        if when <= cutoff:
            found.append(Retired(version.key, when))
    return sorted(found, key=lambda r: r.key)


def _archived_at(registry: Registry, models: Iterable[str]) -> dict[tuple[str, int], datetime]:
    """(model, version) → the time of its last stage change into Archived."""
    found: dict[tuple[str, int], datetime] = {}
    for model in sorted(models):
        for event in registry.events(model=model, kind=EventKind.STAGE_CHANGED):
            if event.version is not None and event.payload.get("after") == Stage.ARCHIVED.value:
                found[(model, event.version)] = event.ts
    return found


@dataclass
class VersionCompaction:
    """What compacting one version did, per table."""

    key: str
    groups: list[CompactedGroup] = field(default_factory=list)

    @property
    def files_removed(self) -> int:
        return sum(g.files_removed for g in self.groups)

    def summary(self) -> str:
        tables = ", ".join(
            f"{g.asset}: {g.files_removed} files → {g.path.rsplit('/', 1)[-1]}"
            for g in self.groups
            if g.files_removed
        )
        return f"{self.key}: " + (tables or "nothing left to compact")


def compact_version(
    store: ParquetStore, key: str, tables: Sequence[str] = RETAINED_TABLES
) -> VersionCompaction:
    """Fold every file of version ``key`` in each of ``tables`` into one compacted file per
    table. Running it again folds in only what was written since (nothing, usually)."""
    done = VersionCompaction(key)
    for table in tables:
        done.groups.append(store.compact(table, {MODEL_VERSION: key}))
    return done
