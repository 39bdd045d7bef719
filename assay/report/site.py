"""The results explorer: a static site of linked pages, charts and exports.

Pages (all at the site's root, so relative links work from a file, a static web server or
an object store alike):

- ``index.html`` / ``day-<day>.html``: the leaderboard of the newest / each stored day (its
  table, family figures and paired tests drawn in the browser from the page's data);
- ``compare-<a>--<b>-<id>.html``: a version on the board against its model's previous
  version on it (paired tests seeded by the pair, flipped instances with both answers),
  built with the site;
- ``compare.html#a=<version>&b=<version>``: any two versions of the newest board, computed in
  the browser from their value files (``data/_values/<version>.js``, each scenario's
  unperturbed primary-metric values per instance): means, difference, instances that differ;
  no test. Comparisons are asked for, not built for every pair: a static page per version
  and its predecessor only, since a page for the leader against every version made a new
  leader rebuild one page per version, and one per neighbour pair made a version inserted
  among close ones rebuild a page per pair it reordered;
- ``scenario-<key>.html``: scorecards, group breakdowns, robustness, calibration, instances,
  drawn in the browser from the scenario's index (``data/<s>/_cards.js``: the board's
  versions in order, where each partition's data is) and one card per version
  (``data/<s>/<v>.card.js``, written when that partition's results change), its exports
  assembled there from the cards' lines: a new version adds its cards, not a page;
- ``instance.html#s=<scenario>&v=<version>&id=<instance>``: one prediction (the scenario's
  index says where its data is);
- ``history.html``: scores over days, alias moves, promotion decisions;
- ``decision-<event id>.html``: one promotion verdict, every criterion with its figures (linked
  from the version's leaderboard row);
- ``data/``: per-partition instance data, ``_values/<version>.js`` (for ``compare.html``),
  ``_headline/<version>.json`` (each version's cells of the leaderboards' chart, kept while
  its metric tables are),
  and the menus every page of a kind shares (``_days.js``, ``pairs.js``, ``_board.js``), so a
  new day or pair changes one small file rather than every page;
- ``export/``: every table but a scenario page's as CSV and JSON, each partition's
  per-instance rows as JSONL;
- ``_build.json``: the manifest that makes the next build incremental (:mod:`.writing`):
  every unit (a partition's data, a page with its exports) is rendered only when its inputs
  (fingerprints of the stored files it reads, the board rows it shows, the code) changed,
  never because the build's day or time did; and a build whose inputs all match the last
  build's (one site-wide digest, :mod:`.sitewide`) stops before looking at any unit.

The results are read through :mod:`.results`: queried with DuckDB as of the end of the
board's day, one scenario or partition at a time (``ExplorerData.of_day``), or filtered from
tables held in memory (``ExplorerData`` built with them).

Pages are jinja2 templates with autoescaping; data for charts sits in
``<script type="application/json">`` blocks (HTML-safe JSON) and is drawn by plotly, whose
JavaScript is copied into ``static/`` once. Per-instance data is one ``data/<s>/<v>.js`` file
per partition, loaded by a ``<script>`` element only when a page needs it: browsers refuse
``fetch()`` from ``file://``, but run scripts from there. The browser code puts every text
into the page with ``textContent``, never as markup.

This module runs the build; each page kind has its own module (:mod:`.leaderboard`,
:mod:`.comparison`, :mod:`.scenario`, :mod:`.history`, :mod:`.partitions` for the instance
data), over :mod:`.links` (file names), :mod:`.render` (escaping, templates, the build
context) and :mod:`.writing` (writers and CSV/JSON exports).
"""

from __future__ import annotations

import os
from datetime import datetime
from importlib import resources

