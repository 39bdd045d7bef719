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
    )


def _decisions(ctx: _Context) -> None:
    for event in verdicts(ctx.data.events):
        _decision(ctx, event)
