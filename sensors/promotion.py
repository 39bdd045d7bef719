"""Promotion → re-evaluation: the registry's event log drives Dagster runs.

``model_promotion_sensor`` reads registry events after its cursor (the last event id it
handled), adds ``model_version`` partitions for new versions, records their
``registered_models`` partitions, and launches the evaluation of each promoted version across
the whole suite (one partition-range run over ``<key>|<first>`` … ``<key>|<last>``, or one run
per scenario: the shape below).

It never wedges: each event is handled on its own. An event that cannot be handled (a source
that does not resolve, a name that does not parse) is refused: the reason goes to the tick's
log and to the registry's history as a ``promotion_refused`` event, and the cursor moves past
it. Only an outage (the registry's database or the storage unreachable) stops a tick early;
the cursor then stays before the first event not handled, and the next tick retries it.

One evaluation per version at a time: a promotion of a version that already has evaluation
runs queued or running (runs tagged ``assay/model_version``) joins them instead of launching
more, and the tick says so. Versions are immutable, so those runs evaluate exactly what the
later promotion asks for.

The shape of that evaluation is ``$ASSAY_EVALUATION_RUNS``: ``version`` (the default) is one
partition-range run, whose steps run one after another in one process, the cheapest on one
machine; ``scenario`` is one run per (version, scenario) partition, so an executor that spreads
steps over workers (Celery) evaluates the scenarios side by side.

A prompt promotion is a promotion: moving a prompt alias that suite entries read
(``prompts:/name@alias``, see ``assay.evaluate.registry_prompts``) re-evaluates those entries
for every model version holding a promotion alias, under the same rules (refusals, cursor,
one run per version). Its run covers the suite keys from the first to the last entry that
reads the prompt in the ``version`` shape (a range run; entries in between hit the request
cache), and exactly those entries in the ``scenario`` shape. A run it joins resolves prompts
as each partition starts, so partitions it already evaluated keep the earlier prompt version
until the next promotion or the nightly re-evaluation. Moving the alias of a judge's rubric
(``judge_rubric``, or the suite's toxicity judge ``rubric``) re-scores the entries it scores:
the run materializes only ``instance_scores`` and ``metric_tables`` from the stored outputs,
so only the judges are called (a partition with no stored outputs is evaluated whole).

Promotion decisions. At every tick, new events or not, the sensor also answers the open
``gate_pending`` requests (``sensors.gate``): it evaluates what is not current, judges the
suite's promotion criteria once it is, records the verdict and applies an approved move. A
move applied by a verdict is not a promotion to re-evaluate: its results were just judged.
"""

import os

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    MultiPartitionKey,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.data_version import (
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
)

from assay.contamination.declared import record_training_corpora
from assay.evaluate.registry_prompts import prompt_promotions
from assay.evaluate.sequential import INCUMBENT_TAG, SEQUENTIAL_TAG
from assay.evaluate.suite import Suite
from assay.registry import Event, EventKind, ModelVersion, Registry
from assay.registry.gating import current_suite_identity
from assay.registry.promotion import Promotion, PromotionPolicy
from assay.registry.resolved import record_registered_model
from assay.storage.contract import (
    CONTAMINATION,
    CORPUS_DIGEST,
    INSTANCE_SCORES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    MODEL_VERSION,
    PROMPT_TRIALS,
    REGISTERED_MODELS,
    SCENARIO,
    TRAINING_CORPORA,
)
from assay.storage.contract import EVALUATION_ASSETS as EVALUATION_ASSET_NAMES
from assay.storage.parquet import ParquetStore
from assets.partitions import corpus_digest_partitions, model_version_partitions
from resources import ModelsResource, RegistryResource, StorageResource, SuiteResource
from resources.executor import chained_run_config
from sensors.gate import GATE_PENDING_TAG, PendingDecisions
from sensors.outages import is_registry_outage, storage_reachable

