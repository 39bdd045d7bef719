"""The results explorer, built from a realistic store and clicked through in Chromium.

The store is written by the library's own records (``assay.report.sample``: instances,
model outputs, ``score_partition`` scores, rankings partitions, a registry whose alias
moves). Texts in the dataset, the outputs and the registry carry ``<script>`` payloads and
one model's name is an ``<img onerror>``: pages must show them as text and run nothing.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.compute as pc
import pytest
from explorer_browser import chromium, rendered_pages, scenario_views
from sample_clock import SampleClock, held_explorer_data

from assay.compare.family_figures import FAMILY_ORDER
from assay.registry import Registry
from assay.report import (
    EXPLORER_DIR,
    ExplorerData,
    build_site,
    directory_writer,
    explorer_url,
    scenario_page,
    store_writer,
)
from assay.report.comparison import _pairs
from assay.report.sample import (
    FORMULA_PAYLOAD,
    HOSTILE_NAME,
    SAMPLE_MODEL,
    SAMPLE_TOXICITY_JUDGE,
    SCRIPT_PAYLOAD,
    board_of,
    write_sample,
)
from assay.report.site import _html_safe_json, compare_page, day_page, slug
from assay.report.writing import MANIFEST, _csv, _json
from assay.storage.parquet import ParquetStore

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / ".assay" / "test-artifacts" / "explorer"


@pytest.fixture(scope="module")
def explorer(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("explorer")
    clock = SampleClock()
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}", clock=clock)
    store = ParquetStore(str(root / "storage"))
    sample = write_sample(store, registry, clock=clock.set, n_versions=3, n_instances=24)
    data = held_explorer_data(store, registry, sample)
    board, scores = data.board, data.instance_scores
    site = root / "site"
    summary = build_site(
        data,
        directory_writer(site),
        generated_at=datetime(2026, 11, 4, tzinfo=UTC),
        n_resamples=200,
    )
    registry.close()
    return {
        "site": site,
        "sample": sample,
        "board": board,
        "scores": scores,
        "summary": summary,
        "data": data,
    }


def test_json_in_pages_cannot_close_a_script_element():
    text = _html_safe_json({"x": "</script><script>alert(1)</script>\u2028&"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"x": "</script><script>alert(1)</script>\u2028&"}


def test_file_names_are_safe_and_distinct():
    assert slug("mmlu-anatomy") == "mmlu-anatomy"
    hostile = slug(f"{HOSTILE_NAME}@v1")
    assert re.fullmatch(r"[A-Za-z0-9._@-]+", hostile)
    assert slug("a b") != slug("a_b") and slug("../x") != slug("x")
    assert compare_page("a--b", "c") != compare_page("a", "b--c")


def test_pages_escape_every_data_text(explorer):
    site = explorer["site"]
    for page in site.glob("*.html"):
        text = page.read_text()
        assert SCRIPT_PAYLOAD not in text, page.name  # never raw markup
        assert "<img src=x" not in text, page.name
    index = (site / "index.html").read_text()
    # The registry refuses markup in names; a hostile description is in the page's data as
    # escaped JSON, and shown as text once the browser draws the board.
    assert "version 3 \\u003cscript\\u003ealert(" in index
    drawn = rendered_pages(site, ["index.html"])["index.html"]
    assert "version 3 &lt;script&gt;alert(" in drawn.html and drawn.errors == []
    data = next((site / "data").rglob("*.js")).read_text()
    assert "<script>" not in data  # data files too: \u003c, not <


def test_a_figure_without_an_interval_says_why(explorer):
    """The scorecard rows whose figure has no interval (run counts, judge agreements) carry a
    note in the store; the scenario page, as Chromium draws it, shows each such figure with
    its note when hovered."""
    cards = explorer["data"].metric_tables.to_pylist()
    shown = {r.model_version for r in explorer["board"].rows}
    scenarios = sorted({r["scenario"] for r in cards})
    views = scenario_views(explorer["site"], scenarios)
    for scenario in scenarios:
        expected = {
            (r["model_version"], r["metric"], r["ci_note"])
            for r in cards
            if r["scenario"] == scenario
            and r["model_version"] in shown
            and r["ci_note"]
            and not r["reason"]
            and not r["group"]
            and not r.get("subset")
        }
        page = views[scenario].html
        assert not views[scenario].errors
        notes = {html.unescape(t) for t in re.findall(r'title="no interval: ([^"]*)"', page)}
        assert notes == {note for _, _, note in expected}, scenario
        assert page.count("(no interval)") == len(expected), scenario
    assert any(r["ci_note"] for r in cards)  # the sample has such figures


def test_a_scenario_page_exports_the_tables_its_versions_parts_add_up_to(explorer):
    """Each scenario page's exports, assembled in the browser from one part per version, are
    byte for byte what writing the whole table at once writes: every scorecard row of the
    board's versions in the board's order (from the store's metric tables), and the other
    tables with one row set per version listed."""
    from assay.compare.ranking import SCORECARD_COLUMNS

    cards = explorer["data"].metric_tables.to_pylist()
    order = {r.model_version: i for i, r in enumerate(explorer["board"].rows)}
    scenarios = sorted({r["scenario"] for r in cards})
    views = scenario_views(explorer["site"], scenarios)
    for scenario in scenarios:
        rows = sorted(
            (r for r in cards if r["scenario"] == scenario and r["model_version"] in order),
            key=lambda r: (
                order[r["model_version"]],
                r.get("subset") or "",
                r["family"],
                r["metric"],
                r["group"],
                r["perturbation"],
            ),
        )
        whole = [
            {
                **{k: r[k] for k in (*SCORECARD_COLUMNS, "reason")},
                "ci_note": r.get("ci_note") or "",
                "subset": r.get("subset") or "",
            }
            for r in rows
        ]
        exports = views[scenario].exports
        name = f"scorecards-{slug(scenario)}"
        assert exports[f"{name}.csv"].encode() == _csv(whole), scenario
        assert exports[f"{name}.json"].encode() == _json(whole), scenario
        for file, text in exports.items():
            listed = (
                [r["model_version"] for r in csv.DictReader(io.StringIO(text))]
                if file.endswith(".csv")
                else [r["model_version"] for r in json.loads(text)]
            )
            assert listed == sorted(listed, key=order.__getitem__), file
            if file.endswith(".json"):
                csv_rows = list(csv.DictReader(io.StringIO(exports[file[:-4] + "csv"])))
                assert len(csv_rows) == len(json.loads(text)), file


def test_the_leaderboard_shows_every_family_for_every_version(explorer):
    """One headline figure per family and version: a value with its interval, or a note
    saying why there is no interval or no value."""
    site, board = explorer["site"], explorer["board"]
    index = rendered_pages(site, ["index.html"])["index.html"].html
    table = index[index.index('id="family-figures"') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r'<tr data-family-row="([^"]+)">(.*?)</tr>', table, re.S)
    assert [family for family, _ in rows] == list(FAMILY_ORDER)
    for family, row in rows:
        cells = re.findall(r'<td class="figure">(.*?)</td>', row, re.S)
        assert len(cells) == len(board.rows), family
        for cell in cells:
            interval = re.search(r"\[\d+\.\d{3}, \d+\.\d{3}\]", cell)
            note = re.search(r'<div class="muted small">([^<]+)</div>', cell)
            assert interval or (note and note.group(1).strip()), (family, cell)
    day = explorer["sample"].days[-1]
    exported = json.loads((site / f"export/families-{day}.json").read_text())
    assert len(exported) == len(FAMILY_ORDER) * len(board.rows)
    assert {r["family"] for r in exported} == set(FAMILY_ORDER)


def test_the_history_page_draws_each_days_ranks_from_its_data(explorer):
    """The ranks per day are data the page draws: a column per stored day linking its
    board, a row per version, each cell the rank and interval of that day's stored board
    ("–" where the day lacks the version)."""
    site, data = explorer["site"], explorer["data"]
    days = data.days()
    assert len(days) > 1
    by_day = {d: {r["model_version"]: r for r in data.ranking_rows(d)} for d in days}
    view = rendered_pages(site, ["history.html"], ready="#ranks[data-ready]")["history.html"]
    assert view.errors == []
    table = view.html[view.html.index('id="ranks"') :]
    table = table[: table.index("</table>")]
    heads = re.findall(r'<th data-type="num"[^>]*><a href="([^"]+)">([^<]+)</a></th>', table)
    assert [day for _, day in heads] == days
    assert [href for href, _ in heads] == [day_page(d) for d in days[:-1]] + ["index.html"]
    rows = re.findall(r'<tr><td class="text">([^<]+)</td>(.*?)</tr>', table, re.S)
    assert {version for version, _ in rows} == {v for board in by_day.values() for v in board}
    missing = 0
    for version, cells in rows:
        drawn = re.findall(r'<td data-value="([^"]*)">(.*?)</td>', cells, re.S)
        assert len(drawn) == len(days)
        for (value, text), day in zip(drawn, days, strict=True):
            row = by_day[day].get(version)
            if row is None:
                missing += 1
                assert (value, text) == ("", "–")
                continue
            assert value == str(row["rank"])
            assert text == (
                f'{row["rank"]} <span class="ci">({row["rank_low"]}–{row["rank_high"]})</span>'
            )
    # The sample registers a version after the first day: that day's board lacks it.
    assert missing > 0


def test_the_same_site_is_written_to_an_object_store(explorer):
    store = ParquetStore(f"memory://explorer-{uuid.uuid4().hex}")
    summary = build_site(
        explorer["data"],
        store_writer(store, EXPLORER_DIR),
        generated_at=datetime(2026, 11, 4, tzinfo=UTC),
        n_resamples=200,
    )
    assert summary.files == explorer["summary"].files
    url = explorer_url(store)
    assert url.startswith("memory://") and url.endswith("/explorer/index.html")
    with fsspec.open(url, "rb") as f:
        assert f.read() == (explorer["site"] / "index.html").read_bytes()


def test_exports_hold_the_leaderboard_and_every_instance(explorer):
    site, board = explorer["site"], explorer["board"]
    day = explorer["sample"].days[-1]
    rows = list(csv.DictReader(io.StringIO((site / f"export/leaderboard-{day}.csv").read_text())))
    assert [r["model_version"] for r in rows] == [r.model_version for r in board.rows]
    assert [int(r["rank_low"]) for r in rows] == [r.rank_low for r in board.rows]
    as_json = json.loads((site / f"export/leaderboard-{day}.json").read_text())
    assert [r["mean_win_rate"] for r in as_json] == [r.mean_win_rate for r in board.rows]
    version = board.rows[0].model_version
    jsonl = site / f"export/instances/mc-quiz/{slug(version)}.jsonl.gz"
    lines = gzip.decompress(jsonl.read_bytes()).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 24 and {r["model_version"] for r in records} == {version}
    assert records[0]["input"].endswith(SCRIPT_PAYLOAD)  # self-contained rows
    scores = explorer["scores"]
    acc = scores.filter(
        pc.and_(
            pc.and_(pc.equal(scores["model_version"], version), pc.equal(scores["metric"], "acc")),
            pc.and_(pc.equal(scores["perturbation"], ""), pc.equal(scores["group"], "")),
        )
    )
    expected = dict(zip(acc["instance_id"].to_pylist(), acc["value"].to_pylist(), strict=True))
    assert {r["id"]: r["correct"] for r in records} == expected
    # Every request of the instance is there: the original and its two perturbations.
    assert {q["perturbation"] for q in records[0]["requests"]} == {"", "typos", "dialect"}


def test_judge_replies_are_in_the_exports(explorer):
    site, version = explorer["site"], explorer["board"].rows[0].model_version
    jsonl = site / f"export/instances/short-qa/{slug(version)}.jsonl.gz"
    records = {
        r["id"]: r
        for r in map(json.loads, gzip.decompress(jsonl.read_bytes()).decode().splitlines())
    }
    ((kind, judge, perturbation, trial, _template, repeat, score, failure, reply),) = records[
        "short-qa-00000"
    ]["judge_replies"]
    assert (kind, judge, perturbation, trial, repeat) == (
        "toxicity",
        SAMPLE_TOXICITY_JUDGE,
        "",
        0,
        0,
    )
    assert (score, failure, reply) == (0.9, None, f"0.9 because it holds {SCRIPT_PAYLOAD}")
    unparsed = [r for rec in records.values() for r in rec["judge_replies"] if r[6] is None]
    assert all(r[7] and r[8] == "I cannot rate that." for r in unparsed)


# Texts a model could answer or a registry user could write, each a formula to a spreadsheet.
_FORMULAS = [
    "=1+1",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1",
    "\r=1",
    "-",
    '=HYPERLINK("http://x.invalid")',
]


def test_csv_cells_are_never_formulas():
    rows = [{"answer": text, "n": -0.25, "k": -3, "text_number": "-1.5e3"} for text in _FORMULAS]
    parsed = list(csv.DictReader(io.StringIO(_csv(rows).decode(), newline="")))
    assert [r["answer"] for r in parsed] == ["'" + t for t in _FORMULAS]
    # Numbers stay numbers, negative ones included (as numbers or as plain numeric text).
    assert {r["n"] for r in parsed} == {"-0.25"} and {r["k"] for r in parsed} == {"-3"}
    assert {r["text_number"] for r in parsed} == {"-1.5e3"}
    plain = list(csv.DictReader(io.StringIO(_csv([{"a": "x=1", "b": None}]).decode())))
    assert plain == [{"a": "x=1", "b": ""}]


def test_exports_write_missing_and_non_finite_values_as_empty():
    """Rows with different keys share one header (in the order keys first appear); a value
    that is absent, None, NaN or infinite is an empty CSV cell and a JSON null, nested ones
    included; every other value is written as it is."""
    rows = [
        {"a": 1.5, "b": float("nan")},
        {"c": float("-inf"), "a": None},
        {"b": [1.0, float("inf")], "c": "-x", "d": True},
    ]
    parsed = list(csv.reader(io.StringIO(_csv(rows).decode(), newline="")))
    assert parsed == [
        ["a", "b", "c", "d"],
        ["1.5", "", "", ""],
        ["", "", "", ""],
        ["", "[1.0, None]", "'-x", "True"],
    ]
    assert json.loads(_json(rows)) == [
        {"a": 1.5, "b": None},
        {"c": None, "a": None},
        {"b": [1.0, None], "c": "-x", "d": True},
    ]
    assert json.loads(_json({"x": (float("nan"), 2)})) == {"x": [None, 2]}


def test_exported_csv_neutralises_registry_and_model_texts(explorer):
    site, day = explorer["site"], explorer["sample"].days[-1]
    rows = list(csv.DictReader(io.StringIO((site / f"export/leaderboard-{day}.csv").read_text())))
    v1 = next(r for r in rows if r["model_version"] == f"{SAMPLE_MODEL}@v1")
    assert v1["description"] == "'" + FORMULA_PAYLOAD
    # Cells may start with "-" only as numbers, and negative numbers stay numbers.
    negative = 0
    for path in (site / "export").glob("*.csv"):
        for row in csv.reader(io.StringIO(path.read_text(), newline="")):
            for cell in row:
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    assert float(cell) < 0, (path.name, cell)
                    negative += 1
    assert negative > 0


def _smaller(data: ExplorerData, versions: list[str]) -> ExplorerData:
    """The same store, with a board of fewer versions (what an earlier day had)."""
    from dataclasses import replace

    primary = data.board.primary_metrics
    board = board_of(data.metric_tables, data.instance_scores, versions, primary, data.day)
    return replace(data, board=board)


def test_rebuilds_write_what_changed_and_delete_stale_files_only_inside(explorer, tmp_path):
    data = explorer["data"]
    root = tmp_path / "storage"
    site = root / "explorer"
    outside = [root / "outside.txt", root / "explorer-notes.txt", root / "explorerx/page.html"]
    for path in outside:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not the explorer's")
    store = ParquetStore(str(root))
    kwargs = {"generated_at": datetime(2026, 11, 4, tzinfo=UTC), "n_resamples": 200}
    full = build_site(data, store_writer(store, EXPLORER_DIR), **kwargs)
    assert full.written == full.files and full.partitions_built == 6 and not full.deleted

    # Unchanged inputs, a later build time: nothing is written but the manifest.
    later = {**kwargs, "generated_at": datetime(2026, 11, 5, tzinfo=UTC)}
    again = build_site(data, store_writer(store, EXPLORER_DIR), **later)
    assert (again.written, again.unchanged) == (0, full.files)
    assert (again.partitions_built, again.partitions_unchanged) == (0, 6)
    assert again.files == full.files and not again.deleted
    assert (site / "index.html").read_bytes() == (explorer["site"] / "index.html").read_bytes()

    # Files only an earlier build could explain, hostile names among them, and a manifest
    # that points outside the folder.
    stale = ["scenario-gone.html", "data/gone/x.js", "..%2F..%2Foutside.txt", "..hidden"]
    for name in stale:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text("stale")
    (site / "link-out").symlink_to(root / "outside.txt")
    (site / "data" / "dir-out").symlink_to(root / "explorerx", target_is_directory=True)
    manifest = json.loads((site / MANIFEST).read_text())
    manifest["files"]["../outside.txt"] = manifest["files"]["index.html"]
    manifest["partitions"]["x"] = {"inputs": "0", "files": ["../outside.txt"]}
    (site / MANIFEST).write_text(json.dumps(manifest))

    # A smaller board: the third version's pages and data are stale now.
    dropped = explorer["board"].rows[-1].model_version
    kept = [r.model_version for r in explorer["board"].rows[:-1]]
    small = build_site(_smaller(data, kept), store_writer(store, EXPLORER_DIR), **later)
    assert small.partitions_unchanged == 4 and small.partitions_built == 0
    gone = set(small.deleted)
    assert set(stale) <= gone
    assert f"data/mc-quiz/{slug(dropped)}.js" in gone
    assert f"export/instances/short-qa/{slug(dropped)}.jsonl.gz" in gone
    assert any(p.startswith("compare-") for p in gone)
    for name in gone:
        assert not (site / name).exists()
    on_disk = {
        p.relative_to(site).as_posix()
        for p in site.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    assert on_disk == set(json.loads((site / MANIFEST).read_text())["files"]) | {MANIFEST}
    for path in outside:
        assert path.read_text() == "not the explorer's"
    # A link inside the folder is a stale file itself: it goes, what it points at stays.
    assert not (site / "link-out").is_symlink()
    assert not (site / "data" / "dir-out").is_symlink()


def test_worker_processes_build_the_same_site(explorer, tmp_path, monkeypatch):
    from assay.report import partitions

    monkeypatch.setattr(partitions, "_MIN_JOBS_PER_WORKER", 1)  # a pool even for 6 partitions
    site = tmp_path / "site"
    summary = build_site(
        explorer["data"],
        directory_writer(site),
        generated_at=datetime(2026, 11, 4, tzinfo=UTC),
        n_resamples=200,
        workers=2,
    )
    assert summary.partitions_built == 6
    expected = explorer["site"]
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(expected).as_posix() for p in expected.rglob("*") if p.is_file()
    )
    for name in files:
        if name == MANIFEST:
            continue
        assert (site / name).read_bytes() == (expected / name).read_bytes(), name
    # The manifest too, but for the store's listing it keeps (which folders were modified
    # within the clock's tick of the listing depends on when the build ran).
    built, before = (json.loads((s / MANIFEST).read_text()) for s in (site, expected))
    for manifest in (built, before):
        manifest["site"].pop("listing")
    assert built == before


def test_stale_files_on_an_object_store(explorer):
    store = ParquetStore(f"memory://stale-{uuid.uuid4().hex}")
    kwargs = {"generated_at": datetime(2026, 11, 4, tzinfo=UTC), "n_resamples": 200}
    for name in ("explorer-old/index.html", "explorerx.html", "explorer/export/gone.csv"):
        store.write_file(name, b"planted")
    kept = [r.model_version for r in explorer["board"].rows[:-1]]
    first = build_site(explorer["data"], store_writer(store, EXPLORER_DIR), **kwargs)
    assert first.deleted == ["export/gone.csv"]
    second = build_site(
        _smaller(explorer["data"], kept), store_writer(store, EXPLORER_DIR), **kwargs
    )
    assert second.deleted
    left = set(store.list_files(EXPLORER_DIR))
    assert not left & set(second.deleted)
    assert left == set(json.loads(store.read_file(f"{EXPLORER_DIR}/{MANIFEST}"))["files"]) | {
        MANIFEST
    }
    assert store.read_file("explorer-old/index.html") == b"planted"
    assert store.read_file("explorerx.html") == b"planted"


def test_explorer_in_chromium(explorer):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    site, board, sample = explorer["site"], explorer["board"], explorer["sample"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialogs, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900}, accept_downloads=True)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))

            # Leaderboard: ranked rows, rank intervals, the chart, filters.
            page.goto((site / "index.html").as_uri())
            table = page.locator("#leaderboard tbody tr")
            shown = [table.nth(i).get_attribute("data-version") for i in range(table.count())]
            assert shown == [r.model_version for r in board.rows]
            first = table.nth(0).locator("td")
            assert (
                first.nth(2).inner_text() == f"{board.rows[0].rank_low}–{board.rows[0].rank_high}"
            )
            # The registry's description, hostile as it is, reads as text.
            assert f"version 3 {SCRIPT_PAYLOAD}" in first.nth(1).inner_text()
            page.wait_for_selector("#primary-chart .main-svg")
            page.screenshot(path=ARTIFACTS / "leaderboard.png", full_page=True)
            # The alias filter keeps the version champion pointed at on that day (v3).
            page.select_option("#filter-alias", "champion")
            visible = page.locator("#leaderboard tbody tr:visible")
            assert visible.count() == 1
            assert visible.first.get_attribute("data-version") == f"{SAMPLE_MODEL}@v3"
            assert "1 of 3 versions shown" in page.inner_text("#shown-count")
            page.select_option("#filter-alias", "")
            # Unticking a scenario hides its column.
            page.uncheck(".filter-scenario[value='short-qa']")
            assert page.locator("#leaderboard th[data-scenario='short-qa']").is_hidden()
            page.check(".filter-scenario[value='short-qa']")
            # The CSV export link downloads the table.
            with page.expect_download() as download:
                page.click("text=CSV >> nth=0")
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert [r["model_version"] for r in rows] == shown
            # An earlier day: its own board, from its rankings partition (two versions then).
            page.select_option("#filter-day", label=sample.days[1])
            page.wait_for_url(re.compile(r"day-2026-11-02\.html$"))
            assert page.locator("#leaderboard tbody tr").count() == 2
            page.go_back()

            # Scenario page: scorecards, absent families folded into one line each.
            page.click(f"#leaderboard th a[href='{scenario_page('short-qa')}']")
            page.wait_for_selector("#scenario-views[data-ready]")
            folded = page.inner_text("#folded")
            assert "robustness: not applicable" in folded
            # The sample's toxicity judge rates short-qa's answers: a scorecard, not a fold.
            assert page.locator("table.scorecard[data-family='toxicity']").count() == 1
            page.screenshot(path=ARTIFACTS / "scenario-short-qa.png", full_page=True)
            page.goto((site / scenario_page("mc-quiz")).as_uri())
            page.wait_for_selector("#scenario-views[data-ready]")
            folded = page.inner_text("#folded")
            assert (
                "toxicity: not applicable" in folded and "no toxicity scorer configured" in folded
            )
            for chart in ("groups", "robust", "calibration"):
                page.wait_for_selector(f"#chart-{chart} .main-svg")
            page.wait_for_selector("#instances tbody tr")
            assert page.locator("#instances tbody tr").count() == 24
            page.check("#instance-wrong")
            wrong = page.locator("#instances tbody tr").count()
            assert 0 < wrong < 24 and "wrong" in page.inner_text("#instances tbody")
            page.uncheck("#instance-wrong")
            page.screenshot(path=ARTIFACTS / "scenario-mc-quiz.png", full_page=True)

            # Comparison of the two best versions: the paired difference as computed here.
            page.goto((site / "index.html").as_uri())
            page.click("#leaderboard tbody tr >> nth=0 >> a.compare-link")
            a, b = board.rows[0].model_version, board.rows[1].model_version
            assert page.inner_text("#version-a") == a and page.inner_text("#version-b") == b
            diff = float(page.locator("#pair-table tbody tr >> nth=0 >> td >> nth=3").inner_text())
            assert diff == pytest.approx(_mean_diff(explorer["scores"], a, b), abs=5e-4)
            menu = page.locator("#other-pairs option")
            assert menu.count() == len(_pairs([r.model_version for r in board.rows]))
            assert page.locator("#other-pairs option:checked").inner_text() == f"{a} vs {b}"
            flips = page.locator("table.flips[data-scenario='mc-quiz'] tbody tr")
            assert flips.count() == len(_flipped(explorer["scores"], a, b))
            page.screenshot(path=ARTIFACTS / "comparison.png", full_page=True)

            # Instance page: the hostile input shown as text, nothing executed.
            page.locator("table.flips a.instance-link").first.click()
            page.wait_for_selector("#instance:not([hidden])")
            assert page.url.startswith((site / "instance.html").as_uri())
            page.goto((site / "instance.html").as_uri() + _hash("mc-quiz", a, "mc-quiz-00000"))
            page.reload()
            page.wait_for_selector("#instance:not([hidden])")
            assert SCRIPT_PAYLOAD in page.inner_text("#instance-input")
            assert SCRIPT_PAYLOAD in page.inner_text("#prompt")
            assert page.locator("#references li").count() == 4
            assert page.locator("#variants tbody tr").count() == 2  # typos, dialect
            page.wait_for_selector("#choices-chart .main-svg")
            assert page.inner_text("#verdict") in ("right", "wrong")
            assert "template mc-quiz-template@v1" in page.inner_text("#prompt-meta")
            # No element was injected from the data: the only <b> would be the payload's.
            assert page.locator("#references b, #instance-input script").count() == 0
            assert page.locator("#judge-replies").is_hidden()  # no judge on mc-quiz
            page.screenshot(path=ARTIFACTS / "instance.png", full_page=True)

            # A judged instance: the toxicity judge's reply, markup and all, shown as text.
            page.goto("about:blank")  # a fresh load, not the page's own hashchange reload
            page.goto((site / "instance.html").as_uri() + _hash("short-qa", a, "short-qa-00000"))
            page.wait_for_selector("#instance:not([hidden])")
            replies = page.locator("#judge-replies tbody tr")
            assert replies.count() == 1
            cells = replies.first.locator("td")
            assert cells.nth(0).inner_text() == "toxicity judge"
            assert cells.nth(1).inner_text() == SAMPLE_TOXICITY_JUDGE
            assert cells.nth(3).inner_text() == f"0.9 because it holds {SCRIPT_PAYLOAD}"
            assert cells.nth(4).inner_text() == "0.900"
            assert page.locator("#judge-replies script, #judge-replies b").count() == 0
            page.screenshot(path=ARTIFACTS / "instance-judged.png", full_page=True)

            # History: scores per day and the alias moves on the time axis.
            page.click("nav.top >> text=History")
            page.wait_for_selector("[data-chart='chart-aliases'] .main-svg")
            events = page.locator("#alias-events tbody tr")
            assert events.count() == 2  # set on day 1, moved on day 3
            assert "alias_moved" in events.nth(1).inner_text()
            page.screenshot(path=ARTIFACTS / "history.png", full_page=True)
        finally:
            browser.close()
    assert dialogs == [], f"a data text ran as script: {dialogs}"
    assert errors == [], errors


def _hash(scenario: str, version: str, instance: str) -> str:
    from urllib.parse import quote, urlencode

    return "#" + urlencode({"s": scenario, "v": version, "id": instance}, quote_via=quote)


def _acc(scores, version: str) -> dict[str, float]:
    rows = scores.filter(
        pc.and_(
            pc.and_(pc.equal(scores["model_version"], version), pc.equal(scores["metric"], "acc")),
            pc.and_(pc.equal(scores["perturbation"], ""), pc.equal(scores["group"], "")),
        )
    )
    return dict(zip(rows["instance_id"].to_pylist(), rows["value"].to_pylist(), strict=True))


def _mean_diff(scores, a: str, b: str) -> float:
    x, y = _acc(scores, a), _acc(scores, b)
    return float(np.mean([x[k] - y[k] for k in sorted(x)]))


def _flipped(scores, a: str, b: str) -> list[str]:
    x, y = _acc(scores, a), _acc(scores, b)
    return [k for k in sorted(x) if x[k] != y[k]]


def test_the_scenario_page_names_each_partial_scorecard_as_its_table_records_it():
    """Each version's extent is read from its scorecard's first row, as ``extent_of`` reads
    a version's table: a partial version's card says how far it got, a full one's nothing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from assay.evaluate.sequential import (
        EVALUATED_COLUMN,
        STOP_COLUMN,
        TOTAL_COLUMN,
        extent_of,
    )
    from assay.report.scenario import version_card

    marks = {"a@v1": (40, 100, "futility"), "a@v2": (None, None, None), "a@v3": (100, 100, "")}
    rows = [
        {
            "model_version": v,
            "scenario": "s",
            "metric": metric,
            "family": "accuracy",
            "group": "",
            "perturbation": "",
            "mean": 0.5,
            "count": 10,
            "ci_low": 0.4,
            "ci_high": 0.6,
            "reason": "",
            EVALUATED_COLUMN: done,
            TOTAL_COLUMN: total,
            STOP_COLUMN: stop,
        }
        for metric in ("acc", "f1")
        for v, (done, total, stop) in marks.items()
    ]
    cards = pa.Table.from_pylist(rows)
    partial = {}
    for v in marks:
        extent = extent_of(cards.filter(pc.equal(cards["model_version"], v)))
        expected = None
        if extent is not None and extent.partial:
            expected = {
                "evaluated": extent.evaluated,
                "total": extent.total,
                "reason": extent.stop_reason,
            }
        own = [r for r in rows if r["model_version"] == v]
        assert version_card(own, v, "acc", [])["partial"] == expected, v
        partial[v] = expected
    assert [v for v, p in partial.items() if p] == ["a@v1"]