from assay.report.comparison import _comparison_index, _comparisons, _pairs, _values
from assay.report.data import ExplorerData
from assay.report.decisions import _decisions
from assay.report.history import _history
from assay.report.leaderboard import _days_menu, _headline_units, _leaderboard
from assay.report.links import cards_file, compare_page, day_page, scenario_page, slug
from assay.report.partitions import _partitions
from assay.report.render import _Context, _environment, _html_safe_json
from assay.report.results import results_of
from assay.report.scenario import _scenario
from assay.report.sitewide import READ_ASSETS, listed_files, site_inputs, store_listing
from assay.report.writing import (
    SiteFolder,
    SiteSummary,
    Writer,
    _Site,
    directory_writer,
    inputs_digest,
    store_writer,
)

__all__ = [
    "SiteFolder",
    "SiteSummary",
    "Writer",
    "_html_safe_json",
    "build_site",
    "compare_page",
    "day_page",
    "directory_writer",
    "scenario_page",
    "slug",
    "store_writer",
]


def build_site(
    data: ExplorerData,
    write: Writer | SiteFolder,
    *,
    generated_at: datetime,
    n_resamples: int = 1000,
    workers: int | None = None,
) -> SiteSummary:
    """Write the explorer into a site folder (:func:`directory_writer`, :func:`store_writer`)
    or through any ``write(relative_path, bytes)``; ``index.html`` last, so a reader of a
    half-written site never lands on links to pages not yet there.

    Into a site folder the build is incremental (see :mod:`.writing`): it writes the files
    whose content changed, skips partitions whose inputs did not, and then deletes the files
    of an earlier build that it no longer produces, only inside that folder. Partitions are
    built by up to ``workers`` processes (default: ``ASSAY_EXPLORER_WORKERS``, else one less
    than the CPU count, at most 8) when the folder is local.
    """
    from plotly.offline import get_plotlyjs

    if workers is None:
        # One core stays with this process (and whatever else the machine runs): on two
        # cores, worker processes only add their start-up.
        default = min((os.cpu_count() or 1) - 1, 8)
        workers = int(os.environ.get("ASSAY_EXPLORER_WORKERS") or max(default, 1))

    site = _Site(write)
    # One digest of everything the build reads: when it is the last build's, so is every
    # unit's (the folder's files and the manifest stay as they are).
    inputs, listing = None, None
    if site.folder is not None:
        listing = store_listing(data.store, READ_ASSETS, site.previous_listing())
        site.summary.store_walked = listing.walked
        inputs = site_inputs(data, n_resamples, listing.digest)
    if site.unchanged_site(inputs):
        return site.summary
    # Before any write: a refused build leaves the site as it was. The store is read as the
    # listing found it (one listing a build).
    listed = None if listing is None else listed_files(data.store, listing)
    results = results_of(data, listed)
    site.start(inputs, None if listing is None else listing.recorded)
    ctx = _Context(
        data=data,
        site=site,
        env=_environment(),
        generated_at=generated_at,
        n_resamples=n_resamples,
        scenarios=list(data.board.primary_metrics),
        versions=data.board_versions,
        results=results,
    )
    try:
        with site.unit("static", inputs_digest("static")) as fresh:
            if fresh:
                site.put("static/plotly.min.js", get_plotlyjs().encode("utf-8"))
                static = resources.files("assay.report") / "static"
                for name in ("explorer.js", "explorer.css"):
                    site.put(f"static/{name}", (static / name).read_bytes())
        _partitions(ctx, workers)
        ctx.pairs = _pairs(ctx.versions)
        _comparisons(ctx)
        _comparison_index(ctx)
        _values(ctx)
        for scenario in ctx.scenarios:
            _scenario(ctx, scenario)
        with site.unit("instance", inputs_digest("instance", ctx.scenarios)) as fresh:
            if fresh:
                indexes = {s: cards_file(s) for s in ctx.scenarios}
                ctx.render("instance.html", "instance.html", indexes=indexes, title="Instance")
        _decisions(ctx)
        _history(ctx)
        days = data.days()
        _days_menu(ctx, days)
        _headline_units(ctx)
        for day in days:
            if day != data.day:
                _leaderboard(ctx, day, day_page(day), days)
        _leaderboard(ctx, data.day, day_page(data.day), days)
        _leaderboard(ctx, data.day, "index.html", days)
        site.finish()
    finally:
        results.close()
    return site.summary