# An evaluation also checks the version's contamination on each scenario (its step builds the
# index of a declared corpus that has none yet: see assets.contamination).
EVALUATION_KEYS = [AssetKey(k) for k in (*EVALUATION_ASSET_NAMES, CONTAMINATION)]
# What a judge-rubric promotion runs: the scoring step over the stored outputs.
SCORING_KEYS = [AssetKey(INSTANCE_SCORES), AssetKey(METRIC_TABLES)]
EVALUATION_ASSETS = AssetSelection.assets(*EVALUATION_KEYS)
# What the sensor launches: evaluations, and the prompt trials a pending prompt move waits for.
LAUNCHED_ASSETS = EVALUATION_ASSETS | AssetSelection.assets(PROMPT_TRIALS)
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
MODEL_VERSION_TAG = "assay/model_version"
# The partitions a run evaluates ("<version>|<scenario>", or "<version>|*" for the whole
# suite): the deployment's run queue admits one run per value (deploy/dagster.yaml).
PARTITIONS_TAG = "assay/partitions"
RUN_SHAPES = ("version", "scenario")
REASON_TAG = "assay/reason"
ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
SENSOR_ACTOR = "dagster:model_promotion_sensor"


def max_events_per_tick() -> int:
    return int(os.environ.get("ASSAY_SENSOR_MAX_EVENTS", "100"))


def sensor_interval_s(default: int = 30) -> int:
    """``$ASSAY_SENSOR_INTERVAL_S``: seconds between the ticks of the sensors that follow the
    registry and the tables (promotion, MLflow export, rankings and explorer refresh); each
    has its own ``default``."""
    return int(os.environ.get("ASSAY_SENSOR_INTERVAL_S", str(default)))


def promotion_policy() -> PromotionPolicy:
    """``ASSAY_PROMOTION_ALIASES`` (comma list; unset = any alias) and
    ``ASSAY_PROMOTION_STAGES`` (default Staging,Production)."""
    aliases = os.environ.get("ASSAY_PROMOTION_ALIASES")
    stages = os.environ.get("ASSAY_PROMOTION_STAGES", "Staging,Production")
    return PromotionPolicy.from_lists(
        None if aliases is None else [a.strip() for a in aliases.split(",") if a.strip()],
        [s.strip() for s in stages.split(",") if s.strip()],
    )


def run_shape() -> str:
    """``$ASSAY_EVALUATION_RUNS``: ``version`` (default) or ``scenario`` (see the module doc)."""
    shape = os.environ.get("ASSAY_EVALUATION_RUNS", "").strip().lower() or "version"
    if shape not in RUN_SHAPES:
        raise ValueError(
            f"ASSAY_EVALUATION_RUNS={shape!r} is not a run shape; "
            f"use one of {', '.join(RUN_SHAPES)}"
        )
    return shape


def evaluation_run_requests(
    key: str,
    scenarios: list[str],
    run_key: str,
    reason: str,
    assets: list[AssetKey] = EVALUATION_KEYS,
    extra_tags: dict[str, str] | None = None,
    version_tag: bool = True,
    shape: str | None = None,
) -> list[RunRequest]:
    """The runs evaluating version ``key`` on every scenario, in the configured shape.

    Each run's steps form a chain, so under Dagster's default executor they run in one
    process (``chained_run_config``); a Celery deployment hands them to its workers.
    ``assets``: ``SCORING_KEYS`` re-scores the stored outputs without calling the model.
    ``version_tag``: False for runs that do not evaluate the version (prompt trials), so they
    are not taken for its evaluation. ``shape``: this shape rather than the configured one (a
    sequential evaluation is always one range run).
    """
    tags = {REASON_TAG: reason[:200], **(extra_tags or {})}
    if version_tag:
        tags[MODEL_VERSION_TAG] = key
    if (shape or run_shape()) == "version":  # one partition-range run
        range_tags = {RANGE_START: f"{key}|{scenarios[0]}", RANGE_END: f"{key}|{scenarios[-1]}"}
        return [
            RunRequest(
                run_key=run_key,
                asset_selection=assets,
                run_config=chained_run_config(),
                tags={**range_tags, **tags, PARTITIONS_TAG: f"{key}|*"},
            )
        ]
    return [
        RunRequest(
            run_key=f"{run_key}:{scenario}",
            asset_selection=assets,
            partition_key=MultiPartitionKey({MODEL_VERSION: key, SCENARIO: scenario}),
            run_config=chained_run_config(),
            tags={**tags, PARTITIONS_TAG: f"{key}|{scenario}"},
        )
        for scenario in scenarios
    ]


