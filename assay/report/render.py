"""Rendering helpers for the explorer: number formatting, HTML-safe JSON, the jinja2
environment and the build context every page writer shares."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from assay.report.data import ExplorerData
from assay.report.links import compare_page, day_page, instance_href, scenario_page

if TYPE_CHECKING:  # writing.py uses this module's JSON helpers
    from assay.report.writing import _Site

# Stands for the build time while a page is rendered: its digest leaves the time out.
BUILD_TIME_MARK = "\x00assay-build-time\x00"


def _num(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _finite(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)  # type: ignore[arg-type]
    return value if math.isfinite(value) else None


def _html_safe_json(value: object) -> str:
    """JSON that is safe inside HTML and JavaScript: ``<``, ``>``, ``&`` and the two
    JavaScript line separators are escaped, so no text can close a script element."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _script_json(value: Any) -> Markup:
    """:func:`_html_safe_json` of ``value`` with NaN and infinities as null; the value is
    walked (:func:`_clean`) only when it holds one."""
    try:
        return Markup(_html_safe_json(value))
    except ValueError:
        return Markup(_html_safe_json(_clean(value)))


def _clean(value: Any) -> Any:
    """NaN and infinities as None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _plot_text(value: Any, key: str = "") -> Any:
    """A chart spec with its strings escaped for plotly, which reads a few HTML tags (``<b>``,
    ``<a href>``) in labels: data texts must show as written. ``meta`` (matched by the page's
    filters, never displayed) stays as is."""
    if isinstance(value, str):
        return value if key == "meta" else html.escape(value, quote=False)
    if isinstance(value, dict):
        return {k: _plot_text(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plot_text(v, key) for v in value]
    return value


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("assay.report", "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["jsdata"] = _script_json
    env.filters["chartdata"] = lambda v: _script_json(_plot_text(v))
    env.globals.update(
        scenario_page=scenario_page,
        compare_page=compare_page,
        day_page=day_page,
        instance_href=instance_href,
    )
    return env


@dataclass
class _Context:
    data: ExplorerData
    site: _Site
    env: Environment
    generated_at: datetime
    n_resamples: int
    scenarios: list[str]
    versions: list[str]
    answers: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # (version, scenario) → digest of the partition's inputs (what its pages derive from)
    partition_inputs: dict[tuple[str, str], str] = field(default_factory=dict)
    manifest: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    # scenario → (ScoreColumn, the metric it holds), built on first use
    columns: dict[str, Any] | None = None
    compared: list[str] = field(default_factory=list)  # versions of the comparisons computed
    results: Any = None  # the build's results.Results
    # the leaderboards' chart cells: (version, scenario, metric) → [mean, ci_low, ci_high]
    headline: dict[tuple[str, str, str], list] = field(default_factory=dict)
    headline_read: set[str] = field(default_factory=set)  # versions whose cells are read
    headline_kept: set[str] = field(default_factory=set)  # versions whose file is kept
    # the newest day's leaderboard page values as its day's page drew them (index.html
    # draws them again)
    newest_leaderboard: dict[str, Any] | None = None

    def render(self, template: str, path: str, **values: Any) -> None:
        nav = [{"title": s, "href": scenario_page(s)} for s in self.scenarios]
        page = self.env.get_template(template).render(
            generated_at=BUILD_TIME_MARK,
            scenario_nav=nav,
            **values,
        )
        when = f"{self.generated_at:%Y-%m-%d %H:%M} UTC"
        self.site.put(path, page.encode("utf-8"), build_time=when)
