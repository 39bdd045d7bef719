"""The code location loads, and its assets, partitions and lineage are what the design says."""

from __future__ import annotations

from dagster import (
    AllPartitionMapping,
    AssetKey,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
)

from assay.evaluate.suite import load_suite
from definitions import defs


def _graph():
    return defs.resolve_asset_graph()


def test_asset_keys_are_the_designed_ones():
    keys = {k.to_user_string() for k in _graph().get_all_asset_keys()}
    assert keys == {
        "registered_models",
        "scenario_instances",
        "perturbed_instances",
        "model_outputs",
        "instance_scores",
        "metric_tables",
        "prompt_trials",
        "rankings",
        "dashboard",
        "training_corpora",
        "corpus_index",
        "contamination",
    }


def test_partitions():
    graph = _graph()
    registered = graph.get(AssetKey("registered_models")).partitions_def
    scenarios = graph.get(AssetKey("scenario_instances")).partitions_def
    assert graph.get(AssetKey("perturbed_instances")).partitions_def == scenarios
    outputs = graph.get(AssetKey("model_outputs")).partitions_def
    assert isinstance(registered, DynamicPartitionsDefinition)
    assert registered.name == "model_version"
    assert isinstance(scenarios, StaticPartitionsDefinition)
    assert scenarios.get_partition_keys() == load_suite().keys
    assert isinstance(outputs, MultiPartitionsDefinition)
    assert {d.name for d in outputs.partitions_defs} == {"model_version", "scenario"}
    for key in ("instance_scores", "metric_tables"):
        assert graph.get(AssetKey(key)).partitions_def == outputs
    assert isinstance(graph.get(AssetKey("rankings")).partitions_def, DailyPartitionsDefinition)


def test_lineage_and_partition_mappings():
    graph = _graph()

    def parents(key):
        return {p.to_user_string() for p in graph.get(AssetKey(key)).parent_keys}

    assert parents("perturbed_instances") == {"scenario_instances"}
    assert parents("model_outputs") == {
        "registered_models",
        "scenario_instances",
        "perturbed_instances",
    }
    assert parents("metric_tables") == {"model_outputs", "scenario_instances", "contamination"}
    assert parents("rankings") == {"metric_tables", "instance_scores"}
    assert parents("dashboard") == {"rankings"}
    outputs = AssetKey("model_outputs")
    to_model = graph.get_partition_mapping(outputs, AssetKey("registered_models"))
    to_scenario = graph.get_partition_mapping(outputs, AssetKey("scenario_instances"))
    assert isinstance(to_model, MultiToSingleDimensionPartitionMapping)
    assert to_model.partition_dimension_name == "model_version"
    assert to_scenario.partition_dimension_name == "scenario"
    to_perturbed = graph.get_partition_mapping(outputs, AssetKey("perturbed_instances"))
    assert isinstance(to_perturbed, MultiToSingleDimensionPartitionMapping)
    assert to_perturbed.partition_dimension_name == "scenario"
    to_metrics = graph.get_partition_mapping(AssetKey("rankings"), AssetKey("metric_tables"))
    assert isinstance(to_metrics, AllPartitionMapping)


def test_contamination_partitions_and_lineage():
    graph = _graph()
    outputs = graph.get(AssetKey("model_outputs")).partitions_def
    contamination = AssetKey("contamination")
    assert graph.get(contamination).partitions_def == outputs
    corpora = graph.get(AssetKey("training_corpora")).partitions_def
    assert corpora == graph.get(AssetKey("registered_models")).partitions_def
    index = graph.get(AssetKey("corpus_index")).partitions_def
    assert isinstance(index, DynamicPartitionsDefinition) and index.name == "corpus_digest"
    assert {p.to_user_string() for p in graph.get(contamination).parent_keys} == {
        "training_corpora",
        "registered_models",
        "scenario_instances",
    }
    for parent, dimension in [
        ("training_corpora", "model_version"),
        ("registered_models", "model_version"),
        ("scenario_instances", "scenario"),
    ]:
        mapping = graph.get_partition_mapping(contamination, AssetKey(parent))
        assert isinstance(mapping, MultiToSingleDimensionPartitionMapping), parent
        assert mapping.partition_dimension_name == dimension, parent
    # A corpus change must not touch the model outputs: they do not read the manifest.
    assert "training_corpora" not in {
        p.to_user_string() for p in graph.get(AssetKey("model_outputs")).parent_keys
    }


def test_every_asset_explains_itself():
    for node in _graph().asset_nodes:
        if not node.is_materializable:
            continue  # a key only depended on (read when stored), defined elsewhere
        assert node.description, node.key
        assert node.group_name and node.group_name != "default", node.key
        assert node.code_version, node.key
        assert node.kinds, node.key


def test_steps_that_call_models_share_one_pool():
    graph = _graph()
    for key in ("model_outputs", "instance_scores", "metric_tables"):
        assert graph.get(AssetKey(key)).pools == {"model-inference"}, key
    # contamination runs beside model_outputs in a promotion run: in the pool, one run would
    # hold two of its slots (deploy's test of scenario-shaped runs side by side caught it).
    for key in ("scenario_instances", "rankings", "dashboard", "contamination"):
        assert not graph.get(AssetKey(key)).pools, key
