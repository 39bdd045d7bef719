"""The explorer's pages as Chromium draws them: a scenario page after its cards loaded, with
the exports its links hand out (assembled in the browser from every version's part), and a
leaderboard after it drew its board."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
class DrawnPage:
    """A page once drawn: its HTML, its exports by file name (a scenario page's), and the
    page's errors (scripts' errors and any dialog opened)."""

    html: str
    exports: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _page() -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page, and the list its script errors and dialogs go into."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # A dialog is a data text run as script: an error of the page too.
            page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            yield page, errors
        finally:
            browser.close()


def scenario_views(site: Path, scenarios: Iterable[str]) -> dict[str, DrawnPage]:
    """Open each scenario's page from ``site`` in Chromium, wait until it has drawn its
    cards, and read its HTML and the text behind each export link."""
    views = {}
    with _page() as (page, errors):
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
            views[scenario] = DrawnPage(page.content(), exports, list(errors))
    return views


def rendered_pages(
    site: Path, pages: Iterable[str], ready: str = "#leaderboard[data-ready]"
) -> dict[str, DrawnPage]:
    """Open each page (a path in ``site``: a leaderboard, ``index.html``) in Chromium and
    read its HTML once what it draws from its data is there (``ready``: the board,
    ``#leaderboard[data-ready]``), with its errors."""
    views = {}
    with _page() as (page, errors):
        for path in pages:
            errors.clear()
            page.goto((site / path).as_uri())
            page.wait_for_selector(ready, state="attached")
            views[path] = DrawnPage(page.content(), {}, list(errors))
    return views