def active_evaluation(instance: DagsterInstance, key: str) -> str | None:
    """The id of a queued or running evaluation run of version ``key``, if there is one."""
    records = instance.get_run_records(
        RunsFilter(tags={MODEL_VERSION_TAG: key}, statuses=ACTIVE_STATUSES), limit=1
    )
    return records[0].dagster_run.run_id if records else None


class Outage(Exception):
    """The registry or the storage failed: stop the tick here and retry at the next one."""


class _Tick:
    """One evaluation of the sensor: the events it handled and what it asks Dagster to do."""

    def __init__(
        self,
        context: SensorEvaluationContext,
        reg: Registry,
        store: ParquetStore,
        models: ModelsResource,
    ) -> None:
        self.context, self.reg, self.store, self.models = context, reg, store, models
        self.known = set(context.instance.get_dynamic_partitions(MODEL_VERSION))
        self.recorded: dict[str, AssetMaterialization] = {}
        self.corpora: dict[str, AssetMaterialization] = {}
        self.to_add: list[str] = []
        self.known_digests = set(context.instance.get_dynamic_partitions(CORPUS_DIGEST))
        self.digests_to_add: list[str] = []
        self.runs: dict[str, Promotion] = {}  # version key → the promotion that launches it
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        self.lines.append(line)
        self.context.log.info(line)

    def record(self, key: str) -> None:
        """Resolve version ``key`` and record its registered_models partition (once a tick)."""
        if key in self.recorded:
            return
        try:
            version = self.reg.get_version(key)
        except Exception as exc:
            if is_registry_outage(exc):
                raise Outage(f"registry: {type(exc).__name__}") from exc
            raise
        try:
            recorded = record_registered_model(self.store, version, self.models.artifact_digest)
        except OSError as exc:
            # Resolution errors (offline hub, missing file) are OSErrors too; a storage outage
            # is told apart by the store being unreachable right now.
            if not storage_reachable(self.store):
                raise Outage(f"storage: {type(exc).__name__}: {exc}") from exc
            raise
        self.recorded[key] = AssetMaterialization(
            asset_key=AssetKey(REGISTERED_MODELS),
            partition=key,
            metadata=recorded.metadata(),
            description="recorded by model_promotion_sensor",
        )
        if key not in self.known:
            self.known.add(key)
            self.to_add.append(key)
        self.record_corpora(version)

    def record_corpora(self, version: ModelVersion) -> None:
        """Record the version's ``training_corpora`` (its corpora's digests, the data version
        its contamination partitions depend on) and add a ``corpus_digest`` partition for
        each new digest. A corpus that cannot be read fails the event, which is refused."""
        try:
            recorded = record_training_corpora(self.store, version.key, version.training_data)
        except OSError as exc:
            if not storage_reachable(self.store):
                raise Outage(f"storage: {type(exc).__name__}: {exc}") from exc
            raise
        self.corpora[version.key] = AssetMaterialization(
            asset_key=AssetKey(TRAINING_CORPORA),
            partition=version.key,
            metadata=recorded.metadata(),
            tags={
                DATA_VERSION_TAG: recorded.data_version,
                DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
            },
            description="recorded by model_promotion_sensor",
        )
        for digest in recorded.digests:
            if digest not in self.known_digests:
                self.known_digests.add(digest)
                self.digests_to_add.append(digest)

    def handle(self, event: Event, promotions: list[Promotion]) -> None:
        if event.kind is EventKind.VERSION_CREATED and event.key:
            self.record(event.key)
        if event.kind is EventKind.TRAINING_DATA_SET and event.key:
            # A new manifest: record its digests, so a changed corpus marks exactly this
            # version's contamination partitions stale (nothing is launched).
            self.record_corpora(self.reg.get_version(event.key))
        for promotion in promotions:
            if len(promotions) == 1:
                self.promote(event, promotion)
                continue
            # A prompt promotion asks for several versions: one that cannot be handled is
            # refused on its own and the others still run.
            try:
                self.promote(event, promotion)
            except Outage:
                raise
            except Exception as exc:
                self.refuse(event, exc, about=promotion.key)

    def promote(self, event: Event, promotion: Promotion) -> None:
        self.record(promotion.key)
        if promotion.key in self.runs:
            first = self.runs[promotion.key]
            self.runs[promotion.key] = first.joined(promotion)
            self.note(
                f"event {event.id} ({promotion.reason}) joins the run requested by event "
                f"{first.event_id}"
            )
            return
        try:
            running = active_evaluation(self.context.instance, promotion.key)
        except Exception as exc:  # the instance's run storage, not the event, failed
            raise Outage(f"Dagster run storage: {type(exc).__name__}") from exc
        if running is not None:
            self.note(
                f"event {event.id} ({promotion.reason}) skipped: run {running} already "
                f"evaluates {promotion.key}"
            )
            return
        self.runs[promotion.key] = promotion

    def rescorable(self, promotion: Promotion, scenarios: list[str]) -> bool:
        """Whether a judge-rubric promotion can score stored outputs: every partition it
        covers has them (one never evaluated is evaluated whole)."""
        if not promotion.rescore_only:
            return False
        try:
            return all(
                self.store.exists(MODEL_OUTPUTS, {MODEL_VERSION: promotion.key, SCENARIO: s})
                for s in scenarios
            )
        except Exception:  # the storage cannot say: evaluate, which needs no stored outputs
            return False

    def refuse(self, event: Event, exc: Exception, about: str = "") -> None:
        reason = f"{about + ': ' if about else ''}{type(exc).__name__}: {exc}"
        self.note(f"event {event.id} ({event.kind.value} {event.key or '-'}) refused: {reason}")
        try:
            self.reg.refuse_promotion(event, reason, actor=SENSOR_ACTOR)
        except Exception as again:
            if is_registry_outage(again):
                raise Outage(f"registry: {type(again).__name__}") from again
            raise


