"""Which way is better for each metric: one list for rankings, gates and robustness."""

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
    }
)


# Figures shown on the scorecard but never ranked:
# - of one run rather than the model (how many answers the request cache gave, the model time
#   this run spent), since a rerun answered by the cache must not change a board;
# - of the workload or the serving rather than the model's quality: how many tokens a request
#   read and wrote (more is neither better nor worse; their price is ranked as
#   ``estimated_cost`` and their speed as ``tokens_per_s``) and the batch size it was served in;
# - how confident the model is (``chosen_prob``): neither better nor worse by itself, the
#   calibration errors say whether the confidence is deserved.
NOT_RANKED = frozenset(
    {
        "chosen_prob",
        "cached_requests",
        "model_time_s",
        "run_model_time_s",
        "prompt_tokens",
        "completion_tokens",
        "batch_size_mean",
    }
)


def lower_is_better(metric: str) -> bool:
    """True when smaller values of ``metric`` are better."""
    return metric in LOWER_IS_BETTER
