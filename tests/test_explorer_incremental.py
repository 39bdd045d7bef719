"""The explorer reads through the query engine and rebuilds only what changed.

A sample store (three versions, one a day, two scenarios) is built from the results queried
as of the board's day (``ExplorerData.of_day``) and compared file by file with a build from
the tables held in memory; rebuilds are checked through the build's counters: nothing
changed renders nothing, one more version renders its own units and the board's pages, and
an incremental site is the site a build from scratch writes. A version compacted by the
retention policy is read from its compacted copies, and the site is the one built before.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from explorer_browser import rendered_pages
from sample_clock import held_explorer_data, sample_store

from assay.report import ExplorerData, build_site, directory_writer
from assay.report.links import compare_page, day_page
from assay.report.sample import board_of
from assay.report.writing import MANIFEST
from assay.scoring.metrics.directions import lower_is_better_in
from assay.storage.retention import compact_version

WHEN = datetime(2026, 11, 4, tzinfo=UTC)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("incremental")
    # The store's history copies are stamped by the same clock as the registry: as of the
    # board's day they are all there.
    store, registry, sample = sample_store(root, n_instances=24)
    held = held_explorer_data(
        store, registry, sample, lower_is_better=lower_is_better_in(store.read_all("metric_tables"))
    )
    cards, scores = held.metric_tables, held.instance_scores
    queried = ExplorerData.of_day(store, registry, held.board, held.day)
    registry.close()
    return {"sample": sample, "queried": queried, "held": held, "cards": cards, "scores": scores}


def _files(site: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in site.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }


def _without(stored: dict, dropped: str) -> ExplorerData:
    """The queried explorer with ``dropped`` left off the board (before it was evaluated)."""
    sample = stored["sample"]
    kept = [v for v in sample.versions if v != dropped]
    board = board_of(
        stored["cards"], stored["scores"], kept, sample.primary_metrics, sample.days[-1]
    )
    return replace(stored["queried"], board=board)


def test_the_queried_build_writes_the_pages_of_the_held_tables(stored, tmp_path):
    queried = build_site(stored["queried"], directory_writer(tmp_path / "q"), generated_at=WHEN)
    held = build_site(stored["held"], directory_writer(tmp_path / "h"), generated_at=WHEN)
    assert queried.files == held.files and queried.partitions_built == 6
    q, h = _files(tmp_path / "q"), _files(tmp_path / "h")
    assert sorted(q) == sorted(h)
    for name in q:
        assert q[name] == h[name], name


def test_a_rebuild_with_nothing_changed_renders_and_writes_nothing(stored, tmp_path):
    site = tmp_path / "site"
    first = build_site(stored["queried"], directory_writer(site), generated_at=WHEN)
    before = _files(site)
    assert first.units_rendered > 0 and first.units_skipped == 0
    later = datetime(2026, 11, 9, 13, tzinfo=UTC)
    again = build_site(stored["queried"], directory_writer(site), generated_at=later)
    assert (again.units_rendered, again.rendered) == (0, [])
    assert again.units_skipped == first.units_rendered
    assert (again.partitions_built, again.partitions_unchanged) == (0, 6)
    assert (again.written, again.unchanged, again.deleted) == (0, first.files, [])
    assert _files(site) == before  # the build time of a kept page is that of its build


def test_a_new_version_below_the_leader_renders_its_own_units_and_the_board(stored, tmp_path):
    sample = stored["sample"]
    # Skill rises with the version: the newest leads, the second sits in the middle.
    order = [r.model_version for r in stored["queried"].board.rows]
    assert order == sorted(sample.versions, reverse=True)
    leader, new, last = order
    site = tmp_path / "site"
    first = build_site(_without(stored, new), directory_writer(site), generated_at=WHEN)
    # Past days' pages stay as they are, those whose board lists the new version too: their
    # "vs next" links are the in-browser comparison, whatever the newest board's pairs are.
    rankings = stored["queried"].rankings
    listing = {
        d
        for d, v in zip(*(rankings[c].to_pylist() for c in ("day", "model_version")), strict=True)
        if v == new and d != sample.days[-1]
    }
    assert listing
    old_days = {d: (site / day_page(d)).read_bytes() for d in sample.days[:-1]}

    summary = build_site(stored["queried"], directory_writer(site), generated_at=WHEN)
    scenarios = list(sample.primary_metrics)
    # The new version's partitions only, one per scenario.
    assert summary.partitions_built == len(scenarios)
    assert summary.partitions_unchanged == first.partitions_built
    # Its comparisons with its two neighbours, its value file and headline cells (the
    # leaderboards' chart), its card on each scenario
    # (the scenario pages and the instance page stay: they load the cards and the scenarios'
    # indexes in the browser), the pages listing every version (the newest board, history,
    # the menus of comparisons and versions), and nothing else.
    expected = {
        f"compare\x1f{leader}\x1f{new}",
        f"compare\x1f{new}\x1f{last}",
        f"values\x1f{new}",
        f"headline\x1f{new}",
        "board",
        "comparisons",
        "history",
        "leaderboard\x1findex.html",
        f"leaderboard\x1f{day_page(sample.days[-1])}",
        *(f"card\x1f{s}\x1f{new}" for s in scenarios),
    }
    assert set(summary.rendered) == expected
    # Leader and last are no longer neighbours: their page goes (compare.html has the pair).
    name = compare_page(leader, last)[: -len(".html")]
    assert sorted(summary.deleted) == sorted(
        [compare_page(leader, last)]
        + [f"export/{name}{x}" for x in (".csv", ".json", "-flips.csv", "-flips.json")]
    )
    for d, page in old_days.items():
        assert (site / day_page(d)).read_bytes() == page, d

    # The site rebuilt by parts is the site built from scratch at the same time.
    fresh = tmp_path / "fresh"
    build_site(stored["queried"], directory_writer(fresh), generated_at=WHEN)
    built, expected_files = _files(site), _files(fresh)
    assert sorted(built) == sorted(expected_files)
    for name in built:
        assert built[name] == expected_files[name], name


@pytest.mark.parametrize("card", ["kept", "deleted", "headline unreadable"])
def test_a_new_version_reads_only_its_own_rows_for_the_scenario_pages(
    stored, tmp_path, monkeypatch, card
):
    """A scenario page draws each version from that version's card: a rebuild after a new
    version reads the metric tables and chosen probabilities of the new version only (and of
    a version whose card went missing from the folder), renders no scenario page, and leaves
    the cards, index and pages of a build from scratch. The leaderboards' chart reads the
    new version's headline rows only, the others' from the files the last build kept (from
    the store where such a file does not read as one)."""
    from assay.report.links import card_file, cards_file, headline_file, scenario_page
    from assay.report.results import QueriedResults

    sample = stored["sample"]
    _, new, last = [r.model_version for r in stored["queried"].board.rows]
    site = tmp_path / "site"
    build_site(_without(stored, new), directory_writer(site), generated_at=WHEN)
    scenarios = list(sample.primary_metrics)
    if card == "deleted":
        for scenario in scenarios:
            (site / card_file(scenario, last)).unlink()
    elif card == "headline unreadable":
        (site / headline_file(last)).write_text("{not json")
    asked: list[tuple[str, str, list[str]]] = []
    cards, scores = QueriedResults.cards, QueriedResults.scores

    def reading_cards(self, scenario, versions):
        asked.append(("cards", scenario, sorted(versions)))
        return cards(self, scenario, versions)

    def reading_scores(self, scenario, versions, metrics):
        if "chosen_prob" in metrics:
            asked.append(("chosen_prob", scenario, sorted(versions)))
        return scores(self, scenario, versions, metrics)

    headline = QueriedResults.headline_cards

    def reading_headline(self, versions):
        asked.append(("headline", "", sorted(versions)))
        return headline(self, versions)

    monkeypatch.setattr(QueriedResults, "cards", reading_cards)
    monkeypatch.setattr(QueriedResults, "scores", reading_scores)
    monkeypatch.setattr(QueriedResults, "headline_cards", reading_headline)
    summary = build_site(stored["queried"], directory_writer(site), generated_at=WHEN)
    wanted = sorted([new, last] if card == "deleted" else [new])
    assert asked == [
        *((what, s, wanted) for s in scenarios for what in ("cards", "chosen_prob")),
        ("headline", "", [new]),  # the leaderboards' chart: the others' cells are kept ...
        # ... and read from the store where the kept file does not read as cells
        *([("headline", "", [last])] if card == "headline unreadable" else []),
    ]
    assert not [k for k in summary.rendered if k.startswith("scenario\x1f")]

    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    build_site(stored["queried"], directory_writer(fresh), generated_at=WHEN)
    for scenario in scenarios:
        paths = [cards_file(scenario), scenario_page(scenario)]
        paths += [card_file(scenario, v) for v in sample.versions]
        for path in paths:
            assert (site / path).read_bytes() == (fresh / path).read_bytes(), path
    for page in ("index.html", day_page(sample.days[-1]), *map(headline_file, sample.versions)):
        assert (site / page).read_bytes() == (fresh / page).read_bytes(), page


def test_a_new_leader_renders_one_comparison_page(stored, tmp_path):
    order = [r.model_version for r in stored["queried"].board.rows]
    leader, second, last = order
    site = tmp_path / "site"
    build_site(_without(stored, leader), directory_writer(site), generated_at=WHEN)
    kept = (site / compare_page(second, last)).read_bytes()
    summary = build_site(stored["queried"], directory_writer(site), generated_at=WHEN)
    compared = {k for k in summary.rendered if k.startswith("compare\x1f")}
    assert compared == {f"compare\x1f{leader}\x1f{second}"}
    assert f"compare\x1f{second}\x1f{last}" not in summary.rendered
    assert (site / compare_page(second, last)).read_bytes() == kept


def test_any_two_versions_compared_in_chromium(stored, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed (Debian package 'chromium')")
    site = tmp_path / "site"
    build_site(stored["queried"], directory_writer(site), generated_at=WHEN)
    leader, _, last = [r.model_version for r in stored["queried"].board.rows]
    expected = _acc_pairs(stored["scores"], leader, last)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            # From the newest board's row of the last version: its link against the leader.
            page.goto((site / "index.html").as_uri())
            page.click(f"#leaderboard tr[data-version='{last}'] a.compare-leader")
            page.wait_for_selector("#pair-diffs tbody tr")
            assert page.inner_text("#version-a") == leader
            assert page.inner_text("#version-b") == last
            row = page.locator("#pair-diffs tbody tr", has_text="mc-quiz")
            cells = row.locator("td")
            n, diff, differ = expected
            assert int(cells.nth(2).inner_text()) == n
            assert float(cells.nth(5).inner_text()) == pytest.approx(diff, abs=5e-4)
            flips = page.locator("table.flips[data-scenario='mc-quiz'] tbody tr")
            assert flips.count() == differ
        finally:
            browser.close()
    assert errors == []


def _acc_pairs(scores, a: str, b: str) -> tuple[int, float, int]:
    """On mc-quiz: the rows both have, the mean difference of acc (a − b), the rows that
    differ, from the stored instance scores (unperturbed, ungrouped)."""
    import pyarrow.compute as pc

    def acc(version: str) -> dict[str, float]:
        rows = scores.filter(
            pc.and_(
                pc.and_(
                    pc.equal(scores["model_version"], version), pc.equal(scores["metric"], "acc")
                ),
                pc.and_(
                    pc.and_(pc.equal(scores["perturbation"], ""), pc.equal(scores["group"], "")),
                    pc.equal(scores["scenario"], "mc-quiz"),
                ),
            )
        )
        return dict(zip(rows["instance_id"].to_pylist(), rows["value"].to_pylist(), strict=True))

    x, y = acc(a), acc(b)
    shared = sorted(set(x) & set(y))
    diffs = [x[k] - y[k] for k in shared]
    return len(shared), sum(diffs) / len(diffs), sum(1 for d in diffs if d != 0)


def test_a_past_days_page_is_the_same_when_rebuilt_later(stored, tmp_path):
    sample = stored["sample"]
    past = day_page(sample.days[0])
    build_site(stored["queried"], directory_writer(tmp_path / "a"), generated_at=WHEN)
    # Another folder, a later build time: the page differs only by the time it was built.
    later = datetime(2026, 12, 1, 8, tzinfo=UTC)
    build_site(stored["queried"], directory_writer(tmp_path / "b"), generated_at=later)
    a = (tmp_path / "a" / past).read_text()
    b = (tmp_path / "b" / past).read_text()
    assert "2026-11-04 00:00 UTC" in a and "2026-12-01 08:00 UTC" in b
    assert a.replace("2026-11-04 00:00 UTC", "") == b.replace("2026-12-01 08:00 UTC", "")
    # Nor does it name the newest day: a new day leaves it as it is.
    assert sample.days[-1] not in a


def test_each_stored_day_reads_its_own_rows_of_the_rankings(stored):
    """The stored rankings are split by day once: each day's rows are the table filtered to
    that day, in its order, however the days' rows interleave."""
    rankings = stored["queried"].rankings
    shuffled = rankings.take(
        pa.array(
            list(range(rankings.num_rows))[::-1][::2] + list(range(rankings.num_rows))[::-1][1::2]
        )
    )
    data = replace(stored["queried"], rankings=shuffled)
    days = sorted(set(rankings["day"].to_pylist()))
    assert len(days) > 1
    assert data.days() == sorted({*days, data.day})
    for day in days:
        expected = shuffled.filter(pc.equal(shuffled["day"], day))
        assert data.stored_board(day).to_pylist() == expected.to_pylist()
        if day != data.day:
            assert data.ranking_rows(day) == sorted(
                expected.to_pylist(), key=lambda r: (r["rank"], r["model_version"])
            )
    assert data.stored_board("2000-01-01") is None


