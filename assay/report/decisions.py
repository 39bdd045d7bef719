"""Promotion decision pages: one per verdict, linked from its version's leaderboard row and
listed on the history page.

A verdict is a ``gate_approved`` / ``gate_refused`` event of the registry's log
(``assay.registry.decisions``); its page shows the target, the candidate and the incumbent,
the suite digest and code versions it was judged on, and every criterion with its estimate,
interval, threshold, p-values and outcome, so the page says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assay.compare.decision import decision_from_record
from assay.registry.entities import Event, EventKind
from assay.report.render import _Context
from assay.report.writing import inputs_digest

_VERDICTS = (EventKind.GATE_APPROVED, EventKind.GATE_REFUSED)


def decision_page(event_id: int) -> str:
    """The page of the verdict recorded as event ``event_id``."""
    return f"decision-{int(event_id)}.html"


def verdicts(events: Sequence[Event]) -> list[Event]:
    """The verdict events, oldest first."""
    return sorted((e for e in events if e.kind in _VERDICTS), key=lambda e: e.id)


def latest_verdicts(events: Sequence[Event]) -> dict[str, Event]:
    """Version key → its newest verdict (what its leaderboard row links to)."""
    out: dict[str, Event] = {}
    for event in verdicts(events):
        candidate = event.payload.get("candidate")
        if isinstance(candidate, str):
            out[candidate] = event
    return out


def decision_rows(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Every gate event as a row of the history page's decisions table."""
    rows = []
    for e in sorted(events, key=lambda e: e.id):
        if e.kind not in (EventKind.GATE_PENDING, *_VERDICTS):
            continue
        p = e.payload
        target = p.get("target") or {}
        rows.append(
            {
                "id": e.id,
                "ts": e.ts.isoformat(),
                "kind": e.kind.value,
                "target": f"{target.get('kind', '')} {target.get('name', '')}".strip(),
                "candidate": p.get("candidate"),
                "incumbent": p.get("incumbent"),
                "actor": e.actor,
                "summary": str(p.get("summary") or p.get("reason") or ""),
                "href": decision_page(e.id) if e.kind in _VERDICTS else None,
            }
        )
    return rows


def _decision(ctx: _Context, event: Event) -> None:
    p = event.payload
    suite = p.get("suite") or {}
    target = p.get("target") or {}
    ctx.render(
        "decision.html",
        decision_page(event.id),
        title=f"Decision {event.id}",
        event=event,
        approved=event.kind is EventKind.GATE_APPROVED,
        target=target,
        candidate=p.get("candidate"),
        incumbent=p.get("incumbent"),
        summary=p.get("summary") or p.get("reason") or "",
        forced=bool(p.get("forced")),
        mode=p.get("mode"),
        alpha=p.get("alpha"),
        digest=suite.get("digest"),
        code_versions=sorted((suite.get("code_versions") or {}).items()),
        criteria=decision_from_record(p),
        pending=p.get("pending"),
        requested_by=p.get("requested_by"),
        sequential=sequential_view(p),
    )


_W, _H, _PAD = 360, 140, 30  # the confidence sequence chart, in SVG units


def sequential_view(record: dict[str, Any]) -> dict[str, Any] | None:
    """A sequential verdict's figures for its page: the scenarios' extents and, per criterion,
    its confidence sequence at each chunk boundary as rows and as a small line chart (plain
    SVG coordinates: the page stays offline)."""
    figures = record.get("sequential")
    if not isinstance(figures, dict):
        return None
    totals = {row["scenario"]: row["total"] for row in figures.get("scenarios") or []}
    criteria = []
    for row in figures.get("criteria") or []:
        path = [p for p in row.get("path") or [] if p[2] is not None and p[3] is not None]
        criteria.append({**row, "rows": path, "chart": _chart(path, row, totals)})
    return {**figures, "criteria": criteria}


def _chart(path: list[list[float]], row: dict[str, Any], totals: dict[str, int]) -> dict | None:
    if not path:
        return None
    total = max(int(totals.get(row["scenario"]) or 0), int(path[-1][0]), 1)
    threshold = float(row["threshold"])
    values = [v for p in path for v in (p[2], p[3])] + [threshold]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5

    def x(n: float) -> float:
        return round(_PAD + (_W - 2 * _PAD) * n / total, 1)

    def y(v: float) -> float:
        return round(_H - _PAD - (_H - 2 * _PAD) * (v - low) / (high - low), 1)

    def line(index: int) -> str:
        return " ".join(f"{x(p[0])},{y(p[index])}" for p in path)

    stop = int(row.get("stopped_at") or path[-1][0])
    return {
        "width": _W,
        "height": _H,
        "low": line(2),
        "high": line(3),
        "threshold_y": y(threshold),
        "x0": x(0),
        "x1": x(total),
        "stop_x": x(stop),
        "top": _PAD,
        "bottom": _H - _PAD,
        "label_low": f"{low:+.3g}",
        "label_high": f"{high:+.3g}",
        "total": total,
        "stop": stop,
    }


def _decisions(ctx: _Context) -> None:
    for event in verdicts(ctx.data.events):
        inputs = inputs_digest(
            "decision",
            event.id,
            event.kind.value,
            event.ts.isoformat(),
            event.actor,
            event.model,
            event.payload,
            ctx.scenarios,
        )
        with ctx.site.unit(f"decision\x1f{event.id}", inputs) as fresh:
            if fresh:
                _decision(ctx, event)
