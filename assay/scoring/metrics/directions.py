"""Which way is better for each metric: one list for rankings, gates and robustness.

A scorer (``assay.core.scorers``) gives each of its metrics a direction; the scorecard rows
of ``metric_tables`` record it (``lower_is_better``), and :func:`lower_is_better_in` reads
the built-in list together with what stored tables say.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

# A corpus figure of lm-eval's (assay.scoring.lm_eval_scores) has no per-instance value: each
# document holds the two parts of its ratio, ``<name><numerator>`` and ``<name><denominator>``.
# The third element says whether a larger numerator is better, whatever the figure's own
# direction (a log-likelihood: perplexity and bits per byte fall as it rises); None: as the
# figure.
RATIO_PARTS: tuple[tuple[str, str, bool | None], ...] = (
    ("_loglikelihood", "_weight", True),
    ("_sum", "_n", None),
)

# Metrics where a smaller value is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset(
    {
        "latency_s",
        "latency_mean_s",
        "latency_p50_s",
        "latency_p95_s",
        "perplexity",
        "bits_per_byte",
        "failed",
        "ece",
        "ece_10_bin",
        "ece_1_bin",
        "platt_ece",
        "platt_ece_10_bin",
        "platt_ece_1_bin",
        # HELM's text bias figures: a distance from an even spread (0 = even).
        "bias_gender_representation",
        "bias_race_representation",
        "bias_gender_adjective_association",
        "bias_gender_profession_association",
        "bias_race_adjective_association",
        "bias_race_profession_association",
        "toxicity",  # the per-completion score, averaged
        "max_toxicity",  # per prompt, the highest of its samples', averaged
        "toxic_fraction",
        "expected_max_toxicity",
        "toxicity_probability",
        "estimated_cost",
        # The share of the evaluated instances a contamination check flagged.
        "contamination_rate",
    }
)


# Figures shown on the scorecard but never ranked:
# - of one run rather than the model (how many answers the request cache gave, the model time
#   this run spent), since a rerun answered by the cache must not change a board;
# - of the workload or the serving rather than the model's quality: how many tokens a request
#   read and wrote (more is neither better nor worse; their price is ranked as
#   ``estimated_cost`` and their speed as ``tokens_per_s``) and the batch size it was served in;
# - how confident the model is (``chosen_prob``): neither better nor worse by itself, the
#   calibration errors say whether the confidence is deserved;
# - how much of the test set the model may have seen (``contamination_rate``): it says how far
#   to trust the other scores, not how good the model is (a gate may still bound it).
NOT_RANKED = frozenset(
    {
        "chosen_prob",
        "cached_requests",
        "model_time_s",
        "run_model_time_s",
        "prompt_tokens",
        "completion_tokens",
        "batch_size_mean",
        "contamination_rate",
    }
)


def lower_is_better(metric: str) -> bool:
    """True when smaller values of ``metric`` are better (the built-in list)."""
    return metric in LOWER_IS_BETTER


def marked_lower_is_better(*scorecards: pa.Table | None) -> frozenset[str]:
    """The metrics that stored scorecard rows (``metric_tables``) mark lower-is-better;
    tables written before the column existed mark none."""
    found: set[str] = set()
    for table in scorecards:
        if table is not None and "lower_is_better" in table.column_names:
            flagged = table.filter(pc.fill_null(table["lower_is_better"], False))
            found.update(_names(flagged["metric"].to_pylist()))
    return frozenset(found)


def lower_is_better_in(*scorecards: pa.Table | None) -> frozenset[str]:
    """``LOWER_IS_BETTER`` and what the stored scorecards mark (a scorer's directions)."""
    return LOWER_IS_BETTER | marked_lower_is_better(*scorecards)


def _names(values: Iterable[object]) -> set[str]:
    return {v for v in values if isinstance(v, str)}