def test_a_past_days_page_renders_again_when_its_stored_rows_change(stored, tmp_path):
    """A past day's page is checked against its stored rows: rewritten rows (a backfill of
    that day) render it again, and only it; the site is the one built from scratch."""
    sample = stored["sample"]
    site = tmp_path / "site"
    build_site(stored["queried"], directory_writer(site), generated_at=WHEN)
    rankings = stored["queried"].rankings
    first = sample.days[0]
    on_first = pc.equal(rankings["day"], first)
    score = rankings["mean_score"]
    rewritten = rankings.set_column(
        rankings.schema.get_field_index("mean_score"),
        "mean_score",
        pc.if_else(on_first, pc.multiply(score, 0.5), score),
    )
    changed = replace(stored["queried"], rankings=rewritten)
    summary = build_site(changed, directory_writer(site), generated_at=WHEN)
    pages = {k for k in summary.rendered if k.startswith("leaderboard")}
    assert pages == {f"leaderboard\x1f{day_page(first)}"}
    fresh = tmp_path / "fresh"
    build_site(changed, directory_writer(fresh), generated_at=WHEN)
    assert _files(site) == _files(fresh)


def test_a_day_before_any_result_is_refused_before_anything_is_written(stored, tmp_path):
    early = replace(stored["queried"], day="2026-10-01")  # before the sample's first write
    with pytest.raises(ValueError, match=r"no metric_tables partition .* end of 2026-10-01"):
        build_site(early, directory_writer(tmp_path / "site"), generated_at=WHEN)
    assert not (tmp_path / "site").exists()


