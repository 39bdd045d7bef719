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

A prompt alias's pending move is judged on prompt trials (``assay.evaluate.prompt_trials``):
the entries that read the alias, evaluated with the candidate prompt version and with the
version the alias held, on every model version holding a promotion alias, stored apart from
the evaluation. Trials that are not present (for the current suite and code) are run: one
``prompt_trials`` run per model version and prompt version, tagged with the pending request;
one that ended without its tables refuses the request with the run's id and status. Then
``judge_prompt_promotion`` judges the same criteria, with Holm over every model version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, RunsFilter

from assay.compare.decision import PromotionDecision, judge_promotion, judge_prompt_promotion
from assay.compare.sequential import judge_sequential
from assay.evaluate.prompt_trials import (
    PROMPT_TRIAL_TAG,
    TRIAL_MODEL_TAG,
    PromptTrial,
    entries_reading,
    pin_prompt_alias,
    trial_store,
)
from assay.evaluate.registry_prompts import promotion_holders, resolve_prompts
from assay.evaluate.suite import Suite
from assay.registry import Event, Registry, RegistryError
from assay.registry.errors import ErrorCode
from assay.registry.gating import GateTarget, SuiteIdentity, TargetKind
from assay.registry.promotion import PromotionPolicy
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
    partial_for: int | None = None,
) -> str | None:
    """Why version ``key``'s stored evaluation is not current (None when it is).

    A partial evaluation (a sequential decision's, ``assay.evaluate.sequential``) is current
    only for the sequential decision it was evaluated for (``partial_for``, the pending
    event's id); for anything else it needs completing."""
    for scenario in suite.keys:
        partition = f"{key}|{scenario}"
        for asset in _STAMPED:
            materialized = _latest(instance, asset, partition)
            if materialized is None:
                return f"{asset} {partition} was never materialized"
            why = _partial(materialized, partition, asset, partial_for)
            if why is not None:
                return why
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


def _partial(materialized, partition: str, asset: str, partial_for: int | None) -> str | None:
    """Why a partial materialization is not current for this reader (None: it is, or it is
    full)."""
    partial = getattr(materialized.metadata.get("partial"), "value", False)
    if not partial:
        return None
    decision = getattr(materialized.metadata.get("sequential_decision"), "value", None)
    if partial_for is not None and decision == partial_for:
        return None
    done = getattr(materialized.metadata.get("instances_evaluated"), "value", "?")
    total = getattr(materialized.metadata.get("instances_total"), "value", "?")
    return (
        f"{asset} {partition} is a partial evaluation ({done} of {total} instances, for "
        f"promotion decision {decision}); a full evaluation completes it"
    )


@dataclass(frozen=True, slots=True)
class EvaluationNeeded:
    """A version a pending decision waits for, and the request that asked for it.
    ``incumbent``: set for a sequential evaluation of the candidate (``""``: none)."""

    key: str
    pending: Event
    incumbent: str | None = None

    @property
    def sequential(self) -> bool:
        return self.incumbent is not None


