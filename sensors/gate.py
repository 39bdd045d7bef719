"""Pending promotion decisions, answered by the promotion sensor at each tick.

For each ``gate_pending`` event no verdict has answered (``Registry.open_pending``):

1. the candidate's evaluation (and the incumbent's, when a relative criterion needs it) must
   be **current**: every scenario of the suite materialized with today's code versions of the
   evaluation assets (Dagster's ``dagster/code_version`` tag on ``model_outputs``,
   ``instance_scores`` and ``metric_tables``) and from today's suite entry (the
   ``suite_entries`` digests the assets stamp);
2. a version that is not current is evaluated: one run, unless one is already queued or running
   for it (runs tagged ``assay/model_version``); a run launched for this request that ended
   without producing current results refuses the request with the run's id and status;
3. once current, ``assay.compare.decision.judge_promotion`` judges the criteria, the verdict is
   recorded (``gate_approved`` / ``gate_refused``, every figure in the payload) and an
   approved move is applied through the registry's one ruling.

A prompt alias's pending move is refused with the reason: judging a candidate prompt needs
the candidate's outputs stored beside the incumbent's, which the storage does not keep yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, RunsFilter

from assay.compare.decision import judge_promotion
from assay.evaluate.suite import Suite
from assay.registry import Event, Registry, RegistryError
from assay.registry.gating import GateTarget, SuiteIdentity, TargetKind
from assay.storage.contract import (
    INSTANCE_SCORES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    evaluation_partition,
)
from assay.storage.parquet import ParquetStore

GATE_PENDING_TAG = "assay/gate_pending"
CODE_VERSION_TAG = "dagster/code_version"
_STAMPED = (MODEL_OUTPUTS, INSTANCE_SCORES, METRIC_TABLES)  # carry ``suite_entries``


def _latest(instance: DagsterInstance, asset: str, partition: str):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0].asset_materialization if records else None


def stale_reason(
    instance: DagsterInstance,
    store: ParquetStore,
    key: str,
    suite: Suite,
    identity: SuiteIdentity,
) -> str | None:
    """Why version ``key``'s stored evaluation is not current (None when it is)."""
    for scenario in suite.keys:
        partition = f"{key}|{scenario}"
        for asset in _STAMPED:
            materialized = _latest(instance, asset, partition)
            if materialized is None:
                return f"{asset} {partition} was never materialized"
            code, now = materialized.tags.get(CODE_VERSION_TAG), identity.code_versions.get(asset)
            if code != now:
                return f"{asset} {partition} is from code {code} (now {now})"
            entries = materialized.metadata.get("suite_entries")
            digests = getattr(entries, "value", None)
            if not isinstance(digests, dict) or digests.get(scenario) != suite.entry_digests.get(
                scenario
            ):
                return f"{asset} {partition} is from another version of the suite entry"
        if not store.exists(METRIC_TABLES, evaluation_partition(key, scenario)):
            return f"metric_tables {partition} is not in the store"
    return None


@dataclass(frozen=True, slots=True)
class EvaluationNeeded:
    """A version a pending decision waits for, and the request that asked for it."""

    key: str
    pending: Event


class PendingDecisions:
    """One tick's pass over the open pending moves."""

    def __init__(
        self,
        instance: DagsterInstance,
        registry: Registry,
        store: ParquetStore,
        suite: Suite,
        identity: SuiteIdentity,
        actor: str,
        note: Callable[[str], None],
        active: Callable[[str], str | None],
    ) -> None:
        self.instance, self.reg, self.store, self.suite = instance, registry, store, suite
        self.identity, self.actor, self.note, self.active = identity, actor, note, active
        self.evaluations: dict[str, EvaluationNeeded] = {}

    def answer_all(self) -> None:
        for pending in self.reg.open_pending():
            try:
                self.answer(pending)
            except RegistryError as exc:  # this request cannot be answered: refuse it, go on
                self.refuse(pending, f"{type(exc).__name__}: {exc}")

    def refuse(self, pending: Event, why: str, incumbent: str | None = None) -> None:
        target = GateTarget.from_json(pending.payload["target"])
        self.reg.record_verdict(
            target,
            pending.payload["candidate"],
            incumbent if incumbent is not None else pending.payload.get("incumbent"),
            self.identity,
            {"approved": False, "judged": False, "summary": f"refused: {why}", "criteria": []},
            approved=False,
            pending=pending,
            actor=self.actor,
        )
        self.note(f"pending {pending.id} refused: {why}")

    def answer(self, pending: Event) -> None:
        target = GateTarget.from_json(pending.payload["target"])
        candidate = str(pending.payload["candidate"])
        if target.kind is TargetKind.PROMPT_ALIAS:
            self.refuse(
                pending,
                "prompt promotions are not judged by the promotion sensor yet: the candidate "
                "prompt's outputs would replace the incumbent's in storage",
            )
            return
        incumbent = self.reg.incumbent_of(target, candidate)
        criteria = self.suite.promotion
        relative = criteria.primary_metrics or any(c.relative for c in criteria.criteria)
        needed = [candidate] + ([incumbent] if incumbent and relative else [])
        waiting = False
        for key in needed:
            why = stale_reason(self.instance, self.store, key, self.suite, self.identity)
            if why is None:
                continue
            waiting = True
            if self.active(key) is not None:
                self.note(f"pending {pending.id} waits for the run evaluating {key}")
                continue
            ended = self._ended_run(pending, key)
            if ended is not None:
                self.refuse(
                    pending,
                    f"the evaluation of {key} (run {ended.run_id}, {ended.status.value}) "
                    f"left it without current results: {why}",
                    incumbent,
                )
                return
            self.evaluations.setdefault(key, EvaluationNeeded(key, pending))
            self.note(f"pending {pending.id}: evaluating {key} ({why})")
        if waiting:
            return
        decision = judge_promotion(self.store, self.suite, candidate, incumbent)
        verdict = self.reg.record_verdict(
            target,
            candidate,
            incumbent,
            self.identity,
            decision.to_record(),
            approved=decision.approved,
            pending=pending,
            actor=self.actor,
        )
        self.note(f"pending {pending.id} → verdict {verdict.id}: {decision.summary}"[:500])
        if decision.approved:
            moved = self.reg.apply_verdict(verdict, actor=self.actor)
            self.note(f"verdict {verdict.id}: {moved.sentence}"[:500])

    def _ended_run(self, pending: Event, key: str):
        records = self.instance.get_run_records(
            RunsFilter(tags={GATE_PENDING_TAG: str(pending.id), "assay/model_version": key}),
            limit=1,
        )
        return records[0].dagster_run if records else None


__all__ = ("GATE_PENDING_TAG", "EvaluationNeeded", "PendingDecisions", "stale_reason")