def _answer_pending(
    context: SensorEvaluationContext,
    reg: Registry,
    tick: _Tick,
    loaded: Suite,
    suite: SuiteResource,
) -> list[RunRequest]:
    """Answer the open pending promotion decisions (``sensors.gate``); the evaluation runs
    they wait for, unless this tick already launches one for the version."""
    gate = PendingDecisions(
        context.instance,
        reg,
        tick.store,
        loaded,
        current_suite_identity(suite.path),
        SENSOR_ACTOR,
        tick.note,
        lambda key: active_evaluation(context.instance, key),
        promotion_policy(),
    )
    try:
        gate.answer_all()
    except Exception as exc:  # an outage or a bug: the requests stay pending, retried next tick
        context.log.warning(
            f"pending promotion decisions not answered: {type(exc).__name__}: {exc}"
        )
    requests: list[RunRequest] = []
    for key, need in gate.evaluations.items():
        if key in tick.runs:
            continue
        try:
            tick.record(key)
        except Exception as exc:
            tick.note(f"pending {need.pending.id}: {key} cannot be evaluated: {exc}")
            continue
        reason = f"promotion decision {need.pending.id}: {need.pending.payload.get('candidate')}"
        tags = {GATE_PENDING_TAG: str(need.pending.id)}
        if need.sequential:  # one range run: the decision stops across scenarios
            tags |= {SEQUENTIAL_TAG: str(need.pending.id), INCUMBENT_TAG: need.incumbent or ""}
            reason = f"sequential {reason}"
        requests += evaluation_run_requests(
            key,
            loaded.keys,
            f"gate-{need.pending.id}-{key}",
            reason,
            extra_tags=tags,
            shape="version" if need.sequential else None,
        )
    for trial in gate.trials:
        pending, holder = trial.pending, trial.model_version
        try:
            tick.record(holder)
        except Exception as exc:
            tick.note(f"pending {pending.id}: {holder} cannot be tried: {exc}")
            continue
        requests += evaluation_run_requests(
            holder,
            [k for k in loaded.keys if k in trial.entries],
            f"gate-{pending.id}-{trial.trial.key}-{holder}",
            f"promotion decision {pending.id}: trial of {trial.trial.key} on {holder}",
            assets=[AssetKey(PROMPT_TRIALS)],
            extra_tags={GATE_PENDING_TAG: str(pending.id), **trial.trial.tags(holder)},
            version_tag=False,
        )
    return requests


