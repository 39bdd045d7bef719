"""``model_outputs`` and the scores computed from them, per model version × scenario."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    BackfillPolicy,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    Output,
    asset,
    multi_asset,
)

from assay.compare.sequential import run_sequential_evaluation
from assay.core.environment import runtime_environment
from assay.evaluate.partition import PartitionOutputs, run_partition
from assay.evaluate.sequential import (
    INCUMBENT_TAG,
    SEQUENTIAL_TAG,
    extent_of_outputs,
    mark_extent,
    mark_outputs,
    outputs_table,
)
from assay.evaluate.suite import Suite
from assay.registry.resolved import ResolvedModel
from assay.report import scenario_page
from assay.scoring.partition import SuiteScorer
from assay.storage.code_versions import code_version
from assay.storage.contract import (
    CONTAMINATION,
    INSTANCE_SCORES,
    JUDGE_REPLIES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    MODEL_VERSION,
    PERTURBED_INSTANCES,
    REGISTERED_MODELS,
    SCENARIO,
    SCENARIO_INSTANCES,
    evaluation_key,
    evaluation_partition,
)
from assay.storage.parquet import ParquetStore
from assets.common import (
    add_partition_metadata,
    by_key,
    evaluation_keys,
    explorer_link,
    markdown_table,
    model_version_of,
    partitioned_output,
    scenario_of,
)
from assets.partitions import evaluation_partitions
from resources import ModelsResource, RegistryResource, StorageResource, SuiteResource

MODEL_POOL = "model-inference"
_PREVIEW_COLUMNS = ["instance_id", "perturbation", "trial", "text", "latency_s", "cached"]
_FROM_MODEL_VERSION = MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL_VERSION)
_FROM_SCENARIO = MultiToSingleDimensionPartitionMapping(partition_dimension_name=SCENARIO)


@asset(
    partitions_def=evaluation_partitions,
    ins={
        REGISTERED_MODELS: AssetIn(partition_mapping=_FROM_MODEL_VERSION),
        SCENARIO_INSTANCES: AssetIn(partition_mapping=_FROM_SCENARIO),
    },
    # Read through the storage resource rather than the IO manager, so a missing partition
    # (a scenario without perturbations, or a run of the evaluation assets alone) is not an
    # error; see assay.evaluate.partition.perturbed_inputs.
    deps=[AssetDep(PERTURBED_INSTANCES, partition_mapping=_FROM_SCENARIO)],
    group_name="evaluation",
    kinds={"pytorch", "parquet"},
    code_version=code_version(MODEL_OUTPUTS),
    io_manager_key="parquet_io_manager",
    # A promotion re-evaluates one version across the whole suite in a single run.
    backfill_policy=BackfillPolicy.single_run(),
    # Runs that call models share the pool's limit (set per deployment, e.g.
    # `dagster instance concurrency set model-inference 2`), so several runs never
    # overload one endpoint or machine.
    pool=MODEL_POOL,
    description=(
        "One row per request: prompt and template id, trial, perturbation, completion text, "
        "tokens, per-choice log-likelihoods with token/char/byte counts, latency, cache hit, "
        "error, and the version's token prices when it was evaluated (cost is priced from "
        "these). Perturbed inputs run with the base prompt layout."
    ),
)
def model_outputs(
    context: AssetExecutionContext,
    registered_models,
    scenario_instances,
    suite: SuiteResource,
    models: ModelsResource,
    storage: StorageResource,
    registry: RegistryResource,
):
    keys = evaluation_keys(context)
    versions = by_key(registered_models, [model_version_of(k) for k in keys])
    reg = registry.open()
    scenarios = by_key(scenario_instances, [scenario_of(k) for k in keys])
    loaded = suite.load()
    decision = context.run.tags.get(SEQUENTIAL_TAG)
    if decision is not None:
        results, metadata = _sequential_outputs(
            context, keys, versions, scenarios, loaded, decision, suite, models, storage, registry
        )
        return partitioned_output(context, results, metadata)
    results, metadata = {}, {}
    for key in keys:
        resolved = ResolvedModel.from_table(versions[model_version_of(key)])
        config = loaded[scenario_of(key)]
        done = run_partition(
            models.client(resolved.spec),
            config,
            scenarios[scenario_of(key)],
            store=storage.store(),
            label=f"{resolved.key} × {config.key}",
            max_instances=suite.max_instances,
            max_failure_fraction=models.max_failure_fraction,
            log=context.log.info,
            warn=context.log.warning,
            # Pinned with the outputs: cost changes only when the version is evaluated again.
            prices=reg.get_version(resolved.key).prices.token_prices(),
            registry=registry.open,
        )
        results[str(key)] = done.table
        metadata[str(key)] = {
            **done.figures(),
            "model_artifact_digest": resolved.artifact_digest,
            "preview": markdown_table(done.table.select(_PREVIEW_COLUMNS), 10),
            "suite_entries": suite_entries(loaded, key),
        }
        context.log.info(done.summary())
    return partitioned_output(context, results, metadata)


def _sequential_outputs(
    context: AssetExecutionContext,
    keys: list,
    versions: dict,
    scenarios: dict,
    loaded: Suite,
    decision: str,
    suite: SuiteResource,
    models: ModelsResource,
    storage: StorageResource,
    registry: RegistryResource,
) -> tuple[dict, dict]:
    """A promotion decision's sequential evaluation of one version across the suite
    (``assay.compare.sequential``): chunk by chunk in each scenario's instance order, each
    chunk scored in process against the incumbent's stored scores, every scenario stopped as
    soon as the decision no longer needs it. The tables hold the instances evaluated; their
    schema metadata says how many of how many and why it stopped, which the scoring step
    copies into ``metric_tables``."""
    if loaded.promotion.sequential is None:
        raise ValueError(
            f"run tag {SEQUENTIAL_TAG}={decision} asks for a sequential evaluation, and the "
            "suite's promotion block has no 'sequential' settings"
        )
    candidates = {model_version_of(k) for k in keys}
    covered = {scenario_of(k) for k in keys}
    if len(candidates) != 1 or covered != set(loaded.keys):
        raise ValueError(
            f"a sequential evaluation covers one version on every scenario of the suite; this "
            f"run covers {sorted(candidates)} × {sorted(covered)}"
        )
    (candidate,) = candidates
    incumbent = context.run.tags.get(INCUMBENT_TAG) or None
    resolved = ResolvedModel.from_table(versions[candidate])
    prices = registry.open().get_version(resolved.key).prices.token_prices()
    environment = runtime_environment()
    evaluated = run_sequential_evaluation(
        loaded,
        candidate,
        incumbent,
        scenarios,
        models.client(resolved.spec),
        SuiteScorer(loaded, registry.open, models.client),
        storage.store(),
        max_instances=suite.max_instances,
        registry=registry.open,
        prices=prices,
        environment=environment,
        max_failure_fraction=models.max_failure_fraction,
        label=resolved.key,
        log=context.log.info,
        warn=context.log.warning,
    )
    parts, replayed = evaluated.parts, evaluated.replayed
    if replayed.decision is not None:  # the sensor records the verdict from the stored tables
        context.log.info(f"provisional: {replayed.decision.sequential['summary']}")
    results, metadata = {}, {}
    for key in keys:
        scenario = scenario_of(key)
        part, stop = parts[scenario], replayed.scenarios[scenario]
        table = outputs_table(part, prices, environment)
        if part.partial:
            table = mark_outputs(table, decision, part.evaluated, part.total, stop.reason)
        done = PartitionOutputs(
            f"{resolved.key} × {scenario}",
            table,
            part.run(),
            "sequential",
            part.config.adapter.template_id,
            tuple(sorted({v.uri for vs in part.config.prompt_templates.values() for v in vs})),
            environment,
        )
        results[str(key)] = table
        metadata[str(key)] = {
            **done.figures(),
            "model_artifact_digest": resolved.artifact_digest,
            "preview": markdown_table(table.select(_PREVIEW_COLUMNS), 10),
            "suite_entries": suite_entries(loaded, key),
            "sequential_decision": int(decision),
            "partial": part.partial,
            "instances_evaluated": part.evaluated,
            "instances_total": part.total,
            "stop_reason": stop.reason,
        }
        context.log.info(
            f"{resolved.key} × {scenario}: {part.evaluated} of {part.total} instances "
            f"({stop.reason})"
        )
    return results, metadata


def _scored(asset: str, description: str) -> AssetOut:
    """An output of the scoring step, versioned by the sources that define its table."""
    return AssetOut(
        group_name="evaluation",
        kinds={"python", "parquet"},
        code_version=code_version(asset),
        io_manager_key="parquet_io_manager",
        description=description,
    )


@multi_asset(
    partitions_def=evaluation_partitions,
    ins={
        MODEL_OUTPUTS: AssetIn(),
        SCENARIO_INSTANCES: AssetIn(partition_mapping=_FROM_SCENARIO),
    },
    # Read through the storage resource, so a partition never checked for contamination is
    # no error: its scorecard says "not checked" and has no clean slice.
    deps=[AssetDep(CONTAMINATION)],
    outs={
        INSTANCE_SCORES: _scored(
            INSTANCE_SCORES,
            "Per-instance stats in long format (instance, perturbation, trial, "
            "template, metric, family, group, value).",
        ),
        METRIC_TABLES: _scored(
            METRIC_TABLES,
            "The scorecard of the seven families (accuracy, calibration, "
            "robustness, fairness, bias, toxicity, efficiency): mean, count and 95% interval "
            "per metric, family, group and perturbation; a metric that cannot be computed is "
            "a row with its reason and a NaN mean. Where the partition was checked for "
            "contamination: the contamination rate, the clean subset's rows (subset=clean) and "
            "clean − full per headline metric (subset=clean-full).",
        ),
    },
    backfill_policy=BackfillPolicy.single_run(),
    # Runs that call models share the pool's limit (set per deployment, e.g.
    # `dagster instance concurrency set model-inference 2`), so several runs never
    # overload one endpoint or machine.
    pool=MODEL_POOL,
)
def scores(
    context: AssetExecutionContext,
    model_outputs,
    scenario_instances,
    suite: SuiteResource,
    registry: RegistryResource,
    models: ModelsResource,
    storage: StorageResource,
):
    """Score stored model outputs; never calls the evaluated model, so metric changes are cheap.

    Judges (toxicity judge, LLM-as-judge entries) are other registered versions; their
    requests go through the request cache, so rescoring asks them only once.
    """
    keys = evaluation_keys(context)
    outputs_by_key = by_key(model_outputs, [str(k) for k in keys])
    scenarios = by_key(scenario_instances, [scenario_of(k) for k in keys])
    scorer = SuiteScorer(suite.load(), registry.open, models.client)
    store = storage.store()
    where = {str(k): evaluation_partition(model_version_of(k), scenario_of(k)) for k in keys}
    # Which partitions were checked for contamination and have judges' replies from an earlier
    # scoring: one listing per version, not a lookup per partition (an object store's round
    # trips); the contamination tables are read a few at a time.
    stored_checks = _stored(store, CONTAMINATION, keys)
    checked = [k for k in where if k in stored_checks]
    replied = _stored(store, JUDGE_REPLIES, keys)
    contamination = dict(
        zip(checked, store.read_many(CONTAMINATION, [where[k] for k in checked]), strict=True)
    )
    per_instance, cards, metadata = {}, {}, {}
    partial: dict[str, dict] = {}
    replies = []  # (partition, the judges' replies) to write
    for key in keys:
        scored = scorer.score(
            model_version_of(key),
            scenario_of(key),
            scenarios[scenario_of(key)],
            outputs_by_key[str(key)],
            seed_key=str(key),
            contamination=contamination.get(str(key)),
        )
        per_instance[str(key)], cards[str(key)] = scored.stats_table, scored.card_table
        # A sequential decision's partial evaluation says so on every scorecard row.
        extent = extent_of_outputs(outputs_by_key[str(key)])
        partial[str(key)] = {}
        if extent is not None and extent.partial:
            cards[str(key)] = mark_extent(
                cards[str(key)], extent.evaluated, extent.total, extent.stop_reason
            )
            partial[str(key)] = {
                "partial": True,
                "sequential_decision": int(extent.decision),
                "instances_evaluated": extent.evaluated,
                "instances_total": extent.total,
                "stop_reason": extent.stop_reason,
            }
        for failure in scored.scorer_failures:  # the instance fails, not the partition
            context.log.warning(failure.message)
        # The judges' replies go next to the scores (shown on the explorer's instance pages);
        # a partition no judge replied on keeps none from an earlier scoring.
        if scored.replies is not None:
            replies.append((where[str(key)], scored.replies))
        elif str(key) in replied:
            store.delete(JUDGE_REPLIES, where[str(key)])
        metadata[str(key)] = {
            **{m: MetadataValue.float(v) for m, v in scored.headline().items()},
            **scored.figures(),
            "scorecard": markdown_table(cards[str(key)], 30),
            "explorer": explorer_link(store, scenario_page(scenario_of(key))),
            "suite_entries": suite_entries(scorer.suite, key),
            **partial[str(key)],
        }
    store.write_many(JUDGE_REPLIES, replies)
    entries = {
        str(k): {"suite_entries": suite_entries(scorer.suite, k), **partial[str(k)]} for k in keys
    }
    if len(keys) == 1:
        yield Output(
            next(iter(per_instance.values())), INSTANCE_SCORES, metadata=entries[str(keys[0])]
        )
        yield Output(next(iter(cards.values())), METRIC_TABLES, metadata=metadata[str(keys[0])])
    else:
        # Each partition of the range gets its own scorecard, headline and explorer link.
        add_partition_metadata(context, entries, asset_key=INSTANCE_SCORES)
        add_partition_metadata(context, metadata, asset_key=METRIC_TABLES)
        yield Output(per_instance, INSTANCE_SCORES)
        yield Output(cards, METRIC_TABLES)


def _stored(store: ParquetStore, asset: str, keys: list) -> set[str]:
    """The keys among ``keys`` whose partition of ``asset`` is stored, from one listing of
    each of their versions' folders."""
    found = set()
    for version in sorted({model_version_of(k) for k in keys}):
        for partition in store.partitions(asset, {MODEL_VERSION: version}):
            found.add(evaluation_key(version, partition.get(SCENARIO, "")))
    return found & {str(k) for k in keys}


def suite_entries(loaded: Suite, key) -> MetadataValue:
    """Scenario → digest of the suite entry a partition's table was computed with: what a
    promotion verdict checks is current."""
    scenario = scenario_of(key)
    return MetadataValue.json({scenario: loaded.entry_digests.get(scenario, "")})