def test_a_compacted_version_shows_as_it_did(tmp_path: Path) -> None:
    """Retention compacts a version's files: the explorer reads its copies, same site."""
    store, registry, sample = sample_store(tmp_path, n_instances=24)
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


def test_a_version_without_a_metric_table_on_a_scenario_has_no_card_there(
    stored, tmp_path, monkeypatch
):
    """A board version not scored on a scenario is not listed on its page, and the build
    reads nothing for it there (not even again on the next build)."""
    import pyarrow.compute as pc

    from assay.report.links import card_file, cards_file
    from assay.report.results import HeldResults

    held = stored["held"]
    _, middle, _ = [r.model_version for r in held.board.rows]
    tables = held.metric_tables
    gone = pc.and_(
        pc.equal(tables["model_version"], middle), pc.equal(tables["scenario"], "mc-quiz")
    )
    data = replace(held, metric_tables=tables.filter(pc.invert(gone)))
    asked: list[tuple[str, list[str]]] = []
    cards = HeldResults.cards

    def reading_cards(self, scenario, versions):
        asked.append((scenario, sorted(versions)))
        return cards(self, scenario, versions)

    monkeypatch.setattr(HeldResults, "cards", reading_cards)
    site = tmp_path / "site"
    build_site(data, directory_writer(site), generated_at=WHEN)
    assert not (site / card_file("mc-quiz", middle)).exists()
    assert (site / card_file("short-qa", middle)).is_file()
    index = (site / cards_file("mc-quiz")).read_text()
    listed = json.loads(index[index.index("] = ") + 4 : -2])["versions"]
    assert [v for v, _ in listed] == [
        r.model_version for r in held.board.rows if r.model_version != middle
    ]
    assert middle not in dict(asked)["mc-quiz"]
    # A file gone from the folder sends the next build unit by unit: nothing is read again.
    asked.clear()
    (site / "history.html").unlink()
    again = build_site(data, directory_writer(site), generated_at=WHEN)
    assert not again.site_unchanged and again.rendered == ["history"]
    assert asked == []


