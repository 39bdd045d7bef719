"""Contamination checks as assets: ``training_corpora`` (per model version), ``corpus_index``
(per corpus digest) and ``contamination`` (per model version × scenario).

Lineage: ``contamination`` depends on its version's ``training_corpora``, whose data version is
a digest of the declared corpora's content digests (``assay.contamination.declared``). A
changed corpus, once recorded again (the promotion sensor does it on ``version_created`` and
``training_data_set`` events and on every promotion; materializing ``training_corpora``
does it by hand), marks exactly that version's ``contamination`` partitions stale; an
unchanged one leaves them fresh and its index is never rebuilt.

A promotion run evaluates ``contamination`` beside ``model_outputs``; its step builds the
index of any declared corpus that has none yet and records that as a materialization of the
``corpus_index`` partition (a run's partitions are model version × scenario, so the
digest-partitioned asset cannot be a step of it). ``corpus_index`` materialized on its own
does the same for one digest.
"""

import os

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetMaterialization,
    BackfillPolicy,
    DataVersion,
    MaterializeResult,
    MultiToSingleDimensionPartitionMapping,
    asset,
)
from dagster._core.definitions.data_version import (
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
)

from assay.contamination.check import check_partition, run_membership
from assay.contamination.declared import (
    DeclaredCorpus,
    EnsuredIndex,
    ensure_index,
    find_declared,
    read_training_corpora,
    record_training_corpora,
)
from assay.contamination.ngram_index import CorpusIndex
from assay.core.records import Instance
from assay.evaluate.run import select_instances
from assay.registry.resolved import ResolvedModel
from assay.storage.code_versions import code_version
from assay.storage.contract import (
    CONTAMINATION,
    CORPUS_DIGEST,
    CORPUS_INDEX,
    MODEL_VERSION,
    REGISTERED_MODELS,
    SCENARIO,
    SCENARIO_INSTANCES,
    TRAINING_CORPORA,
)
from assets.common import (
    by_key,
    evaluation_keys,
    markdown_table,
    model_version_of,
    partitioned_output,
    scenario_of,
)
from assets.partitions import (
    corpus_digest_partitions,
    evaluation_partitions,
    model_version_partitions,
)
from resources import ModelsResource, RegistryResource, StorageResource, SuiteResource

_FROM_MODEL_VERSION = MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL_VERSION)
_FROM_SCENARIO = MultiToSingleDimensionPartitionMapping(partition_dimension_name=SCENARIO)


def index_memory_mb() -> int:
    """``$ASSAY_CORPUS_INDEX_MEMORY_MB``: the index build's buffer budget (default 256)."""
    return int(os.environ.get("ASSAY_CORPUS_INDEX_MEMORY_MB", "256"))


def index_metadata(ensured: EnsuredIndex) -> dict[str, object]:
    info = ensured.info
    built = {}
    if info is not None:
        built = {
            "documents": info.documents,
            "bytes_read": info.bytes_read,
            "ngrams": {str(n): c for n, c in info.ngrams.items()},
            "structure": info.structure,
        }
    return {"path": ensured.url, "built": ensured.built, **built}