@dataclass(frozen=True, slots=True)
class TrialNeeded:
    """A prompt trial a pending prompt move waits for: on ``model_version``, the ``entries``
    that read the alias."""

    model_version: str
    trial: PromptTrial
    entries: tuple[str, ...]
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
        policy: PromotionPolicy | None = None,
    ) -> None:
        self.instance, self.reg, self.store, self.suite = instance, registry, store, suite
        self.identity, self.actor, self.note, self.active = identity, actor, note, active
        self.policy = policy or PromotionPolicy()
        self.evaluations: dict[str, EvaluationNeeded] = {}
        self.trials: list[TrialNeeded] = []

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
            self.answer_prompt(pending, target, candidate)
            return
        incumbent = self.reg.incumbent_of(target, candidate)
        criteria = self.suite.promotion
        relative = criteria.primary_metrics or any(c.relative for c in criteria.criteria)
        needed = [candidate] + ([incumbent] if incumbent and relative else [])
        sequential = criteria.sequential is not None
        if sequential:  # the incumbent first: the candidate's run compares with its scores
            needed.reverse()
        waiting = False
        for key in needed:
            mine = sequential and key == candidate
            why = stale_reason(
                self.instance,
                self.store,
                key,
                self.suite,
                self.identity,
                partial_for=pending.id if mine else None,
            )
            if why is None:
                continue
            if mine and waiting:
                self.note(f"pending {pending.id}: {candidate} is evaluated after {incumbent}")
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
            need = EvaluationNeeded(key, pending, (incumbent or "") if mine else None)
            self.evaluations.setdefault(key, need)
            how = " sequentially" if mine else ""
            self.note(f"pending {pending.id}: evaluating {key}{how} ({why})")
        if waiting:
            return
        if not sequential:
            decision = judge_promotion(self.store, self.suite, candidate, incumbent)
            self.decide(pending, target, decision)
            return
        replayed = judge_sequential(self.store, self.suite, candidate, incumbent)
        if replayed.decision is None:
            stands = ", ".join(
                f"{s} {v.evaluated} of {v.total}" for s, v in replayed.scenarios.items()
            )
            self.refuse(
                pending,
                f"the sequential evaluation of {candidate} stopped before the decision was "
                f"decided ({stands})",
                incumbent,
            )
            return
        self.decide(pending, target, replayed.decision)

    def decide(self, pending: Event, target: GateTarget, decision: PromotionDecision) -> None:
        """Record the verdict and apply an approved move."""
        candidate, incumbent = decision.candidate, decision.incumbent
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

    def answer_prompt(self, pending: Event, target: GateTarget, candidate: str) -> None:
        """A pending prompt-alias move: its trials, then the verdict (see the module doc)."""
        incumbent = self.reg.incumbent_of(target, candidate)
        entries = entries_reading(self.suite, target.owner, target.name)
        if not entries:
            self.refuse(
                pending,
                f"no suite entry reads prompts:/{target.owner}@{target.name}, so nothing can "
                "judge the candidate; a move the suite cannot judge needs forcing, with a reason",
                incumbent,
            )
            return
        holders = promotion_holders(self.reg, self.policy)
        if not holders:
            self.refuse(
                pending,
                "no model version holds a promotion alias to judge the prompt on",
                incumbent,
            )
            return
        sides = [PromptTrial.of(candidate, target.name)]
        if incumbent is not None:
            sides.append(PromptTrial.of(incumbent, target.name))
        waiting = False
        for trial in sides:
            stored = trial_store(self.store, trial, self.identity)
            for holder in holders:
                if all(
                    stored.exists(METRIC_TABLES, evaluation_partition(holder, s)) for s in entries
                ):
                    continue
                waiting = True
                runs = self._trial_runs(pending, trial, holder)
                if any(not run.is_finished for run in runs):
                    self.note(
                        f"pending {pending.id} waits for the trial of {trial.key} on {holder}"
                    )
                    continue
                if runs:
                    run = runs[0]
                    self.refuse(
                        pending,
                        f"the trial of {trial.key} on {holder} (run {run.run_id}, "
                        f"{run.status.value}) left no stored scores",
                        incumbent,
                    )
                    return
                self.trials.append(TrialNeeded(holder, trial, tuple(entries), pending))
                self.note(f"pending {pending.id}: trying {trial.key} on {holder}")
        if waiting:
            return
        entry_suite = replace(self.suite, scenarios={k: self.suite.scenarios[k] for k in entries})
        decision = judge_prompt_promotion(
            trial_store(self.store, sides[0], self.identity),
            trial_store(self.store, sides[1], self.identity) if incumbent else None,
            entry_suite,
            holders,
            candidate,
            incumbent,
            layouts={k: v for trial in sides for k, v in self._layouts(trial, entries).items()},
            criteria=self.suite.promotion,
        )
        self.decide(pending, target, decision)

    def _layouts(self, trial: PromptTrial, entries: list[str]) -> dict[str, str]:
        """Template id → "<entry> layout <i>" of each entry's layouts under ``trial``."""
        pinned = pin_prompt_alias(self.suite, trial)
        out = {}
        for key in entries:
            try:
                config = resolve_prompts(pinned[key], self.reg)
            except ValueError as exc:  # the prompt version cannot fill the layout
                raise RegistryError(ErrorCode.INVALID_PARAMETER_VALUE, str(exc)) from None
            for index, adapter in enumerate(config.adapters):
                out[adapter.template_id] = f"{key} layout {index}"
        return out

    def _trial_runs(self, pending: Event, trial: PromptTrial, holder: str):
        tags = {GATE_PENDING_TAG: str(pending.id), PROMPT_TRIAL_TAG: trial.key}
        records = self.instance.get_run_records(RunsFilter(tags={**tags, TRIAL_MODEL_TAG: holder}))
        return [r.dagster_run for r in records]

    def _ended_run(self, pending: Event, key: str):
        records = self.instance.get_run_records(
            RunsFilter(tags={GATE_PENDING_TAG: str(pending.id), "assay/model_version": key}),
            limit=1,
        )
        return records[0].dagster_run if records else None


__all__ = (
    "GATE_PENDING_TAG",
    "EvaluationNeeded",
    "PendingDecisions",
    "TrialNeeded",
    "stale_reason",
)