def test_each_version_is_paired_with_its_models_previous_version_on_the_board():
    """The comparisons built with the site pair each version with the previous version of
    its model on the board, whatever the board's order: reordering the board changes no
    pair, and a new version adds its own (splitting the one it came between)."""
    from assay.report.comparison import _pairs

    board = ["b@v2", "a@v3", "a@v1", "c@v1", "b@v1", "a@v5"]
    # By hand: a's chain v1 < v3 < v5, b's v1 < v2, c alone; in the board's order.
    assert _pairs(board) == [("b@v2", "b@v1"), ("a@v3", "a@v1"), ("a@v5", "a@v3")]
    reordered = list(reversed(board))
    assert sorted(_pairs(reordered)) == sorted(_pairs(board))
    # a@v4 arrives in the middle of the board: (a@v5, a@v3) splits in two, nothing else moves.
    grown = _pairs(["b@v2", "a@v3", "a@v4", "a@v1", "c@v1", "b@v1", "a@v5"])
    assert set(grown) - set(_pairs(board)) == {("a@v5", "a@v4"), ("a@v4", "a@v3")}
    assert set(_pairs(board)) - set(grown) == {("a@v5", "a@v3")}
    # Numbers compare as numbers (v10 follows v9), and names with "@" keep their own chains.
    assert _pairs(["m@v10", "m@v9", "x@y@v2", "x@y@v1"]) == [
        ("m@v10", "m@v9"),
        ("x@y@v2", "x@y@v1"),
    ]


