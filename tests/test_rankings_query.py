"""The board read through DuckDB (``leaderboard_of_day``) is the board of the in-memory read
(``leaderboard_as_of`` over ``StoredResults.of_day``, the implementation before it), to the
last digit, on a stored history: past days and today, full and clean subsets, local and
``memory://`` stores."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from assay.compare.standings import StoredResults, leaderboard_as_of, leaderboard_of_day
from assay.contamination.clean import contamination_rows
from assay.contamination.subsets import TABLE_SCHEMA, Contamination
from assay.core.records import InstanceStat
from assay.evaluate.suite import parse_suite
from assay.registry import Registry
from assay.scoring.summary import scorecard, scorecard_table
from assay.storage.parquet import ParquetStore
from assay.storage.query import TablesAsOf

DAYS = ("2026-11-10", "2026-11-11", "2026-11-12")
IDS = [f"i{i:02d}" for i in range(12)]
SCENARIOS = {"quiz": "acc", "sums": "exact_match", "facts": "acc"}


def _at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, 9 + day, hour, tzinfo=UTC)


# (when, version, scenario, seed): the writes, in order. Day 1 evaluates v1, v2 and part of
# v3; day 2 re-evaluates v1 on quiz and finishes v3; day 3 evaluates v4 and re-evaluates v2.
WRITES = [
    (_at(1, 15), "m@v1", "quiz", 1),
    (_at(1, 15), "m@v1", "sums", 2),
    (_at(1, 15), "m@v1", "facts", 3),
    (_at(1, 16), "m@v2", "quiz", 4),
    (_at(1, 16), "m@v2", "sums", 5),
    (_at(1, 16), "m@v2", "facts", 6),
    (_at(1, 20), "m@v3", "quiz", 7),
    (_at(2, 8), "m@v1", "quiz", 8),
    (_at(2, 9), "m@v3", "sums", 9),
    (_at(3, 9), "m@v4", "quiz", 10),
    (_at(3, 9), "m@v4", "sums", 11),
    (_at(3, 10), "m@v2", "sums", 12),
]
# Registered: v1, v2 the day before; v3 on day 1; v4 on day 2 (before its results).
REGISTERED = {"m@v1": _at(0, 9), "m@v2": _at(0, 9), "m@v3": _at(1, 8), "m@v4": _at(2, 7)}
# Written by a store without history (its part.parquet counts from its modification time).
NO_HISTORY = (_at(2, 11), "m@v3", "facts", 13)


def _check(version: str, seed: int) -> Contamination | None:
    """v3 is never checked; the others have a few instances flagged."""
    if version == "m@v3":
        return None
    flagged = {IDS[seed % 12], IDS[(seed * 5) % 12]}
    rows = [
        {
            "instance_id": i,
            "detector": "gpt3_13gram",
            "corpus": "web",
            "corpus_digest": "cd" * 32,
            "score": float(i in flagged),
            "flagged": i in flagged,
            "label": "",
            "evidence": "",
        }
        for i in IDS
    ]
    return Contamination.of(pa.Table.from_pylist(rows, schema=TABLE_SCHEMA))


def _results(version: str, scenario: str, seed: int) -> tuple[pa.Table, pa.Table]:
    """One partition's instance scores and scorecard: the primary metric on two trials, its
    perturbed and per-group rows, a lower-is-better figure, and the contamination rows."""
    rng = np.random.default_rng(seed)
    metric = SCENARIOS[scenario]
    stats = []
    for i, instance in enumerate(IDS):
        group = f"lang={'en' if i % 2 else 'fr'}"
        for trial in (0, 1):
            value = float(rng.random() < 0.3 + 0.1 * seed % 5)
            stats.append(InstanceStat(instance, metric, value, trial=trial))
            stats.append(InstanceStat(instance, metric, value, trial=trial, group=group))
        stats.append(InstanceStat(instance, metric, float(rng.random() < 0.4), perturbation="typo"))
        stats.append(InstanceStat(instance, "ece", float(rng.random()), family="calibration"))
    flags, clean = contamination_rows(stats, IDS, _check(version, seed), seed_key=version)
    card = [
        replace(row, lower_is_better=True) if row.metric == "ece" else row
        for row in scorecard(stats, f"{version}/{scenario}")
    ]
    return InstanceStat.to_table(stats + flags), scorecard_table(card + clean)


def _stored(url: str, registry_url: str) -> tuple[ParquetStore, Registry]:
    now = [_at(0, 0)]
    registry = Registry.open(registry_url, clock=lambda: now[0])
    registry.create_model("m")
    for version, when in REGISTERED.items():
        now[0] = when
        registry.create_version("m", f"hf:/m/{version}")
    store = ParquetStore(url, clock=lambda: now[0])
    for when, version, scenario, seed in WRITES:
        now[0] = when
        scores, card = _results(version, scenario, seed)
        where = {"model_version": version, "scenario": scenario}
        store.write("instance_scores", where, scores)
        store.write("metric_tables", where, card)
    when, version, scenario, seed = NO_HISTORY
    plain = ParquetStore(url, history_assets=())
    scores, card = _results(version, scenario, seed)
    where = {"model_version": version, "scenario": scenario}
    for asset, table in (("instance_scores", scores), ("metric_tables", card)):
        plain.write(asset, where, table)
        if store.is_local:
            os.utime(store.path(asset, where), (when.timestamp(), when.timestamp()))
    return store, registry


def _suite(subset: str):
    scenarios = {key: {"scenario": "facts_mc", "primary_metric": m} for key, m in SCENARIOS.items()}
    return parse_suite({"scenarios": scenarios, "rankings": {"subset": subset}}, "s.yaml")


def _same_boards(store: ParquetStore, registry: Registry, day: str, subset: str) -> list[str]:
    suite = _suite(subset)
    reference, ref_cards = leaderboard_as_of(day, StoredResults.of_day(store, day), registry, suite)
    board, cards = leaderboard_of_day(day, store, registry, suite)
    # repr spells every float exactly (NaN included): rows, rank intervals, comparisons,
    # family figures and notes.
    assert repr(board) == repr(reference)
    assert board.to_table().equals(reference.to_table())
    assert board.comparisons_table().equals(reference.comparisons_table())
    assert board.to_markdown() == reference.to_markdown()
    # The metric tables behind it, row for row (repr again: absent figures are NaN).
    assert cards.schema == ref_cards.schema
    assert repr(cards.to_pylist()) == repr(ref_cards.to_pylist())
    return [row.model_version for row in board.rows]


@pytest.mark.parametrize("subset", ["full", "clean"])
def test_the_queried_board_is_the_loaded_board_on_every_day(tmp_path, subset):
    store, registry = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    boards = {day: _same_boards(store, registry, day, subset) for day in DAYS}
    # Versions on each day's board, from WRITES and REGISTERED: day 1 has v1-v3 (v3 on quiz
    # only), day 2 adds nothing new but v3's sums and facts (the latter without history,
    # modified at 11:00), day 3 adds v4.
    assert sorted(boards[DAYS[0]]) == ["m@v1", "m@v2", "m@v3"]
    assert sorted(boards[DAYS[1]]) == ["m@v1", "m@v2", "m@v3"]
    assert sorted(boards[DAYS[2]]) == ["m@v1", "m@v2", "m@v3", "m@v4"]
    with TablesAsOf(store, _at(2, 0)) as tables:
        # v3's facts partition (no history, modified on day 2 at 11:00) is not on day 1.
        assert {"model_version": "m@v3", "scenario": "facts"} not in tables.partitions(
            "metric_tables"
        )
    with TablesAsOf(store, _at(3, 0)) as tables:
        assert {"model_version": "m@v3", "scenario": "facts"} in tables.partitions("metric_tables")


@pytest.mark.parametrize(
    ("batch", "reads"),
    [
        (4, [{"quiz"}, {"sums"}, {"facts"}]),  # 4, 4 and 3 partitions: one scenario a read
        (8, [{"quiz", "sums"}, {"facts"}]),
    ],
)
def test_the_queried_board_reads_a_batch_of_scenarios_at_a_time(
    tmp_path, monkeypatch, batch, reads
):
    from assay.compare import standings

    store, registry = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    seen: list[tuple[set, set, int]] = []
    read = TablesAsOf.read

    def recording(self, asset, pick=None, **options):
        table = read(self, asset, pick, **options)
        if asset == "instance_scores":
            seen.append(
                (set(table["scenario"].to_pylist()), set(table["metric"].to_pylist()), len(table))
            )
        return table

    monkeypatch.setattr(TablesAsOf, "read", recording)
    monkeypatch.setattr(standings, "_BATCH_PARTITIONS", batch)
    leaderboard_of_day(DAYS[2], store, registry, _suite("full"))
    # One read per batch of scenarios in suite order (quiz, sums, facts; partitions as of
    # day 3: 4, 4 and 3), up to ``batch`` partitions each (worker threads may read them in
    # any order), each only its scenarios' primary metrics' unperturbed rows: 4 rows per
    # instance (2 trials, ungrouped and grouped) of each version evaluated on it by day 3.
    rows = {"quiz": 4 * 12 * 4, "sums": 4 * 12 * 4, "facts": 4 * 12 * 3}
    metric = {"quiz": "acc", "sums": "exact_match", "facts": "acc"}
    assert sorted(seen, key=lambda r: sorted(r[0])) == sorted(
        [(r, {metric[s] for s in r}, sum(rows[s] for s in r)) for r in reads],
        key=lambda r: sorted(r[0]),
    )


@pytest.mark.parametrize("subset", ["full", "clean"])
def test_the_board_is_the_same_for_any_number_of_threads(tmp_path, monkeypatch, subset):
    store, registry = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    boards = []
    for threads in ("1", "2", "5"):
        monkeypatch.setenv("ASSAY_RANKINGS_THREADS", threads)
        monkeypatch.setenv("ASSAY_DUCKDB_THREADS", threads)
        board, _ = leaderboard_of_day(DAYS[2], store, registry, _suite(subset))
        boards.append(repr(board))
    assert boards[0] == boards[1] == boards[2]
    assert "Comparison(" in boards[0]  # the paired tests are part of what is compared


@pytest.mark.parametrize(
    ("name", "value", "fault"),
    [
        ("ASSAY_RANKINGS_THREADS", "0", "ASSAY_RANKINGS_THREADS must be a positive integer"),
        ("ASSAY_DUCKDB_THREADS", "two", "ASSAY_DUCKDB_THREADS must be a positive integer"),
        ("ASSAY_DUCKDB_MEMORY_LIMIT", "lots", "memory_limit"),
    ],
)
def test_bad_thread_and_memory_settings_are_named(tmp_path, monkeypatch, name, value, fault):
    store, registry = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=fault):
        leaderboard_of_day(DAYS[2], store, registry, _suite("full"))


def test_a_memory_store_gives_the_same_board(tmp_path):
    url = f"memory://rankings-query-{tmp_path.name}"
    store, registry = _stored(url, f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert sorted(_same_boards(store, registry, DAYS[2], "clean")) == [
            "m@v1",
            "m@v2",
            "m@v3",
            "m@v4",
        ]
    finally:
        store.fs.rm(store.root, recursive=True)


def test_an_unreadable_file_is_named(tmp_path):
    store, _ = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")
    with TablesAsOf(store, _at(4, 0)) as tables:
        (_, path) = next(
            (p, f) for p, f in store.files_as_of("instance_scores", _at(4, 0)) if "m@v4" in f
        )
        with open(path, "wb") as broken:
            broken.write(b"not parquet")
        with pytest.raises(ValueError, match="instance_scores") as error:
            tables.read("instance_scores", lambda p: p["model_version"] == "m@v4")
        assert "m@v4" in str(error.value)


def test_win_rates_and_ranks_by_sorting_equal_a_loop_over_pairs():
    """Win rates and competition ranks count, per resample, the models below and tied by
    sorting: they equal a plain loop over every pair of models, ties and missing values
    included, for higher- and lower-is-better columns."""
    from assay.compare import ranking

    rng = np.random.default_rng(7)
    means = rng.integers(0, 4, size=(30, 6)).astype(float)  # ties on purpose
    means[rng.random(means.shape) < 0.15] = np.nan
    means[0, :2] = [np.inf, -0.0]  # an infinite value; -0.0 ties 0.0
    for lower in (False, True):
        rates = ranking.column_win_rates(means, lower)
        for r, row in enumerate(means):
            present = [j for j in range(6) if not np.isnan(row[j])]
            for i in range(6):
                if i not in present or len(present) < 2:
                    assert np.isnan(rates[r, i])
                    continue
                wins = sum(
                    1.0 if (row[i] < row[j] if lower else row[i] > row[j]) else 0.5
                    for j in present
                    if j != i and (row[i] == row[j] or (row[i] < row[j]) == lower)
                )
                assert rates[r, i] == wins / (len(present) - 1)
    ranks = ranking.competition_ranks(means)
    for r, row in enumerate(means):
        scores = [-np.inf if np.isnan(x) else x for x in row]
        assert list(ranks[r]) == [1 + sum(y > x for y in scores) for x in scores]


def test_row_keys_built_in_arrow_are_numpy_uniques_of_the_python_keys():
    """The pivot's row keys (instance, trial, template, group) built in Arrow: the same
    distinct keys in the same order, and the same row indices, as ``np.unique`` over the keys
    spelled in Python, with non-ASCII ids (Arrow sorts UTF-8 bytes, Python code points),
    negative trials, and nulls (which take the Python spelling, ``None``)."""
    from assay.compare.ranking import _row_keys

    rng = np.random.default_rng(11)
    ids = ["a", "b", "é", "z", "ä1", "\U0001f600", "A", "a\x1fb", "ﬁ", ""]
    n = 400
    table = pa.table(
        {
            "instance_id": [ids[k] for k in rng.integers(0, len(ids), n)],
            "trial": pa.array(rng.integers(-2, 12, n), pa.int32()),
            "template_id": [["", "t1", "t10", "t2"][k] for k in rng.integers(0, 4, n)],
            "group": [["", "lang=fr", "lang=en"][k] for k in rng.integers(0, 3, n)],
        }
    )

    def python(t: pa.Table):
        keys = [
            f"{i}\x1f{tr}\x1f{tp}\x1f{g}"
            for i, tr, tp, g in zip(
                *(t[c].to_pylist() for c in ("instance_id", "trial", "template_id", "group")),
                strict=True,
            )
        ]
        return np.unique(np.asarray(keys, dtype=object), return_inverse=True)

    for t in (table, table.set_column(1, "trial", pa.array([None] + [1] * (n - 1), pa.int32()))):
        uniq, rows = _row_keys(t)
        expected_uniq, expected_rows = python(t)
        assert uniq.dtype == object and list(uniq) == list(expected_uniq)
        assert rows.tolist() == expected_rows.tolist()


def test_a_read_of_many_files_in_parts_is_the_read_in_one_query(tmp_path, monkeypatch):
    """Many files are queried a part at a time: the rows, columns and order are those of one
    query, and where the parts' columns differ (a file written without one) the one query's
    unified columns are returned."""
    import assay.storage.query as query

    store, _ = _stored(str(tmp_path / "storage"), f"sqlite:///{tmp_path / 'r.db'}")

    def reads() -> list[pa.Table]:
        with TablesAsOf(store, _at(4, 0)) as tables:
            return [
                tables.read("metric_tables"),
                tables.read("instance_scores", where="t.perturbation = ''"),
                tables.read("instance_scores", columns=["instance_id", "value"]),
            ]

    def same(a: pa.Table, b: pa.Table) -> bool:  # repr: NaN equals NaN, unlike Arrow's
        return a.schema == b.schema and repr(a.to_pylist()) == repr(b.to_pylist())

    whole = reads()
    monkeypatch.setattr(query, "FILES_PER_QUERY", 3)  # 13 partitions: 5 parts
    assert [same(t, w) for t, w in zip(reads(), whole, strict=True)] == [True] * 3
    # A last partition written without the ``note`` column: its part's columns differ.
    where = {"model_version": "m@v9", "scenario": "quiz"}
    store.write("instance_scores", where, _results("m@v1", "quiz", 1)[0].drop_columns(["note"]))
    monkeypatch.setattr(query, "FILES_PER_QUERY", 1 << 20)
    with TablesAsOf(store, _at(9, 0)) as tables:
        one = tables.read("instance_scores")
    monkeypatch.setattr(query, "FILES_PER_QUERY", 1)  # a part of that file alone
    with TablesAsOf(store, _at(9, 0)) as tables:
        parts = tables.read("instance_scores")
    assert "note" in parts.column_names and same(parts, one)
