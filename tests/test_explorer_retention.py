"""The explorer over a store whose versions were compacted by the retention policy: their
results are read from the compacted copies, and the site is the one built before."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from assay.registry import Registry
from assay.report import ExplorerData, build_site, directory_writer
from assay.report.sample import board_of, write_sample
from assay.report.writing import MANIFEST
from assay.storage.parquet import ParquetStore
from assay.storage.retention import compact_version

WHEN = datetime(2026, 11, 4, tzinfo=UTC)


class _Clock:
    now = datetime(2026, 11, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when


def _files(site: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in site.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }


def test_a_compacted_version_shows_as_it_did(tmp_path: Path) -> None:
    clock = _Clock()
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", clock=clock)
    store = ParquetStore(str(tmp_path / "storage"), clock=clock)
    sample = write_sample(store, registry, clock=clock.set, n_versions=3, n_instances=24)
    cards, scores = store.read_all("metric_tables"), store.read_all("instance_scores")
    day = sample.days[-1]
    board = board_of(cards, scores, sample.versions, sample.primary_metrics, day)
    before = tmp_path / "before"
    build_site(
        ExplorerData.of_day(store, registry, board, day),
        directory_writer(before),
        generated_at=WHEN,
    )

    oldest = sample.versions[0]
    done = compact_version(store, oldest)
    assert sum(g.files_removed for g in done.groups) > 0
    # Its partitions' own files are gone: what the explorer shows now comes from the copies.
    for asset in ("model_outputs", "instance_scores", "metric_tables"):
        files = {
            p["scenario"]: f for p, f in store.current_files(asset) if p["model_version"] == oldest
        }
        assert files and all("#" in f for f in files.values()), (asset, files)

    after = tmp_path / "after"
    data = ExplorerData.of_day(store, registry, board, day)
    build_site(data, directory_writer(after), generated_at=WHEN)
    assert _files(after) == _files(before)
    # An incremental rebuild of the earlier site over the compacted store: the same files.
    again = build_site(data, directory_writer(before), generated_at=WHEN)
    assert again.deleted == []
    assert _files(before) == _files(after)
    registry.close()
