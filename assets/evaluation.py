"""``model_outputs`` and the scores computed from them, per model version × scenario."""

from dagster import (
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
from assay.evaluation import ProgressLog, check_failures, evaluate, select_instances
from assay.models.registration import ResolvedModel
from assay.records import Instance, InstanceStat, ModelOutput
from assay.scoring import SCORING_VERSION, instance_stats, scorecard, scorecard_table
from assets.common import by_key, evaluation_keys, markdown_table, model_version_of, scenario_of
from assets.partitions import MODEL_VERSION, SCENARIO, evaluation_partitions
from resources import ModelsResource, SuiteResource

_FROM_MODEL_VERSION = MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL_VERSION)
_FROM_SCENARIO = MultiToSingleDimensionPartitionMapping(partition_dimension_name=SCENARIO)


@asset(
    partitions_def=evaluation_partitions,
    ins={
        "registered_models": AssetIn(partition_mapping=_FROM_MODEL_VERSION),
        "scenario_instances": AssetIn(partition_mapping=_FROM_SCENARIO),
    },
    group_name="evaluation",
    kinds={"pytorch", "parquet"},
    code_version="1",
    io_manager_key="parquet_io_manager",
    # A promotion re-evaluates one version across the whole suite in a single run.
    backfill_policy=BackfillPolicy.single_run(),
    description=(
        "One row per request: prompt and template id, trial, completion text, tokens, "
        "per-choice log-likelihoods with token/char/byte counts, latency, cache hit, error."
    ),
)
def model_outputs(
    context: AssetExecutionContext,
    registered_models,
    scenario_instances,
    suite: SuiteResource,
    models: ModelsResource,
):
    keys = evaluation_keys(context)
    versions = by_key(registered_models, [model_version_of(k) for k in keys])
    scenarios = by_key(scenario_instances, [scenario_of(k) for k in keys])
    loaded = suite.load()
    results, metadata = {}, {}
    for key in keys:
        resolved = ResolvedModel.from_table(versions[model_version_of(key)])
        config = loaded[scenario_of(key)]
        instances, train = select_instances(
            config, Instance.from_table(scenarios[scenario_of(key)]), suite.max_instances
        )
        label = f"{resolved.key} × {config.key}"
        run = evaluate(
            models.client(resolved.spec),
            config,
            instances,
            train,
            progress=ProgressLog(context.log.info, label),
        )
        check_failures(run, models.max_failure_fraction, label)
        results[str(key)] = ModelOutput.to_table(run.outputs)
        n = len(run.outputs)
        metadata = {
            "num_requests": n,
            "num_failed": run.n_failed,
            "num_cached": run.n_cached,
            "wall_s": round(run.wall_s, 3),
            "requests_per_s": round(n / run.wall_s, 3) if run.wall_s > 0 else None,
            "template_id": config.adapter.template_id,
            "prompts_digest": digest_json([o.request.prompt_digest for o in run.outputs]),
            "model_artifact_digest": resolved.artifact_digest,
            "preview": markdown_table(
                results[str(key)].select(["instance_id", "trial", "text", "latency_s", "cached"]),
                10,
            ),
        }
        context.log.info(
            f"{label}: {n} requests, {run.n_cached} cached, {run.n_failed} failed, "
            f"{run.wall_s:.1f}s"
        )
    if len(results) == 1:
        context.add_output_metadata(metadata)
        return next(iter(results.values()))
    context.add_output_metadata({"num_partitions": len(results)})
    return results


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
            description="The scorecard: mean, count and bootstrap 95% interval per metric, "
            "family, group and perturbation.",
        ),
    },
    backfill_policy=BackfillPolicy.single_run(),
)
def scores(context: AssetExecutionContext, model_outputs, scenario_instances):
    """Score stored model outputs; never calls a model, so metric changes are cheap."""
    keys = evaluation_keys(context)
    outputs_by_key = by_key(model_outputs, [str(k) for k in keys])
    scenarios = by_key(scenario_instances, [scenario_of(k) for k in keys])
    per_instance, cards, metadata = {}, {}, {}
    for key in keys:
        instances = Instance.from_table(scenarios[scenario_of(key)])
        outputs = ModelOutput.from_table(outputs_by_key[str(key)])
        stats = instance_stats(instances, outputs)
        rows = scorecard(stats, seed_key=str(key))
        per_instance[str(key)] = InstanceStat.to_table(stats)
        cards[str(key)] = scorecard_table(rows)
        metadata = {
            r.metric: MetadataValue.float(r.mean)
            for r in rows
            if not r.group and not r.perturbation
        }
        metadata["num_instances"] = len({s.instance_id for s in stats})
        metadata["scorecard"] = markdown_table(cards[str(key)], 30)
    if len(keys) == 1:
        yield Output(next(iter(per_instance.values())), "instance_scores")
        yield Output(next(iter(cards.values())), "metric_tables", metadata=metadata)
    else:
        yield Output(per_instance, "instance_scores")
        yield Output(cards, "metric_tables", metadata={"num_partitions": len(keys)})