def corpus_index_materialization(ensured: EnsuredIndex) -> AssetMaterialization:
    """The ``corpus_index`` partition a contamination step built, as Dagster records it."""
    return AssetMaterialization(
        asset_key=AssetKey(CORPUS_INDEX),
        partition=ensured.digest,
        metadata=index_metadata(ensured),
        tags={DATA_VERSION_TAG: ensured.digest, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"},
        description="built by the contamination step that first needed it",
    )


@asset(
    partitions_def=model_version_partitions,
    group_name="contamination",
    kinds={"python", "parquet"},
    code_version=code_version(TRAINING_CORPORA),
    metadata={"partition_dimension": MODEL_VERSION},
    description=(
        "The corpora a model version declares it was trained on (the registry's manifest), "
        "each with its content digest when recorded. Its data version digests the corpus "
        "digests: a changed corpus marks that version's contamination partitions stale."
    ),
)
def training_corpora(
    context: AssetExecutionContext, registry: RegistryResource, storage: StorageResource
) -> MaterializeResult:
    key = context.partition_key
    recorded = record_training_corpora(
        storage.store(), key, registry.open().get_version(key).training_data
    )
    context.log.info(f"{key}: {len(recorded.declared)} corpora, version {recorded.data_version}")
    return MaterializeResult(
        metadata=recorded.metadata(), data_version=DataVersion(recorded.data_version)
    )


@asset(
    partitions_def=corpus_digest_partitions,
    group_name="contamination",
    kinds={"python"},
    code_version=code_version(CORPUS_INDEX),
    metadata={"partition_dimension": CORPUS_DIGEST},
    description=(
        "The n-gram index of one declared corpus (keyed by its content digest), built once, "
        "streamed, on the store's base URL, and shared by every version declaring those bytes."
    ),
)
def corpus_index(context: AssetExecutionContext, storage: StorageResource) -> MaterializeResult:
    store = storage.store()
    digest = context.partition_key
    ensured = ensure_index(store, find_declared(store, digest), memory_mb=index_memory_mb())
    context.log.info(f"{digest[:12]}: {'built' if ensured.built else 'exists'} at {ensured.url}")
    return MaterializeResult(metadata=index_metadata(ensured), data_version=DataVersion(digest))


@asset(
    partitions_def=evaluation_partitions,
    ins={SCENARIO_INSTANCES: AssetIn(partition_mapping=_FROM_SCENARIO)},
    deps=[
        AssetDep(TRAINING_CORPORA, partition_mapping=_FROM_MODEL_VERSION),
        AssetDep(REGISTERED_MODELS, partition_mapping=_FROM_MODEL_VERSION),
    ],
    group_name="contamination",
    kinds={"python", "parquet"},
    code_version=code_version(CONTAMINATION),
    io_manager_key="parquet_io_manager",
    backfill_policy=BackfillPolicy.single_run(),
    # Not in the model-inference pool: the step runs beside model_outputs in the same run, and
    # a run holding two of the pool's slots halves how many versions' or scenarios' runs go
    # side by side. The overlap checks call no model; the opt-in model-based detectors make
    # one scoring pass per instance text, through the request cache.
    description=(
        "Per-instance contamination findings: n-gram overlap of each eval instance (input and "
        "references) with every declared corpus (GPT-3 13-gram, PaLM 70% of 8-grams, Llama 2 "
        "token spans), or, when none is declared and the suite asks, Min-K% Prob against "
        "perturbed copies (and guided completion). No rows: not checked."
    ),
)
def contamination(
    context: AssetExecutionContext,
    scenario_instances,
    suite: SuiteResource,
    storage: StorageResource,
    registry: RegistryResource,
    models: ModelsResource,
):
    keys = evaluation_keys(context)
    scenarios = by_key(scenario_instances, [scenario_of(k) for k in keys])
    loaded, store = suite.load(), storage.store()
    config = loaded.contamination
    indexes: dict[str, CorpusIndex] = {}

    def open_index(corpus: DeclaredCorpus) -> CorpusIndex:
        if corpus.digest not in indexes:
            ensured = ensure_index(store, corpus, memory_mb=index_memory_mb())
            if ensured.built:
                context.log_event(corpus_index_materialization(ensured))
            context.log.info(
                f"corpus {corpus.name!r} ({corpus.digest[:12]}): "
                f"{'indexed' if ensured.built else 'index reused'}"
            )
            indexes[corpus.digest] = CorpusIndex.open(ensured.url)
        return indexes[corpus.digest]

    results, metadata = {}, {}
    for key in keys:
        version, scenario = model_version_of(key), scenario_of(key)
        entry = loaded[scenario]
        instances, _ = select_instances(
            entry, Instance.from_table(scenarios[scenario]), suite.max_instances
        )
        declared = read_training_corpora(store, version)
        if declared is None:
            if registry.open().get_version(version).training_data:
                context.log.warning(
                    f"{version}: training_corpora not recorded; its corpora are not checked "
                    "(the promotion sensor records them, or materialize training_corpora)"
                )
            else:
                declared = []

        def membership(cfg, version=version, scenario=scenario, instances=instances):
            resolved = ResolvedModel.from_table(
                store.read(REGISTERED_MODELS, {MODEL_VERSION: version})
            )
            return run_membership(models.client(resolved.spec), instances, cfg, loaded[scenario])

        checked = check_partition(instances, declared, config, open_index, membership)
        results[str(key)] = checked.table
        metadata[str(key)] = {
            **checked.summary(len(instances), config.flag_detectors),
            "preview": markdown_table(
                checked.table.select(["instance_id", "detector", "corpus", "score", "flagged"]),
                12,
            ),
        }
        context.log.info(f"{key}: {checked.mode}, {checked.table.num_rows} rows")
    return partitioned_output(context, results, metadata)
