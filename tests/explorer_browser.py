"""The explorer's pages as Chromium draws them: a scenario page after its cards loaded, with
the exports its links hand out (assembled in the browser from every version's part), and a
leaderboard after it drew its board."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from assay.report import scenario_page

EXPORT_LINKS = "a[data-export]"


def chromium() -> str:
    """Debian's Chromium (installed by ``.ci/run``); the test is skipped without it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():
        path = "/usr/bin/chromium"
    if path is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    return path


@dataclass
class ScenarioView:
    """A scenario page once drawn: its HTML, its exports by file name, the page's errors
    (scripts' errors and any dialog opened)."""

    html: str
    exports: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def scenario_views(site: Path, scenarios: Iterable[str]) -> dict[str, ScenarioView]:
    """Open each scenario's page from ``site`` in Chromium, wait until it has drawn its
    cards, and read its HTML and the text behind each export link."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    views = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # A dialog is a data text run as script: an error of the page too.
            page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            for scenario in scenarios:
                errors.clear()
                page.goto((site / scenario_page(scenario)).as_uri())
                page.wait_for_selector("#scenario-views[data-ready]", state="attached")
                exports = page.evaluate(
                    """async (selector) => {
                        const out = {};
                        for (const a of document.querySelectorAll(selector)) {
                            out[a.download] = await (await fetch(a.href)).text();
                        }
                        return out;
                    }""",
                    EXPORT_LINKS,
                )
                views[scenario] = ScenarioView(page.content(), exports, list(errors))
        finally:
            browser.close()
    return views


def rendered_pages(site: Path, pages: Iterable[str]) -> dict[str, ScenarioView]:
    """Open each page (a path in ``site``: a leaderboard, ``index.html``) in Chromium and
    read its HTML once its board is drawn (``#leaderboard[data-ready]``), with its errors."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    views = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            for path in pages:
                errors.clear()
                page.goto((site / path).as_uri())
                page.wait_for_selector("#leaderboard[data-ready]", state="attached")
                views[path] = ScenarioView(page.content(), {}, list(errors))
        finally:
            browser.close()
    return views
