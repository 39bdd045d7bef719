"""The clock a sample store and its registry share in tests (``assay.report.sample``'s
``write_sample`` moves it with ``clock=SampleClock.set``), so that every history copy and
registry event of the sample is stamped with the sample's own days."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assay.registry import Registry
from assay.report import ExplorerData
from assay.report.sample import Sample, board_of, write_sample
from assay.storage.parquet import ParquetStore


class SampleClock:
    """A clock that says ``now`` until told otherwise (start: 2026-11-01 UTC)."""

    def __init__(self, now: datetime = datetime(2026, 11, 1, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when


def sample_store(root: Path, *, n_instances: int) -> tuple[ParquetStore, Registry, Sample]:
    """``assay.report.sample``'s sample (three versions) written under ``root`` into a store
    and a registry that share one :class:`SampleClock`. The caller closes the registry."""
    clock = SampleClock()
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}", clock=clock)
    store = ParquetStore(str(root / "storage"), clock=clock)
    sample = write_sample(store, registry, clock=clock.set, n_versions=3, n_instances=n_instances)
    return store, registry, sample


def held_explorer_data(
    store: ParquetStore,
    registry: Registry,
    sample: Sample,
    primary_metrics: dict[str, str] | None = None,
    **settings: Any,
) -> ExplorerData:
    """The explorer's inputs held in memory for the sample's last day: the stored tables, and
    the board of every version on ``primary_metrics`` (default: the sample's). ``settings``
    are further ``ExplorerData`` fields (``lower_is_better``)."""
    cards, scores = store.read_all("metric_tables"), store.read_all("instance_scores")
    day = sample.days[-1]
    board = board_of(cards, scores, sample.versions, primary_metrics or sample.primary_metrics, day)
    return ExplorerData(
        day=day,
        board=board,
        metric_tables=cards,
        instance_scores=scores,
        rankings=store.read_all("rankings"),
        events=registry.events(),
        versions=registry.versions(),
        store=store,
        **settings,
    )
