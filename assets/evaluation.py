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

from assay.digests import digest_json
from assay.evaluation import (
    ProgressLog,
    check_failures,
    evaluate,
    perturb_eval_instances,
    perturbed_from_table,
    select_instances,
)
from assay.judge import Rubric, judge_clients, toxicity_scorer
from assay.models.registration import ResolvedModel
from assay.perturbations import PerturbedInstance
from assay.records import Instance, InstanceStat, ModelOutput
from assay.report import scenario_page
from assay.scoring import SCORING_VERSION, judge_partition, score_partition, scorecard_table
from assay.suite import ScenarioConfig
from assets.common import (
    by_key,
    evaluation_keys,
    explorer_link,
    markdown_table,
    model_version_of,
    partitioned_output,
    scenario_of,
)
from assets.partitions import MODEL_VERSION, SCENARIO, evaluation_partitions
from resources import ModelsResource, RegistryResource, StorageResource, SuiteResource

MODEL_POOL = "model-inference"
_FROM_MODEL_VERSION = MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL_VERSION)
_FROM_SCENARIO = MultiToSingleDimensionPartitionMapping(partition_dimension_name=SCENARIO)


@asset(
    partitions_def=evaluation_partitions,
    ins={
        "registered_models": AssetIn(partition_mapping=_FROM_MODEL_VERSION),
        "scenario_instances": AssetIn(partition_mapping=_FROM_SCENARIO),
    },
    # Read through the storage resource rather than the IO manager, so a missing partition
    # (a scenario without perturbations, or a run of the evaluation assets alone) is not an
    # error; see _perturbed.
    deps=[AssetDep("perturbed_instances", partition_mapping=_FROM_SCENARIO)],
    group_name="evaluation",
    kinds={"pytorch", "parquet"},
    code_version="2",
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
        "error. Perturbed inputs run with the base prompt layout."
    ),
)
def model_outputs(
    context: AssetExecutionContext,
    registered_models,
    scenario_instances,
    suite: SuiteResource,
    models: ModelsResource,
    storage: StorageResource,
):
    keys = evaluation_keys(context)
    versions = by_key(registered_models, [model_version_of(k) for k in keys])
    scenarios = by_key(scenario_instances, [scenario_of(k) for k in keys])
    loaded = suite.load()
    results, metadata = {}, {}
    for key in keys:
        resolved = ResolvedModel.from_table(versions[model_version_of(key)])
        config = loaded[scenario_of(key)]
        every = Instance.from_table(scenarios[scenario_of(key)])
        instances, train = select_instances(config, every, suite.max_instances)
        perturbed, source = _perturbed(context, storage, config, every, instances)
        label = f"{resolved.key} × {config.key}"
        run = evaluate(
            models.client(resolved.spec),
            config,
            instances,
            train,
            progress=ProgressLog(context.log.info, label),
            perturbed=perturbed,
        )
        check_failures(run, models.max_failure_fraction, label)
        results[str(key)] = ModelOutput.to_table(run.outputs)
        n = len(run.outputs)
        n_perturbed = sum(bool(o.request.perturbation) for o in run.outputs)
        metadata = {
            "num_requests": n,
            "num_perturbed_requests": n_perturbed,
            "perturbed_inputs_from": source,
            "num_failed": run.n_failed,
            "num_cached": run.n_cached,
            "wall_s": round(run.wall_s, 3),
            "requests_per_s": round(n / run.wall_s, 3) if run.wall_s > 0 else None,
            "template_id": config.adapter.template_id,
            "prompts_digest": digest_json([o.request.prompt_digest for o in run.outputs]),
            "model_artifact_digest": resolved.artifact_digest,
            "preview": markdown_table(
                results[str(key)].select(
                    ["instance_id", "perturbation", "trial", "text", "latency_s", "cached"]
                ),
                10,
            ),
        }
        context.log.info(
            f"{label}: {n} requests ({n_perturbed} perturbed), {run.n_cached} cached, "
            f"{run.n_failed} failed, {run.wall_s:.1f}s"
        )
    return partitioned_output(context, results, metadata)


