"""The clock a sample store and its registry share in tests (``assay.report.sample``'s
``write_sample`` moves it with ``clock=SampleClock.set``), so that every history copy and
registry event of the sample is stamped with the sample's own days."""

from __future__ import annotations

from datetime import UTC, datetime


class SampleClock:
    """A clock that says ``now`` until told otherwise (start: 2026-11-01 UTC)."""

    def __init__(self, now: datetime = datetime(2026, 11, 1, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when
