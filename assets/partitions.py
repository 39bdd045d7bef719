"""Every partitions definition of the code location, in one place.

Perturbations, prompt variants, few-shot trials and seeds are rows inside a partition, never
extra dimensions.
"""

import os

from dagster import (
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from assay.evaluate.suite import load_suite
from assay.storage.contract import CORPUS_DIGEST, MODEL_VERSION, SCENARIO

# Keys come from the registry ("smollm2-135m-instruct@v3"); the promotion sensor adds them.
model_version_partitions = DynamicPartitionsDefinition(name=MODEL_VERSION)

# Keys are corpus content digests (sha256 hex); the promotion sensor adds them when it records
# a version's training_corpora.
corpus_digest_partitions = DynamicPartitionsDefinition(name=CORPUS_DIGEST)

# Keys are the suite file's scenario keys.
scenario_partitions = StaticPartitionsDefinition(load_suite().keys)

evaluation_partitions = MultiPartitionsDefinition(
    {MODEL_VERSION: model_version_partitions, SCENARIO: scenario_partitions}
)

# One leaderboard per day; today's partition exists (end_offset=1) so it can run any time.
ranking_days = DailyPartitionsDefinition(
    start_date=os.environ.get("ASSAY_RANKINGS_START", "2026-11-01"), end_offset=1
)
