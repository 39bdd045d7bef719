"""The explorer's contamination views: per scenario the rate and clean vs all with intervals,
per instance whether it was flagged and why; checked in the page files and in Chromium."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pyarrow as pa
import pytest
from explorer_browser import chromium, scenario_views
from sample_clock import SampleClock, held_explorer_data

from assay.contamination.clean import CLEAN, CLEAN_MINUS_FULL, contamination_rows
from assay.contamination.subsets import TABLE_SCHEMA, Contamination
from assay.core.records import InstanceStat
from assay.registry import Registry
from assay.report import build_site, directory_writer
from assay.report.links import data_file, slug
from assay.report.sample import write_sample
from assay.scoring.summary import scorecard_table
from assay.storage.parquet import ParquetStore

SCENARIO = "mc-quiz"
PAYLOAD = "<script>alert('evidence')</script>"


def _stats(table: pa.Table) -> list[InstanceStat]:
    names = [f.name for f in InstanceStat.SCHEMA if f.name in table.column_names]
    return [InstanceStat(**row) for row in table.select(names).to_pylist()]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("contamination-explorer")
    clock = SampleClock()
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}", clock=clock)
    store = ParquetStore(str(root / "storage"))
    sample = write_sample(
        store, registry, clock=clock.set, n_versions=2, n_instances=12, hostile=False
    )
    unchecked, checked = sample.versions  # best first: check the one with wrong answers
    where = {"model_version": checked, "scenario": SCENARIO}
    stats = _stats(store.read("instance_scores", where))
    ids = sorted({s.instance_id for s in stats})
    flagged = set(ids[:3])
    findings = []
    for i in ids:
        findings.append(
            {
                "instance_id": i,
                "detector": "gpt3_13gram",
                "corpus": "web-crawl",
                "corpus_digest": "ef" * 32,
                "score": 1.0 if i in flagged else 0.0,
                "flagged": i in flagged,
                "label": "",
                "evidence": f"13-gram '{PAYLOAD} {i}'" if i in flagged else "",
            }
        )
        findings.append(
            {
                "instance_id": i,
                "detector": "min_k_prob",
                "corpus": "",
                "corpus_digest": "",
                "score": -2.5,
                "flagged": False,
                "label": "",
                "evidence": "paired difference 0.01",
            }
        )
    contamination = pa.Table.from_pylist(findings, schema=TABLE_SCHEMA)
    store.write("contamination", where, contamination)
    # The partition rescored as the scoring step does: its rows plus the contamination rows.
    flags, rows = contamination_rows(stats, ids, Contamination.of(contamination), seed_key="x")
    store.write("instance_scores", where, InstanceStat.to_table(stats + flags))
    card = pa.concat_tables(
        [store.read("metric_tables", where), scorecard_table(rows)], promote_options="default"
    )
    store.write("metric_tables", where, card)
    # The other version was scored with the check's "not checked" row.
    other = {"model_version": unchecked, "scenario": SCENARIO}
    _, none = contamination_rows([], [], None)
    store.write(
        "metric_tables",
        other,
        pa.concat_tables(
            [store.read("metric_tables", other), scorecard_table(none)], promote_options="default"
        ),
    )
    data = held_explorer_data(store, registry, sample)
    out = root / "site"
    build_site(data, directory_writer(out), generated_at=datetime(2026, 11, 4, tzinfo=UTC))
    registry.close()
    by = {(r.metric, r.subset): r for r in rows if not r.group and not r.perturbation}
    return {
        "site": out,
        "checked": checked,
        "unchecked": unchecked,
        "flagged": flagged,
        "ids": ids,
        "rows": by,
        "board": data.board,
    }


def test_the_scenario_page_shows_rate_clean_and_difference(site):
    (view,) = scenario_views(site["site"], [SCENARIO]).values()
    assert not view.errors
    page = view.html.split('id="contamination-table"')[1].split("</table>")[0]
    rows = site["rows"]
    rate = rows[("contamination_rate", "")]
    assert rate.mean == pytest.approx(3 / 12)
    for figure in (rate, rows[("acc", CLEAN)], rows[("acc", CLEAN_MINUS_FULL)]):
        assert f"{figure.mean:.3f}" in page
        assert f"[{figure.ci_low:.3f}, {figure.ci_high:.3f}]" in page
    assert "not checked" in page  # the other version
    # The export holds the same figures.
    export = json.loads(view.exports[f"contamination-{slug(SCENARIO)}.json"])
    line = next(r for r in export if r["model_version"] == site["checked"])
    assert line["rate"] == pytest.approx(3 / 12)
    assert line["clean"] == pytest.approx(rows[("acc", CLEAN)].mean)
    assert line["diff"] == pytest.approx(rows[("acc", CLEAN_MINUS_FULL)].mean)
    other = next(r for r in export if r["model_version"] == site["unchecked"])
    assert not other["checked"] and other["clean"] is None
    # The contamination subsets stay out of the leaderboard's headline scores.
    assert [r.model_version for r in site["board"].rows] == [site["unchecked"], site["checked"]]


def test_the_instance_data_carries_each_finding(site):
    text = (site["site"] / data_file(SCENARIO, site["checked"])).read_text()
    assert "web-crawl" in text and "gpt3_13gram" in text and "min_k_prob" in text
    # The payload is in the data as escaped JSON, never as markup.
    assert PAYLOAD not in text and "alert" in text
    unchecked = (site["site"] / data_file(SCENARIO, site["unchecked"])).read_text()
    assert "gpt3_13gram" not in unchecked


def _hash(version: str, instance: str) -> str:
    return "#" + urlencode({"s": SCENARIO, "v": version, "id": instance}, quote_via=quote)


def test_instance_pages_say_flagged_clean_or_not_checked_in_chromium(site):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    flagged = sorted(site["flagged"])[0]
    clean = sorted(set(site["ids"]) - site["flagged"])[0]
    base = (site["site"] / "instance.html").as_uri()
    dialogs, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            seen = {}
            for version, instance in (
                (site["checked"], flagged),
                (site["checked"], clean),
                (site["unchecked"], flagged),
            ):
                page.goto("about:blank")
                page.goto(base + _hash(version, instance))
                page.wait_for_selector("#instance:not([hidden])")
                rows = page.locator("#contamination tbody tr")
                seen[(version, instance)] = (
                    page.inner_text("#contamination-verdict"),
                    [rows.nth(i).inner_text() for i in range(rows.count())],
                )
            assert page.locator("#contamination script").count() == 0
        finally:
            browser.close()
    verdict, findings = seen[(site["checked"], flagged)]
    assert verdict.startswith("Flagged as contaminated")
    assert len(findings) == 2
    hit = next(f for f in findings if "gpt3_13gram" in f)
    assert "web-crawl" in hit and "flagged" in hit and f"{PAYLOAD} {flagged}" in hit
    verdict, findings = seen[(site["checked"], clean)]
    assert verdict.startswith("Clean") and len(findings) == 2
    verdict, findings = seen[(site["unchecked"], flagged)]
    assert verdict.startswith("Not checked") and findings == []
    assert dialogs == [] and errors == []