def _promotions(
    event: Event, policy: PromotionPolicy, loaded: Suite, reg: Registry
) -> list[Promotion]:
    """The model promotion an event is, or the prompt promotions it asks for."""
    promotion = policy.promotion(event)
    if promotion is not None:
        return [promotion]
    try:
        return prompt_promotions(event, loaded, reg, policy)
    except Exception as exc:
        if is_registry_outage(exc):
            raise Outage(f"registry: {type(exc).__name__}") from exc
        raise


def _in_suite_order(loaded: Suite, promotion: Promotion) -> list[str]:
    if promotion.scenarios is None:
        return loaded.keys
    return [k for k in loaded.keys if k in promotion.scenarios]


@sensor(
    name="model_promotion_sensor",
    minimum_interval_seconds=sensor_interval_s(),
    asset_selection=LAUNCHED_ASSETS,
    description="Re-evaluates a model version across the suite when it is promoted "
    "(an alias set or moved, or a move to Staging/Production), and the suite entries that read "
    "a prompt alias when it moves, for every version holding a promotion alias; one evaluation "
    "per version at a time; events it cannot handle are refused in the registry's history. "
    "Answers pending promotion decisions: evaluates the candidate (or, for a prompt, runs its "
    "prompt_trials), judges it and applies or refuses the move.",
)
def model_promotion_sensor(
    context: SensorEvaluationContext,
    registry: RegistryResource,
    storage: StorageResource,
    models: ModelsResource,
    suite: SuiteResource,
):
    after = int(context.cursor or 0)
    run_shape()  # a misconfigured shape fails the tick before it changes anything
    try:
        reg = registry.open()
        events = reg.events(after_id=after, limit=max_events_per_tick())
        waiting = reg.open_pending()
    except Exception as exc:  # any registry outage: skip the tick, keep the cursor
        return SkipReason(
            f"registry unreachable ({type(exc).__name__}); cursor stays at event {after}"
        )
    if not events and not waiting:
        return SkipReason(f"no registry events after id {after}")

    policy, tick, cursor, stopped = (
        promotion_policy(),
        _Tick(context, reg, storage.store(), models),
        after,
        None,
    )
    loaded = suite.load()
    for event in events:
        try:
            try:
                tick.handle(event, _promotions(event, policy, loaded, reg))
            except Outage:
                raise
            except Exception as exc:  # this event cannot be handled: refuse it, move on
                tick.refuse(event, exc)
        except Outage as outage:
            stopped = f"stopped before event {event.id}: {outage}; retried at the next tick"
            context.log.warning(stopped)
            break
        cursor = event.id

    gate_runs = _answer_pending(context, reg, tick, loaded, suite) if waiting else []
    run_requests = []
    for key, p in tick.runs.items():
        scenarios = _in_suite_order(loaded, p)
        assets = SCORING_KEYS if tick.rescorable(p, scenarios) else EVALUATION_KEYS
        # A prompt promotion asks for several versions in one event: the key names both.
        run_key = f"promotion-{p.event_id}-{key}"
        run_requests += evaluation_run_requests(key, scenarios, run_key, p.reason, assets)
    run_requests += gate_runs
    handled = f"events {after + 1}..{cursor}" if cursor > after else "no new events"
    summary = (
        f"{handled}: {len(tick.to_add)} new partitions, {len(run_requests)} evaluation runs"
        + (f", {len(waiting)} pending promotion decisions" if waiting else "")
    )
    context.log.info(summary)
    details = "; ".join([*tick.lines, *([stopped] if stopped else [])])
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[
            AddDynamicPartitionsRequest(definition.name, keys)
            for definition, keys in (
                (model_version_partitions, tick.to_add),
                (corpus_digest_partitions, tick.digests_to_add),
            )
            if keys
        ],
        asset_events=[*tick.recorded.values(), *tick.corpora.values()],
        cursor=str(cursor),
        skip_reason=None if run_requests else SkipReason(f"{summary}. {details}"[:1000]),
    )