def test_the_leaderboard_links_a_versions_page_against_its_previous_version(stored, tmp_path):
    """Where a version's previous version is not the next row down, its row links both: the
    next one compared in the browser, the previous one's built page."""
    import re

    from assay.report.links import pair_href

    held = stored["held"]
    v3, v2, v1 = [r.model_version for r in held.board.rows]
    rows = {r.model_version: r for r in held.board.rows}
    board = replace(held.board, rows=tuple(rows[v] for v in (v1, v3, v2)))
    site = tmp_path / "site"
    build_site(replace(held, board=board), directory_writer(site), generated_at=WHEN)
    drawn = rendered_pages(site, ["index.html"])["index.html"]
    assert drawn.errors == []
    page = drawn.html
    cells = dict(re.findall(r'<tr data-version="([^"]+)".*?<td>(.*?)</td>\s*</tr>', page, re.S))
    # v1: nothing before it; the next one (v3) is not its pair.
    assert f'href="{pair_href(v1, v3)}"' in cells[v1].replace("&amp;", "&")
    assert "compare-previous" not in cells[v1]
    # v3: the next one is its previous version, whose page "vs next" opens.
    assert f'class="compare-link" href="{compare_page(v3, v2)}"' in cells[v3]
    assert "compare-previous" not in cells[v3]
    # v2: last row, its previous version (v1) is above it: its built page.
    assert f'class="compare-previous" href="{compare_page(v2, v1)}"' in cells[v2]
    assert (site / compare_page(v2, v1)).is_file()


def test_partitions_found_by_key_read_as_the_whole_listing_filtered(stored, monkeypatch):
    """The results a build reads pick a scenario's or a version's partitions by key from the
    day's listing; the rows, and their order, are those of reading the listing through a
    test of every partition, for any versions asked for (in any order, with unknown ones);
    and no query tests the partitions of the listing one by one."""
    from itertools import combinations

    from assay.report.results import QueriedResults, table_digest
    from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES
    from assay.storage.query import TablesAsOf

    sample = stored["sample"]
    results = QueriedResults(stored["queried"])
    tested = []
    read = TablesAsOf.read

    def counting(self, asset, pick=None, **kw):
        tested.append(asset)
        return read(self, asset, pick, **kw)

    try:
        asked = [
            [*reversed(chosen), "nobody@v9"]
            for n in range(len(sample.versions) + 1)
            for chosen in combinations(sample.versions, n)
        ]
        for asset in (METRIC_TABLES, INSTANCE_SCORES):
            for versions in asked:
                for scenario in [*sample.primary_metrics, None]:
                    wanted = set(versions)

                    def pick(p, wanted=wanted, scenario=scenario):
                        return p.get("model_version") in wanted and (
                            scenario is None or p.get("scenario") == scenario
                        )

                    expected = read(results.tables, asset, pick)
                    monkeypatch.setattr(TablesAsOf, "read", counting)
                    got = results._read(asset, scenario, versions)
                    monkeypatch.undo()
                    if expected is None:
                        assert got is None, (asset, versions, scenario)
                    else:
                        # (Byte for byte: equals() holds no NaN equal to itself.)
                        assert got is not None, (asset, versions, scenario)
                        assert table_digest(got) == table_digest(expected), (asset, versions)
        assert tested == []
    finally:
        results.close()