@multi_asset(
    partitions_def=evaluation_partitions,
    ins={
        "model_outputs": AssetIn(),
        "scenario_instances": AssetIn(partition_mapping=_FROM_SCENARIO),
    },
    outs={
        "instance_scores": AssetOut(
            group_name="evaluation",
            kinds={"python", "parquet"},
            code_version=SCORING_VERSION,
            io_manager_key="parquet_io_manager",
            description="Per-instance stats in long format (instance, perturbation, trial, "
            "template, metric, family, group, value).",
        ),
        "metric_tables": AssetOut(
            group_name="evaluation",
            kinds={"python", "parquet"},
            code_version=SCORING_VERSION,
            io_manager_key="parquet_io_manager",
            description="The scorecard of the seven families (accuracy, calibration, "
            "robustness, fairness, bias, toxicity, efficiency): mean, count and 95% interval "
            "per metric, family, group and perturbation; a metric that cannot be computed is "
            "a row with its reason and a NaN mean.",
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
    loaded = suite.load()
    toxicity = toxicity_scorer(loaded.toxicity, registry.open, models.client)
    judge_setups = {}  # one client per judge per run, however many partitions it scores
    per_instance, cards, metadata = {}, {}, {}
    for key in keys:
        instances = Instance.from_table(scenarios[scenario_of(key)])
        outputs = ModelOutput.from_table(outputs_by_key[str(key)])
        judging = loaded[scenario_of(key)].judging
        judgments = None
        if judging is not None:
            if judging not in judge_setups:
                reg = registry.open()
                judge_setups[judging] = (
                    judge_clients(reg, judging.judges, models.client),
                    Rubric.from_registry(reg, judging.rubric, low=judging.low, high=judging.high),
                )
            judges, rubric = judge_setups[judging]
            judgments = judge_partition(instances, outputs, judges, rubric, judging.repeats)
        scored = score_partition(
            instances,
            outputs,
            prices=registry.open().get_version(model_version_of(key)).prices.token_prices(),
            toxicity=toxicity,
            seed_key=str(key),
            judgments=judgments,
        )
        per_instance[str(key)] = InstanceStat.to_table(scored.stats)
        cards[str(key)] = scorecard_table(scored.card)
        metadata = {m: MetadataValue.float(v) for m, v in scored.headline().items()}
        metadata["num_instances"] = len({s.instance_id for s in scored.stats})
        metadata["num_absent_metrics"] = sum(not r.present for r in scored.card)
        metadata["toxicity_scorer"] = toxicity.name if toxicity is not None else "none"
        if judgments is not None:
            metadata["num_judgments"] = len(judgments)
            metadata["num_judge_parse_failures"] = sum(j.score is None for j in judgments)
            metadata["num_judgments_cached"] = sum(j.cached for j in judgments)
        metadata["scorecard"] = markdown_table(cards[str(key)], 30)
        metadata["explorer"] = explorer_link(storage.store(), scenario_page(scenario_of(key)))
    if len(keys) == 1:
        yield Output(next(iter(per_instance.values())), "instance_scores")
        yield Output(next(iter(cards.values())), "metric_tables", metadata=metadata)
    else:
        yield Output(per_instance, "instance_scores")
        yield Output(cards, "metric_tables", metadata={"num_partitions": len(keys)})


def _perturbed(
    context: AssetExecutionContext,
    storage: StorageResource,
    config: ScenarioConfig,
    every: list[Instance],
    evaluated: list[Instance],
) -> tuple[list[PerturbedInstance], str]:
    """The scenario's perturbed inputs and where they came from.

    Read from the stored ``perturbed_instances`` partition when there is one. Without it
    (a run that selected only the evaluation assets) they are derived here with the same
    deterministic function the asset runs, so the outputs are the same either way.
    """
    if not config.perturbations:
        return [], "none"
    store, partition = storage.store(), {SCENARIO: config.key}
    if store.exists("perturbed_instances", partition):
        table = store.read("perturbed_instances", partition)
        return perturbed_from_table(table, every), "perturbed_instances"
    context.log.warning(
        f"perturbed_instances has no partition {config.key!r}; perturbing its inputs inline "
        "(materialize perturbed_instances to see them in the UI)"
    )
    return perturb_eval_instances(config, evaluated).rows, "inline"
