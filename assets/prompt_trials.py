"""``prompt_trials``: a candidate prompt version's outputs and scores, stored apart from the
evaluation (``assay.evaluate.prompt_trials``), for a pending prompt promotion to be judged on."""

from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    asset,
)

from assay.evaluate.partition import run_partition
from assay.evaluate.prompt_trials import (
    PromptTrial,
    entries_reading,
    pin_prompt_alias,
    trial_store,
)
from assay.registry.gating import current_suite_identity
from assay.registry.resolved import ResolvedModel
from assay.scoring.partition import SuiteScorer
from assay.storage.code_versions import code_version
from assay.storage.contract import (
    CONTAMINATION,
    INSTANCE_SCORES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    MODEL_VERSION,
    PROMPT_TRIALS,
    REGISTERED_MODELS,
    SCENARIO,
    SCENARIO_INSTANCES,
    evaluation_partition,
)
from assets.common import by_key, evaluation_keys, model_version_of, scenario_of
from assets.evaluation import MODEL_POOL
from assets.partitions import evaluation_partitions
from resources import ModelsResource, RegistryResource, StorageResource, SuiteResource

_FROM_MODEL_VERSION = MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL_VERSION)
_FROM_SCENARIO = MultiToSingleDimensionPartitionMapping(partition_dimension_name=SCENARIO)


@asset(
    name=PROMPT_TRIALS,
    partitions_def=evaluation_partitions,
    ins={
        REGISTERED_MODELS: AssetIn(partition_mapping=_FROM_MODEL_VERSION),
        SCENARIO_INSTANCES: AssetIn(partition_mapping=_FROM_SCENARIO),
    },
    group_name="promotion",
    kinds={"python", "parquet"},
    code_version=code_version(PROMPT_TRIALS),
    backfill_policy=BackfillPolicy.single_run(),
    pool=MODEL_POOL,
    description=(
        "The suite entries that read a prompt alias, evaluated and scored with the prompt "
        "version a run's tags name in the alias's place, stored under prompt_trials/ apart "
        "from the evaluation: what the promotion sensor judges a pending prompt move on. "
        "Launched by the sensor; a run without its tags fails."
    ),
)
def prompt_trials(
    context: AssetExecutionContext,
    registered_models,
    scenario_instances,
    suite: SuiteResource,
    models: ModelsResource,
    storage: StorageResource,
    registry: RegistryResource,
) -> MaterializeResult:
    trial = PromptTrial.from_tags(context.run.tags)
    keys = evaluation_keys(context)
    versions = by_key(registered_models, [model_version_of(k) for k in keys])
    scenarios = by_key(scenario_instances, [scenario_of(k) for k in keys])
    loaded = suite.load()
    reading = set(entries_reading(loaded, trial.prompt, trial.alias))
    pinned = pin_prompt_alias(loaded, trial)
    into = trial_store(storage.store(), trial, current_suite_identity(suite.path))
    scorer = SuiteScorer(pinned, registry.open, models.client)
    reg = registry.open()
    done_keys = []
    for key in keys:
        version, scenario = model_version_of(key), scenario_of(key)
        if scenario not in reading:
            context.log.info(f"{key}: {scenario} does not read prompt alias {trial.alias}")
            continue
        resolved = ResolvedModel.from_table(versions[version])
        done = run_partition(
            models.client(resolved.spec),
            pinned[scenario],
            scenarios[scenario],
            store=storage.store(),  # the scenario's stored perturbed inputs
            label=f"{resolved.key} × {scenario} with {trial.key}",
            max_instances=suite.max_instances,
            max_failure_fraction=models.max_failure_fraction,
            log=context.log.info,
            warn=context.log.warning,
            prices=reg.get_version(resolved.key).prices.token_prices(),
            registry=registry.open,
        )
        where = evaluation_partition(version, scenario)
        # The same test items as the version's evaluation: its contamination check holds.
        main = storage.store()
        checked = main.read(CONTAMINATION, where) if main.exists(CONTAMINATION, where) else None
        scored = scorer.score(
            version, scenario, scenarios[scenario], done.table, str(key), contamination=checked
        )
        # Scores last: a trial whose scorecard is present is complete.
        into.write(MODEL_OUTPUTS, where, done.table)
        into.write(INSTANCE_SCORES, where, scored.stats_table)
        into.write(METRIC_TABLES, where, scored.card_table)
        context.log.info(done.summary())
        done_keys.append(str(key))
    return MaterializeResult(
        metadata={
            "prompt_version": trial.key,
            "alias": trial.alias,
            "partitions": MetadataValue.json(done_keys),
            "stored_under": into.base_url,
        }
    )
