"""A rebuild with nothing changed stops at one site-wide digest of the build's inputs, and
anything that changes a page (or could) sends it unit by unit as before.

A sample store and registry (three versions, one a day, two scenarios) is written once and
copied for each test with its files' modification times. Each test builds the site, changes
one thing (a stored partition, the registry, the code, the site folder), rebuilds, and
checks through the build's counters that the site-wide check fell through, which units were
rendered, and that the site is byte for byte the one a build from scratch writes.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sample_clock import SampleClock, sample_store

from assay.contamination.subsets import TABLE_SCHEMA
from assay.registry import Registry
from assay.report import ExplorerData, build_site, directory_writer, store_writer, writing
from assay.report.links import day_page
from assay.report.sample import SAMPLE_MODEL
from assay.report.sitewide import READ_ASSETS, store_listing
from assay.report.writing import MANIFEST
from assay.storage.parquet import COMPACTED_DIR, HISTORY_DIR, ParquetStore

WHEN = datetime(2026, 11, 4, tzinfo=UTC)
LATER = datetime(2026, 11, 20, 8, tzinfo=UTC)
OLD_NS = int(datetime(2026, 11, 10, tzinfo=UTC).timestamp() * 1e9)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sitewide")
    _, registry, sample = sample_store(root, n_instances=16)
    registry.close()
    return {"root": root, "sample": sample}


class Copy:
    """A copy of the sample's store and registry (modification times kept)."""

    def __init__(self, template: dict, into: Path) -> None:
        self.sample = template["sample"]
        self.root = into / "copy"
        shutil.copytree(template["root"], self.root)
        # Written long ago: no folder is within the listing's racy margin of its clock.
        for path in sorted((self.root / "storage").rglob("*"), reverse=True):
            os.utime(path, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
        self.clock = SampleClock(LATER)
        self.store = ParquetStore(str(self.root / "storage"), clock=self.clock)
        self.day = self.sample.days[-1]

    def registry(self) -> Registry:
        return Registry.open(f"sqlite:///{self.root / 'registry.db'}", clock=self.clock)

    def data(self) -> ExplorerData:
        """The explorer of the newest day as the dashboard asset reads it."""
        registry = self.registry()
        try:
            return ExplorerData.of_day(self.store, registry, _suite(self.sample), self.day)
        finally:
            registry.close()


def _suite(sample):
    from assay.evaluate.suite import parse_suite

    scenarios = {
        s: {"scenario": "facts_mc", "primary_metric": m} for s, m in sample.primary_metrics.items()
    }
    return parse_suite({"scenarios": scenarios}, "sample.yaml")


def _files(site: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in site.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }


def _same_as_fresh(data: ExplorerData, site: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    build_site(data, directory_writer(fresh), generated_at=WHEN)
    built, expected = _files(site), _files(fresh)
    assert sorted(built) == sorted(expected)
    for name in built:
        assert built[name] == expected[name], name


def _unit_by_unit(summary) -> None:
    """The site-wide check fell through: every unit's inputs were compared."""
    assert not summary.site_unchanged
    assert summary.units_checked >= summary.units_rendered + summary.units_skipped + (
        summary.partitions_built + summary.partitions_unchanged
    )


@pytest.fixture
def copy(template, tmp_path) -> Copy:
    return Copy(template, tmp_path)


def test_nothing_changed_looks_at_no_unit(copy, tmp_path):
    site = tmp_path / "site"
    first = build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    _unit_by_unit(first)
    manifest = (site / MANIFEST).read_bytes()
    before = _files(site)
    again = build_site(copy.data(), directory_writer(site), generated_at=LATER)
    assert again.site_unchanged and again.units_checked == 0
    # The store's listing was confirmed by stat calls, not taken again.
    assert first.store_walked and not again.store_walked
    assert (again.units_rendered, again.rendered, again.partitions_built) == (0, [], 0)
    # The counters a unit-by-unit rebuild reports: every unit and file kept as it was.
    assert again.units_skipped == first.units_rendered
    assert again.partitions_unchanged == first.partitions_built == 6
    assert (again.files, again.bytes, again.unchanged) == (first.files, first.bytes, first.files)
    assert (again.written, again.deleted) == (0, [])
    assert sorted(again.pages) == sorted(first.pages)
    assert _files(site) == before and (site / MANIFEST).read_bytes() == manifest


def test_a_stored_name_that_is_not_utf8_is_listed_and_recorded(copy, tmp_path):
    """A file whose name is not valid UTF-8 (anyone who writes to the store can leave one) is
    listed like any other: the manifest that records it is written and read back, and the
    next build finds nothing changed."""
    folder = Path(copy.store.root) / "model_outputs"
    odd = os.fsdecode(b"notes-\xff\xfe.txt")
    (folder / odd).write_bytes(b"not a partition")
    os.utime(folder / odd, ns=(OLD_NS, OLD_NS))
    os.utime(folder, ns=(OLD_NS, OLD_NS))
    site = tmp_path / "site"
    first = build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    assert first.store_walked and (site / MANIFEST).is_file()
    assert (
        odd
        in writing._read_manifest(directory_writer(site))["site"]["listing"]["tree"][
            "model_outputs"
        ][1]
    )
    again = build_site(copy.data(), directory_writer(site), generated_at=LATER)
    assert again.site_unchanged and not again.store_walked


def test_the_same_in_a_site_folder_of_the_store(copy):
    first = build_site(copy.data(), store_writer(copy.store), generated_at=WHEN)
    assert not first.site_unchanged
    again = build_site(copy.data(), store_writer(copy.store), generated_at=LATER)
    assert again.site_unchanged and again.units_checked == 0
    assert again.units_skipped == first.units_rendered


def test_a_rewritten_partition_rebuilds_its_units(copy, tmp_path):
    site = tmp_path / "site"
    build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    version, scenario = copy.sample.versions[0], next(iter(copy.sample.primary_metrics))
    where = {"model_version": version, "scenario": scenario}
    outputs = copy.store.read("model_outputs", where)
    # Another answer for the first request: what the partition's page data shows.
    texts = outputs["text"].to_pylist()
    texts[0] = "a rewritten answer"
    outputs = outputs.set_column(
        outputs.column_names.index("text"), "text", pa.array(texts, outputs["text"].type)
    )
    copy.store.write("model_outputs", where, outputs)
    data = copy.data()
    again = build_site(data, directory_writer(site), generated_at=WHEN)
    _unit_by_unit(again)
    assert again.partitions_built == 1 and again.partitions_unchanged == 5
    _same_as_fresh(data, site, tmp_path)


def test_a_new_partition_of_an_asset_read_rebuilds_its_units(copy, tmp_path):
    site = tmp_path / "site"
    build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    version, scenario = copy.sample.versions[1], next(iter(copy.sample.primary_metrics))
    where = {"model_version": version, "scenario": scenario}
    assert not copy.store.exists("contamination", where)
    ids = copy.store.read("model_outputs", where)["instance_id"].to_pylist()[:2]
    rows = [
        {"instance_id": ids[0], "detector": "ngram", "score": 0.9, "flagged": True},
        {"instance_id": ids[1], "detector": "ngram", "score": 0.1, "flagged": False},
    ]
    checked = pa.Table.from_pylist(rows, schema=TABLE_SCHEMA)
    copy.store.write("contamination", where, checked)
    data = copy.data()
    again = build_site(data, directory_writer(site), generated_at=WHEN)
    _unit_by_unit(again)
    assert again.partitions_built == 1  # the partition whose instances show the findings
    _same_as_fresh(data, site, tmp_path)


def test_a_registry_change_the_board_shows_rebuilds_its_pages(copy, tmp_path):
    site = tmp_path / "site"
    build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    # An alias set during the board's day: the day's board and the history show it.
    copy.clock.set(datetime.fromisoformat(copy.day).replace(tzinfo=UTC) + timedelta(hours=22))
    registry = copy.registry()
    registry.set_alias(SAMPLE_MODEL, "canary", 1, reason="a test")
    registry.close()
    data = copy.data()
    again = build_site(data, directory_writer(site), generated_at=WHEN)
    _unit_by_unit(again)
    assert {
        "history",
        "leaderboard\x1findex.html",
        f"leaderboard\x1f{day_page(copy.day)}",
    } <= set(again.rendered)
    assert again.partitions_built == 0
    _same_as_fresh(data, site, tmp_path)


def test_a_registry_change_no_page_shows_renders_nothing(copy, tmp_path):
    site = tmp_path / "site"
    build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    registry = copy.registry()
    registry.set_tag(SAMPLE_MODEL, "owner", "evals", version=1)
    registry.close()
    again = build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    _unit_by_unit(again)  # the registry is an input: checked unit by unit, none changed
    assert (again.rendered, again.partitions_built, again.written) == ([], 0, 0)


def test_a_new_rankings_day_rebuilds_the_menus(copy, tmp_path):
    site = tmp_path / "site"
    data = copy.data()
    first_day = copy.sample.days[0]
    rankings = data.rankings
    without = rankings.filter(pc.not_equal(rankings["day"], first_day))
    from dataclasses import replace

    build_site(replace(data, rankings=without), directory_writer(site), generated_at=WHEN)
    assert not (site / day_page(first_day)).exists()
    again = build_site(data, directory_writer(site), generated_at=WHEN)
    _unit_by_unit(again)
    assert f"leaderboard\x1f{day_page(first_day)}" in again.rendered
    _same_as_fresh(data, site, tmp_path)


def test_a_code_change_rebuilds_everything(copy, tmp_path, monkeypatch):
    site = tmp_path / "site"
    first = build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    # The code the digest covers grows by a package: as if the explorer's code changed.
    monkeypatch.setattr(writing, "_CODE", (*writing._CODE, "registry"))
    writing.code_digest.cache_clear()
    try:
        data = copy.data()
        again = build_site(data, directory_writer(site), generated_at=WHEN)
        _unit_by_unit(again)
        assert again.units_rendered == first.units_rendered and again.units_skipped == 0
        assert again.partitions_built == first.partitions_built
        _same_as_fresh(data, site, tmp_path)
    finally:
        writing.code_digest.cache_clear()


@pytest.mark.parametrize("change", ["deleted", "added"])
def test_a_file_deleted_or_added_in_the_site_folder(copy, tmp_path, change):
    site = tmp_path / "site"
    data = copy.data()
    build_site(data, directory_writer(site), generated_at=WHEN)
    page = day_page(copy.sample.days[0])
    if change == "deleted":
        (site / page).unlink()
    else:
        (site / "stray.html").write_text("not the explorer's")
    again = build_site(data, directory_writer(site), generated_at=WHEN)
    _unit_by_unit(again)
    if change == "deleted":
        assert again.rendered == [f"leaderboard\x1f{page}"]
    else:
        assert again.rendered == [] and again.deleted == ["stray.html"]
    _same_as_fresh(data, site, tmp_path)


def test_a_history_copy_written_after_the_day_falls_through_and_renders_nothing(copy, tmp_path):
    """A write stamped after the board's day changes no page; the site-wide listing sees a
    new file all the same, and the units find their inputs as they were."""
    site = tmp_path / "site"
    build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    version, scenario = copy.sample.versions[0], next(iter(copy.sample.primary_metrics))
    where = {"model_version": version, "scenario": scenario}
    cards = copy.store.read("metric_tables", where)
    copy.clock.set(LATER)  # after the board's day
    copy.store.write("metric_tables", where, cards.slice(0, 1))
    again = build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    _unit_by_unit(again)
    assert (again.rendered, again.partitions_built, again.written) == ([], 0, 0)


class _Reading(ParquetStore):
    """The sample's store, noting every file a build asks for and every asset it lists."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.paths: list[str] = []
        self.assets: set[str] = set()

    def current_files(self, asset, within=None):
        self.assets.add(asset)
        return super().current_files(asset, within)

    def files_as_of(self, asset, as_of):
        self.assets.add(asset)
        return super().files_as_of(asset, as_of)

    def read_path(self, path, label):
        self.paths.append(path)
        return super().read_path(path, label)


def test_the_digest_lists_every_file_a_build_reads(copy, tmp_path):
    store = _Reading(str(copy.root / "storage"))
    registry = copy.registry()
    data = ExplorerData.of_day(store, registry, _suite(copy.sample), copy.day)
    registry.close()
    store.paths.clear()
    store.assets.clear()
    build_site(data, directory_writer(tmp_path / "site"), generated_at=WHEN, workers=1)
    assert store.assets <= set(READ_ASSETS)
    folders = functools.reduce(
        set.union, ({a, f"{HISTORY_DIR}/{a}", f"{COMPACTED_DIR}/{a}"} for a in READ_ASSETS)
    )
    assert store.paths
    for path in store.paths:
        relative = Path(path.split("#")[0]).relative_to(store.root).as_posix()
        assert any(relative.startswith(f + "/") for f in folders), path


def test_a_listing_confirmed_by_stat_is_the_listing_taken_again(copy):
    first = store_listing(copy.store)
    assert first.walked and first.recorded is not None
    again = store_listing(copy.store, recorded=first.recorded)
    assert not again.walked and again.digest == first.digest
    # A partition written again: its folder's time and its file's stamp change.
    version, scenario = copy.sample.versions[0], next(iter(copy.sample.primary_metrics))
    where = {"model_version": version, "scenario": scenario}
    copy.store.write("judge_replies", where, pa.table({"instance_id": ["x"]}))
    changed = store_listing(copy.store, recorded=first.recorded)
    assert changed.walked and changed.digest != first.digest
    assert store_listing(copy.store).digest == changed.digest


def test_a_listing_taken_again_lists_only_the_folders_that_changed(copy, monkeypatch):
    """Once the recorded listing does not hold, the store is listed again folder by folder:
    a folder whose modification time is the recorded one keeps its recorded names (its files
    stamped again, so a file rewritten in place is seen), and the listing is the one taken
    from scratch."""
    from assay.report import sitewide

    first = store_listing(copy.store)
    versions, scenarios = copy.sample.versions, list(copy.sample.primary_metrics)
    # A new partition (new folders), a file removed (its folder changes), a file rewritten
    # in place (its folder does not).
    new = {"model_version": "sample-model@v9", "scenario": scenarios[0]}
    copy.store.write("judge_replies", new, pa.table({"instance_id": ["x"]}))
    outputs = {
        (p["model_version"], p["scenario"]): Path(path)
        for p, path in copy.store.current_files("model_outputs")
    }
    removed = outputs[versions[0], scenarios[0]]
    removed.unlink()
    in_place = outputs[versions[1], scenarios[0]]
    before = in_place.parent.stat().st_mtime_ns
    with in_place.open("ab") as file:
        file.write(b"appended")
    assert in_place.parent.stat().st_mtime_ns == before

    listed: list[str] = []
    scandir = os.scandir

    def recording(path):
        listed.append(os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(sitewide.os, "scandir", recording)
    again = store_listing(copy.store, recorded=first.recorded)
    monkeypatch.setattr(sitewide.os, "scandir", scandir)
    fresh = store_listing(copy.store)
    assert again.walked and again.digest == fresh.digest != first.digest
    assert again.recorded["tree"] == fresh.recorded["tree"]
    new_folder = Path(copy.store.partition_dir("judge_replies", new))
    assert sorted(listed) == sorted(
        [
            str(removed.parent),
            f"{copy.store.root}/judge_replies",
            str(new_folder.parent),
            str(new_folder),
        ]
    )


def test_a_folder_changed_within_the_clock_tick_is_listed_again(copy, tmp_path):
    """A folder modified just before the listing is marked racy and listed again by the
    next build: a file added to it within the same tick (its time set back to the recorded
    one here) is seen all the same."""
    version, scenario = copy.sample.versions[0], next(iter(copy.sample.primary_metrics))
    folder = Path(copy.store.partition_dir("model_outputs", {"model_version": version}))
    folder = folder / f"scenario={scenario}"
    now = time.time_ns()
    os.utime(folder, ns=(now, now))
    site = tmp_path / "site"
    build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    (folder / "notes.txt").write_text("a file no page reads")
    os.utime(folder, ns=(now, now))
    assert folder.stat().st_mtime_ns == now
    again = build_site(copy.data(), directory_writer(site), generated_at=WHEN)
    assert again.store_walked
    _unit_by_unit(again)
    assert (again.rendered, again.partitions_built, again.written) == ([], 0, 0)


def test_the_store_read_as_listed_is_the_store_walked(copy):
    """The build lists the store once: a view of the store over that listing lists each
    asset's partitions, history copies and files as of a day as a walk of the store does,
    and stamps its files as the store does, and goes on showing the store as it was listed
    after a write (a build reads the store as it listed it). Only a local store has such a
    listing."""
    from assay.report.sitewide import listed_files

    listing = store_listing(copy.store)
    view = copy.store.listed(listed_files(copy.store, listing))
    as_of = datetime.fromisoformat(copy.day).replace(tzinfo=UTC) + timedelta(days=1)
    for asset in READ_ASSETS:
        assert view.current_files(asset) == copy.store.current_files(asset), asset
        assert view.history(asset) == copy.store.history(asset), asset
        assert view.files_as_of(asset, as_of) == copy.store.files_as_of(asset, as_of), asset
        for _, path in view.current_files(asset) + view.files_as_of(asset, as_of):
            # Stamped as listed, which is as the store stamps it now.
            assert view.file_stamp(path) == copy.store.file_stamp(path), path
    version = copy.sample.versions[0]
    within = {"model_version": version}
    assert view.current_files("model_outputs", within) == copy.store.current_files(
        "model_outputs", within
    )
    partition, outputs = view.current_files("model_outputs", within)[0]
    listed_stamp = view.file_stamp(outputs)
    where = {
        "model_version": "sample-model@v9",
        "scenario": next(iter(copy.sample.primary_metrics)),
    }
    copy.store.write("judge_replies", where, pa.table({"instance_id": ["x"]}))
    assert where in [p for p, _ in copy.store.current_files("judge_replies")]
    assert where not in [p for p, _ in view.current_files("judge_replies")]
    copy.store.write("model_outputs", partition, copy.store.read("model_outputs", partition))
    os.utime(outputs, ns=(1, 1))
    assert copy.store.file_stamp(outputs) != listed_stamp
    assert view.file_stamp(outputs) == listed_stamp  # the stamp it was listed with
    with pytest.raises(ValueError, match="only a local store"):
        ParquetStore("memory://listed-view").listed({})


def test_a_build_walks_no_stored_folder_after_its_listing(copy, tmp_path, monkeypatch):
    """A build lists the folders of the assets it reads once (the site-wide listing):
    reading the results walks none of them again, and the site is the one a build that walks
    them writes."""
    from assay.report import site as site_module
    from assay.storage import parquet

    walked: list[str] = []
    walk = os.walk

    def recording(top, *args, **kwargs):
        walked.append(str(top))
        return walk(top, *args, **kwargs)

    monkeypatch.setattr(parquet.os, "walk", recording)
    site = tmp_path / "site"
    build_site(copy.data(), directory_writer(site), generated_at=WHEN, workers=1)
    listed = [
        f"{copy.store.root}/{prefix}{asset}"
        for asset in READ_ASSETS
        for prefix in ("", f"{HISTORY_DIR}/", f"{COMPACTED_DIR}/")
    ]

    def under_listed(folder: str) -> bool:
        return any(folder == f or folder.startswith(f + "/") for f in listed)

    # (The rankings, which reach the build through ExplorerData, are not in the listing.)
    assert walked and not [w for w in walked if under_listed(w)]

    monkeypatch.setattr(site_module, "listed_files", lambda store, listing: None)
    walked.clear()
    fresh = tmp_path / "walked"
    build_site(copy.data(), directory_writer(fresh), generated_at=WHEN, workers=1)
    assert [w for w in walked if under_listed(w)]  # the walks it saves
    built, expected = _files(site), _files(fresh)
    assert sorted(built) == sorted(expected)
    for name in built:
        assert built[name] == expected[name], name