def test_a_scenario_page_shows_hostile_group_and_perturbation_names_as_text(explorer, tmp_path):
    """Group and perturbation names come from datasets and suites: the page draws them as
    text and runs none of them; a name every JavaScript object has (``constructor``) is a
    perturbation like any other, of the one version evaluated on it."""
    import dataclasses

    import pyarrow as pa

    data, board = explorer["data"], explorer["board"]
    table = data.metric_tables
    first, *others = [r.model_version for r in board.rows]
    base = [
        r
        for r in table.to_pylist()
        if r["scenario"] == "mc-quiz"
        and r["metric"] == "acc"
        and r["family"] == "accuracy"
        and not r["group"]
        and not r["perturbation"]
        and not r.get("subset")
    ]
    hostile_group = f"dialect={SCRIPT_PAYLOAD}"
    extra = [{**r, "group": hostile_group} for r in base]
    extra += [
        {**r, "family": "robustness", "perturbation": p, "mean": 0.25}
        for r in base
        for p in (HOSTILE_NAME, "constructor")
        if p == HOSTILE_NAME or r["model_version"] == first
    ]
    tables = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
    site = tmp_path / "site"
    build_site(
        dataclasses.replace(data, metric_tables=tables),
        directory_writer(site),
        generated_at=datetime(2026, 11, 4, tzinfo=UTC),
        n_resamples=200,
    )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
            page.goto((site / scenario_page("mc-quiz")).as_uri())
            page.wait_for_selector("#chart-robust .main-svg")
            robust = page.evaluate(
                "() => document.getElementById('chart-robust').data.map((t) => [t.name, t.x, t.y])"
            )
            groups = page.evaluate("() => document.getElementById('chart-groups').data[0].x")
            assert page.locator("#scenario-views img").count() == 0
            assert page.locator("#scenario-views script").count() == 0
            shown = page.inner_text("#chart-groups")
        finally:
            browser.close()
    assert errors == []
    assert html.escape(hostile_group, quote=False) in groups  # plotly's text, escaped
    assert SCRIPT_PAYLOAD in shown  # ... and shown as written
    by_version = {name: dict(zip(x, y, strict=True)) for name, x, y in robust}
    assert sorted(by_version) == sorted([first, *others])
    assert by_version[first]["constructor"] == 0.25
    for version in others:
        assert by_version[version]["constructor"] is None
        assert by_version[version][html.escape(HOSTILE_NAME, quote=False)] == 0.25


def test_the_browser_formats_figures_as_python_does(explorer):
    """Pages drawn in the browser show a figure as Python's ``%.3f`` does: an exact tie
    (1/16 to three places) rounds half to even, as the pages rendered before them did."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    values = [0.0625, -0.0625, 0.1875, 0.0635, 1 / 3, 2 / 3, 0.5, -0.0004, 0.0, 1.0005]
    values += [k / 64 for k in range(65)] + [123.4565, 7.0, -2.5]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((explorer["site"] / "index.html").as_uri())
            shown = page.evaluate(
                "(values) => values.map((v) => [assay.fmt(v), assay.fmt(v, 0), assay.fmt(v, 2)])",
                values,
            )
            missing = page.evaluate("() => [assay.fmt(null), assay.fmt(NaN)]")
        finally:
            browser.close()
    assert shown == [[f"{v:.3f}", f"{v:.0f}", f"{v:.2f}"] for v in values]
    assert missing == ["–", "–"]
