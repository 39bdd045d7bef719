"""The storage contract: the names the library, the assets and the sensors agree on.

A table in storage is named after the asset that writes it, and partitioned along the
dimensions below. Keep every such name here, so that a reader (the gate, the standings, the
evaluation recorder) and the writer cannot drift apart.

Partition keys:
- ``model_version``: a registry version key, ``<model>@v<N>``
  (:func:`assay.registry.names.version_key` builds and checks it);
- ``scenario``: a suite file's scenario key;
- the two together, as Dagster spells a multi-partition key: ``<version>|<scenario>``
  (dimensions in name order), see :func:`evaluation_key`.
"""

from __future__ import annotations

# Assets, and the tables they store.
REGISTERED_MODELS = "registered_models"
SCENARIO_INSTANCES = "scenario_instances"
PERTURBED_INSTANCES = "perturbed_instances"
MODEL_OUTPUTS = "model_outputs"
INSTANCE_SCORES = "instance_scores"
METRIC_TABLES = "metric_tables"
RANKINGS = "rankings"
DASHBOARD = "dashboard"
# Contamination checks (issue 30): an n-gram index per declared corpus, and per model version
# × scenario the per-instance findings of each detector (assay.contamination.subsets).
CORPUS_INDEX = "corpus_index"
CONTAMINATION = "contamination"
# A candidate prompt version's outputs and scores, stored apart (assay.evaluate.prompt_trials).
PROMPT_TRIALS = "prompt_trials"
# A version's declared training corpora with their digests (assay.contamination.declared).
TRAINING_CORPORA = "training_corpora"
# Not an asset: a day's full leaderboard (comparisons, family figures, notes) as JSON, written
# by the rankings step next to its partition for the explorer (assay.compare.stored_boards).
LEADERBOARDS = "leaderboards"
# Not an asset: the judges' replies, written by the scoring step next to ``instance_scores``.
JUDGE_REPLIES = "judge_replies"

# The outputs of one evaluation of a model version on a scenario.
EVALUATION_ASSETS = (MODEL_OUTPUTS, INSTANCE_SCORES, METRIC_TABLES)

# Tables whose every write is also kept, immutable, in the store's history: the rankings of a
# past day read them as they stood at the end of that day (see ParquetStore.read_all_as_of).
HISTORY_ASSETS = (INSTANCE_SCORES, METRIC_TABLES)

# Partition dimensions.
MODEL_VERSION = "model_version"
SCENARIO = "scenario"
# ``corpus_index`` partitions: a corpus's content digest (sha256 hex).
CORPUS_DIGEST = "corpus_digest"
# Separator of a multi-partition key's dimensions (Dagster's).
KEY_SEPARATOR = "|"


def evaluation_partition(version: str, scenario: str) -> dict[str, str]:
    """The storage partition of one model version × scenario."""
    return {MODEL_VERSION: version, SCENARIO: scenario}


def evaluation_key(version: str, scenario: str) -> str:
    """The multi-partition key of one model version × scenario: ``<version>|<scenario>``."""
    return f"{version}{KEY_SEPARATOR}{scenario}"
