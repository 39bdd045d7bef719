"""Rankings as of a day: a past day rebuilt after newer evaluations gives the same board."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from dagster import AssetSelection, instance_for_test, materialize

import assay.storage.parquet as parquet_module
from assay.compare.standings import StoredResults, end_of_day, leaderboard_as_of
from assay.core.records import InstanceStat, MetricSummary
from assay.evaluate.suite import load_suite
from assay.registry import Registry
from assay.scoring.summary import scorecard_table
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import SuiteResource, assay_resources

DAY, NEXT_DAY = "2026-11-10", "2026-11-11"
REGISTERED = datetime(2026, 11, 9, 9, 0, tzinfo=UTC)
EVALUATED = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
REEVALUATED = datetime(2026, 11, 11, 8, 0, tzinfo=UTC)
VERSIONS = ("m@v1", "m@v2")


def _registry(url: str) -> Registry:
    registry = Registry.open(url, clock=lambda: REGISTERED)
    registry.create_model("m")
    for _ in VERSIONS:
        registry.create_version("m", "hf:/m")
    return registry


def _write_results(store: ParquetStore, correct: dict[str, int]) -> None:
    """Exact-match results on arithmetic: ``correct[version]`` of 4 instances right."""
    for version, right in correct.items():
        partition = {"model_version": version, "scenario": "arithmetic"}
        stats = [
            InstanceStat(f"i{i}", "exact_match", float(i < right), family="accuracy")
            for i in range(4)
        ]
        card = [MetricSummary("exact_match", "accuracy", "", "", right / 4, 4, 0.0, 1.0)]
        store.write("instance_scores", partition, InstanceStat.to_table(stats))
        store.write("metric_tables", partition, scorecard_table(card))


def _board(store: ParquetStore, registry: Registry, day: str) -> pa.Table:
    board, _ = leaderboard_as_of(day, StoredResults.of_day(store, day), registry, load_suite())
    return board.to_table()


def test_a_past_day_rebuilt_after_new_results_gives_the_same_board(tmp_path):
    registry = _registry(f"sqlite:///{tmp_path / 'registry.db'}")
    now = [EVALUATED]
    store = ParquetStore(str(tmp_path / "storage"), clock=lambda: now[0])
    _write_results(store, {"m@v1": 3, "m@v2": 1})
    shown = _board(store, registry, DAY)
    assert shown["model_version"].to_pylist() == ["m@v1", "m@v2"]

    now[0] = REEVALUATED  # the next morning, both versions are evaluated again
    _write_results(store, {"m@v1": 0, "m@v2": 4})
    assert _board(store, registry, DAY).equals(shown)
    today = _board(store, registry, NEXT_DAY)
    assert today["model_version"].to_pylist() == ["m@v2", "m@v1"]
    assert today["mean_score"].to_pylist() == [1.0, 0.0]
    # The latest copies are what ordinary reads see.
    latest = store.read("metric_tables", {"model_version": "m@v2", "scenario": "arithmetic"})
    assert latest["mean"].to_pylist() == [1.0]


def test_partitions_first_written_after_a_day_are_not_on_its_board(tmp_path):
    registry = _registry(f"sqlite:///{tmp_path / 'registry.db'}")
    now = [EVALUATED]
    store = ParquetStore(str(tmp_path / "storage"), clock=lambda: now[0])
    _write_results(store, {"m@v1": 2})
    now[0] = REEVALUATED
    _write_results(store, {"m@v2": 4})
    assert _board(store, registry, DAY)["model_version"].to_pylist() == ["m@v1"]
    assert _board(store, registry, NEXT_DAY)["model_version"].to_pylist() == ["m@v2", "m@v1"]
    with pytest.raises(ValueError, match="no metric tables"):
        _board(store, registry, "2026-11-09")
    with pytest.raises(ValueError, match="2026-13-01"):
        end_of_day("2026-13-01")


def test_history_names_a_stray_file(tmp_path):
    store = ParquetStore(str(tmp_path), clock=lambda: EVALUATED)
    _write_results(store, {"m@v1": 2})
    stray = tmp_path / "_history" / "metric_tables" / "model_version=m@v1" / "scenario=arithmetic"
    (stray / "not-a-stamp.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"not-a-stamp\.parquet"):
        store.read_all_as_of("metric_tables", end_of_day(DAY))


def test_the_rankings_asset_rebuilds_a_past_day_identically(tmp_path, monkeypatch):
    """Through Dagster: the rankings partition of a day, rematerialized after new results."""
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    _registry(registry_url)
    storage_url = str(tmp_path / "storage")
    store = ParquetStore(storage_url)
    now = [EVALUATED]
    monkeypatch.setattr(parquet_module, "utc_now", lambda: now[0])
    _write_results(store, {"m@v1": 3, "m@v2": 1})
    resources = assay_resources(
        storage_url=storage_url, registry_url=registry_url, suite=SuiteResource()
    )

    def rank(day: str) -> pa.Table:
        result = materialize(
            all_assets,
            selection=AssetSelection.assets("rankings"),
            partition_key=day,
            instance=instance,
            resources=resources,
        )
        assert result.success
        return store.read("rankings", {"day": day})

    with instance_for_test() as instance:
        shown = rank(DAY)
        assert shown["model_version"].to_pylist() == ["m@v1", "m@v2"]
        now[0] = REEVALUATED
        _write_results(store, {"m@v1": 0, "m@v2": 4})
        assert rank(DAY).equals(shown)
        assert rank(NEXT_DAY)["model_version"].to_pylist() == ["m@v2", "m@v1"]
