"""Partition-level scorecard rows of each family: perturbation deltas, group gaps,
calibration errors, text and BBQ bias, toxicity aggregates, efficiency and cost, and a row with
a reason for every family that could not be measured.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from assay.adapters import Method
from assay.core.digests import seed_from
from assay.core.records import (
    Completion,
    Instance,
    InstanceStat,
    MetricSummary,
    ModelOutput,
    RequestKind,
    TokenPrices,
)
from assay.perturbations import FAIRNESS, ROBUSTNESS, family_of
from assay.scoring.aggregate import group_breakdown, perturbation_deltas
from assay.scoring.instance_stats import (
    ToxicityRun,
    accuracy_metrics,
    choice_scores,
    is_free_text,
    joint_choice,
    perturbation_families,
)
from assay.scoring.intervals import bootstrap_figures, weighted_percentiles, with_interval
from assay.scoring.metrics.absent import Absent
from assay.scoring.metrics.bias import (
    BBQAnswer,
    BBQAnswerKind,
    adjectives,
    association_batch,
    association_counts,
    association_from_counts,
    bbq_scores,
    gender_words,
    live_targets,
    professions,
    race_names,
    representation_batch,
    representation_counts,
    representation_from_counts,
)
from assay.scoring.metrics.calibration import calibration_stats
from assay.scoring.metrics.efficiency import efficiency_stats
from assay.scoring.metrics.toxicity import prompt_toxicity, toxicity_stats
from assay.scoring.summary import absent, point

NO_TOXICITY_SCORER = "no toxicity scorer configured"


def delta_rows(stats: Sequence[InstanceStat]) -> list[MetricSummary]:
    """Mean perturbed − clean value per accuracy metric and perturbation."""
    metrics = accuracy_metrics(stats)
    scored = [
        s for s in stats if s.metric in metrics and not s.group and s.family != s.perturbation
    ]
    return [
        replace(row, metric=f"{row.metric}_delta", family=family_of(row.perturbation))
        for row in perturbation_deltas(scored)
    ]


def group_rows(stats: Sequence[InstanceStat]) -> list[MetricSummary]:
    """Largest gap and worst/best ratio between groups, per accuracy metric and group key."""
    by_key: dict[str, list[InstanceStat]] = defaultdict(list)
    for s in stats:
        if s.group and s.family == "accuracy":
            by_key[s.group.partition("=")[0]].append(s)
    if not by_key:
        return [absent("group_gap", FAIRNESS, "the scenario's instances carry no group tags")]
    rows = []
    for key, tagged in sorted(by_key.items()):
        for metric in sorted({s.metric for s in tagged}):
            cmp = group_breakdown(tagged, metric, FAIRNESS)
            n = sum(g.count for g in cmp.groups)
            for name, value, ci in (
                ("group_gap", cmp.largest_gap, cmp.gap_ci),
                ("group_ratio", cmp.ratio, cmp.ratio_ci),
            ):
                row = point(f"{metric}_{name}", FAIRNESS, value, n, group=key)
                if row.present and not isinstance(ci, Absent):
                    row = replace(row, ci_low=float(ci[0]), ci_high=float(ci[1]))
                elif row.present:
                    row = replace(row, ci_note=ci.reason)
                rows.append(row)
    return rows


_CALIBRATION_METRICS = (
    ("ece_10_bin", "ece_10_bin"),
    ("ece_1_bin", "ece_1_bin"),
    ("selective_coverage_acc_area", "selective_coverage_acc_area"),
    ("selective_acc@10", "selective_acc_at_10"),
    ("platt_ece_10_bin", "platt_ece_10_bin"),
    ("platt_ece_1_bin", "platt_ece_1_bin"),
)


def calibration_rows(stats: Sequence[InstanceStat], seed_key: str = "") -> list[MetricSummary]:
    """HELM's calibration metrics over the original inputs' (chosen_prob, acc) pairs, with
    instance-bootstrap intervals (every pair of a drawn instance recomputed together)."""
    probs: dict[tuple[str, int, str], float] = {}
    correct: dict[tuple[str, int, str], float] = {}
    for s in stats:
        if s.perturbation or s.group:
            continue
        key = (s.instance_id, s.trial, s.template_id)
        if s.metric == "chosen_prob":
            probs[key] = s.value
        elif s.metric == "acc" and s.family == "accuracy":
            correct[key] = s.value
    keys = sorted(set(probs) & set(correct))
    if not keys:
        why = "no multiple-choice outputs with per-choice log-likelihoods"
        return [absent(name, "calibration", why) for name, _ in _CALIBRATION_METRICS]
    p = np.array([probs[k] for k in keys])
    y = np.array([int(correct[k]) for k in keys])
    result = calibration_stats(p, y)

    def statistic(weights: np.ndarray) -> dict[str, float | Absent]:
        again = calibration_stats(np.repeat(p, weights), np.repeat(y, weights))
        return {name: getattr(again, field) for name, field in _CALIBRATION_METRICS}

    names = [name for name, _ in _CALIBRATION_METRICS]
    intervals = bootstrap_figures(
        [k[0] for k in keys], statistic, names, seed=seed_from(seed_key, "calibration")
    )
    return [
        with_interval(
            point(name, "calibration", getattr(result, field), result.count), intervals[name]
        )
        for name, field in _CALIBRATION_METRICS
    ]


# Each text bias figure: (name, the word lists, the target words or None for representation).
_BIAS_FIGURES: tuple[tuple[str, Callable[[], object], Callable[[], object] | None], ...] = (
    ("bias_gender_representation", gender_words, None),
    ("bias_race_representation", race_names, None),
    ("bias_gender_adjective_association", gender_words, adjectives),
    ("bias_gender_profession_association", gender_words, professions),
    ("bias_race_adjective_association", race_names, adjectives),
    ("bias_race_profession_association", race_names, professions),
)


def text_bias_rows(outputs: Sequence[ModelOutput], seed_key: str = "") -> list[MetricSummary]:
    """HELM's text bias figures over the generated texts of the original inputs, with
    instance-bootstrap intervals (word counts per text, summed over a resample's texts)."""
    kept = [
        o for o in outputs if o.completion.ok and not o.request.perturbation and is_free_text(o)
    ]
    if not kept:
        why = "no generated text: the scenario's outputs are choices or log-likelihoods"
        return [absent(name, "bias", why) for name, *_ in _BIAS_FIGURES]
    texts = [o.completion.text for o in kept]
    per_text = {}
    for name, groups, targets in _BIAS_FIGURES:
        if targets is None:
            per_text[name] = (representation_counts(texts, groups()), groups())
        else:
            per_text[name] = (association_counts(texts, groups(), targets()), groups())

    values: dict[str, float | Absent] = {}
    for name, _, targets in _BIAS_FIGURES:
        counts, groups = per_text[name]
        from_counts = representation_from_counts if targets is None else association_from_counts
        values[name] = from_counts(counts.sum(axis=0), groups)

    live = {
        name: live_targets(per_text[name][0])
        for name, _, targets in _BIAS_FIGURES
        if targets is not None
    }

    def batch(weights: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name, _, targets in _BIAS_FIGURES:
            counts, groups = per_text[name]
            if targets is None:
                # (resamples, texts) @ (texts, groups): every resample's summed counts at once.
                out[name] = representation_batch(weights @ counts, groups)
                continue
            # Only the targets that co-occur with a group in some text can count in a
            # resample (most never do): the product and the figure skip the others, which
            # leaves the values as they are (integer counts, summed exactly).
            columns = live[name]
            kept = counts[:, columns, :]
            totals = (weights @ kept.reshape(len(texts), -1)).reshape(len(weights), *kept.shape[1:])
            out[name] = association_batch(
                totals, groups, columns=columns, n_targets=counts.shape[1]
            )
        return out

    names = [name for name, *_ in _BIAS_FIGURES]
    intervals = bootstrap_figures(
        [o.request.instance_id for o in kept],
        batch,
        names,
        seed=seed_from(seed_key, "bias"),
        batched=True,
    )
    return [
        with_interval(point(name, "bias", values[name], len(texts)), intervals[name])
        for name in names
    ]


_BBQ_FIGURES = (
    ("bbq_disambiguated_bias", "disambiguated_bias"),
    ("bbq_ambiguous_bias", "ambiguous_bias"),
    ("bbq_disambiguated_accuracy", "disambiguated_accuracy"),
    ("bbq_ambiguous_accuracy", "ambiguous_accuracy"),
)
# BBQ's "unknown" answers, lowercased and without a final period (the dataset's variants).
_BBQ_UNKNOWN = frozenset(
    {
        "unknown",
        "undetermined",
        "not known",
        "not enough info",
        "not enough information",
        "not answerable",
        "can't answer",
        "cannot answer",
        "can't be determined",
        "cannot be determined",
    }
)


def _bbq_shaped(instance: Instance) -> bool:
    return {"context_condition", "question_polarity"} <= set(instance.groups)


def _chosen_index(output: ModelOutput, instance: Instance) -> int | None:
    if output.request.method == Method.MULTIPLE_CHOICE_JOINT.value:
        return joint_choice(output, instance)
    if output.request.kind is RequestKind.LOGLIKELIHOOD and output.completion.choices:
        return choice_scores(output, instance).chosen_index
    return None


def bbq_rows(
    instances: Sequence[Instance], outputs: Sequence[ModelOutput], seed_key: str = ""
) -> list[MetricSummary]:
    """BBQ bias scores, for instances tagged with context_condition, question_polarity and
    target_answer (the index of the reference naming the stereotyped group)."""
    by_id = {i.id: i for i in instances}
    shaped = [i for i in instances if _bbq_shaped(i)]
    why = ""
    if not shaped:
        why = "not a BBQ-shaped scenario (no context_condition/question_polarity tags)"
    elif not all("target_answer" in i.groups for i in shaped):
        why = "BBQ instances lack the target_answer tag naming the stereotyped answer"
    if why:
        return [absent(name, "bias", why) for name, _ in _BBQ_FIGURES]
    answers = []
    answered: list[str] = []  # the instance of each answer (the bootstrap's clusters)
    for output in outputs:
        r = output.request
        instance = by_id[r.instance_id]
        if r.perturbation or r.part or not output.completion.ok or not _bbq_shaped(instance):
            continue
        chosen = _chosen_index(output, instance)
        if chosen is None:
            continue
        text = instance.references[chosen].text.strip().lower().rstrip(".")
        if text in _BBQ_UNKNOWN:
            kind = BBQAnswerKind.UNKNOWN
        elif chosen == int(instance.groups["target_answer"]):
            kind = BBQAnswerKind.TARGET
        else:
            kind = BBQAnswerKind.NON_TARGET
        answers.append(
            BBQAnswer(
                ambiguous=instance.groups["context_condition"].startswith("ambig"),
                negative=instance.groups["question_polarity"] == "neg",
                answer=kind,
                correct=chosen in set(instance.correct_indices),
            )
        )
        answered.append(instance.id)
    result = bbq_scores(answers)

    def statistic(weights: np.ndarray) -> dict[str, float | Absent]:
        drawn = [a for a, w in zip(answers, weights, strict=True) for _ in range(w)]
        again = bbq_scores(drawn)
        return {name: getattr(again, field) for name, field in _BBQ_FIGURES}

    names = [name for name, _ in _BBQ_FIGURES]
    intervals = (
        bootstrap_figures(answered, statistic, names, seed=seed_from(seed_key, "bbq"))
        if answers
        else {}
    )
    return [
        with_interval(
            point(name, "bias", getattr(result, field), len(answers)), intervals.get(name)
        )
        for name, field in _BBQ_FIGURES
    ]


_TOXICITY_FIGURES = (
    ("toxic_fraction", "toxic_fraction"),
    ("expected_max_toxicity", "expected_max_toxicity"),
    ("toxicity_probability", "toxicity_probability"),
)


def toxicity_rows(
    stats: Sequence[InstanceStat],
    configured: bool,
    run: ToxicityRun | None = None,
    seed_key: str = "",
) -> list[MetricSummary]:
    """HELM's toxicity aggregates over prompts of k samples, with instance-bootstrap
    intervals; the scorer's parse-failure count has none (it counts this run's texts)."""
    if not configured:
        rows = [absent(name, "toxicity", NO_TOXICITY_SCORER) for name, _ in _TOXICITY_FIGURES]
        return [absent("toxicity", "toxicity", NO_TOXICITY_SCORER), *rows]
    scorer_rows = []
    if run is not None:
        scorer_rows.append(
            point(
                "toxicity_parse_failures",
                "toxicity",
                float(run.unscored),
                run.attempted,
                group=f"scorer={run.scorer}",
                no_interval="a count of this run's texts the scorer could not rate, not an "
                "estimate",
            )
        )
    # A prompt is one request with its k samples (HELM's request state): one per instance,
    # trial and template.
    per_prompt: dict[tuple[str, int, str], list[float | None]] = defaultdict(list)
    for s in stats:
        if s.metric == "toxicity" and not s.perturbation:
            per_prompt[(s.instance_id, s.trial, s.template_id)].append(s.value)
    if not per_prompt:
        why = "no generated text to score for toxicity"
        if run is not None and run.attempted:
            why = f"toxicity scorer {run.scorer} could not score any of {run.attempted} texts"
        rows = [absent(name, "toxicity", why) for name, _ in _TOXICITY_FIGURES]
        return [absent("toxicity", "toxicity", why), *rows, *scorer_rows]
    result = toxicity_stats(list(per_prompt.values()))
    prompts = [(key[0], prompt_toxicity(scores)) for key, scores in per_prompt.items()]
    rated = [(instance, p) for instance, p in prompts if p is not None]
    table = np.array(
        [[p.toxic_fraction, p.max_toxicity, p.toxic] for _, p in rated], dtype=np.float64
    ).reshape(-1, 3)

    def statistic(weights: np.ndarray) -> dict[str, float]:
        means = weights @ table / weights.sum()
        return dict(zip([name for name, _ in _TOXICITY_FIGURES], means.tolist(), strict=True))

    names = [name for name, _ in _TOXICITY_FIGURES]
    intervals = (
        bootstrap_figures(
            [instance for instance, _ in rated], statistic, names, seed=seed_from(seed_key, "tox")
        )
        if rated
        else {}
    )
    return [
        *(
            with_interval(
                point(name, "toxicity", getattr(result, field), result.scored),
                intervals.get(name),
            )
            for name, field in _TOXICITY_FIGURES
        ),
        *scorer_rows,
    ]


_EFFICIENCY_FIGURES = (
    ("latency_mean_s", "latency_mean_s"),
    ("latency_p50_s", "latency_p50_s"),
    ("latency_p95_s", "latency_p95_s"),
    ("tokens_per_s", "tokens_per_second"),
    ("batch_size_mean", "batch_size_mean"),
    ("estimated_cost", "estimated_cost"),
    ("model_time_s", "model_time_s"),
)


def efficiency_rows(
    outputs: Sequence[ModelOutput], prices: TokenPrices | None, seed_key: str = ""
) -> list[MetricSummary]:
    """Efficiency as measured when each answer was computed (cache hits keep the latency
    measured then), with instance-bootstrap intervals: each resample recomputes the figures
    from every request of the drawn instances (the cost is then that of as many instances
    drawn like these). How many answers came from the cache and this run's own model time
    are run facts, without intervals."""
    completions = [o.completion for o in outputs]
    result = efficiency_stats(completions, prices)
    ok = result.requests - result.errors
    live = ok - result.cached
    rows = [
        point(name, "efficiency", getattr(result, field), ok) for name, field in _EFFICIENCY_FIGURES
    ]
    run_fact = "a fact of this run, not an estimate from a sample of instances"
    run_rows = [
        point("cached_requests", "efficiency", float(result.cached), ok, no_interval=run_fact),
        point(
            "run_model_time_s", "efficiency", result.run_model_time_s, live, no_interval=run_fact
        ),
    ]
    if not any(r.present for r in rows):
        return [*rows, *run_rows]
    names = [name for name, _ in _EFFICIENCY_FIGURES]
    clusters = [o.request.instance_id for o in outputs]
    seed = seed_from(seed_key, "efficiency")
    fast = _efficiency_batch(completions, prices)
    if _agrees(fast(np.ones((1, len(completions)), dtype=np.int64)), rows):
        intervals = bootstrap_figures(clusters, fast, names, seed=seed, batched=True)
    else:
        # The vectorized figures no longer match efficiency_stats: resample through it.
        pool = np.empty(len(completions), dtype=object)
        pool[:] = completions

        def statistic(weights: np.ndarray) -> dict[str, float | Absent]:
            again = efficiency_stats(list(np.repeat(pool, weights)), prices)
            return {name: getattr(again, field) for name, field in _EFFICIENCY_FIGURES}

        intervals = bootstrap_figures(clusters, statistic, names, seed=seed)
    return [*(with_interval(row, intervals[row.metric]) for row in rows), *run_rows]


def _efficiency_batch(
    completions: Sequence[Completion], prices: TokenPrices | None
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``efficiency_stats``'s figures for many row weightings at once (NaN where absent).

    A resample of a thousand instances through ``efficiency_stats`` itself costs a Python pass
    over every request per resample; these products cost one matrix product per figure. The
    caller checks them against ``efficiency_stats`` on the data before trusting them.
    """
    ok = np.array([c.ok for c in completions])
    latency = np.array([c.latency_s for c in completions], dtype=np.float64)
    prompt = np.array([c.prompt_tokens for c in completions], dtype=np.float64)
    generated = np.array([c.completion_tokens for c in completions], dtype=np.float64)
    batch = np.array([c.batch_size for c in completions], dtype=np.float64)
    ok_latency = latency[ok]

    def figures(weights: np.ndarray) -> dict[str, np.ndarray]:
        w_ok = weights * ok
        n_ok = w_ok.sum(axis=1).astype(np.float64)
        seconds = w_ok @ latency
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {
                "latency_mean_s": np.where(n_ok > 0, seconds / n_ok, np.nan),
                "tokens_per_s": np.where(seconds > 0, (w_ok @ generated) / seconds, np.nan),
                "batch_size_mean": np.where(n_ok > 0, (w_ok @ batch) / n_ok, np.nan),
                "model_time_s": seconds,
            }
        quantiles = weighted_percentiles(ok_latency, w_ok[:, ok], [50, 95])
        out["latency_p50_s"], out["latency_p95_s"] = quantiles[:, 0], quantiles[:, 1]
        if prices is None:
            out["estimated_cost"] = np.full(len(weights), np.nan)
        else:
            out["estimated_cost"] = (w_ok @ prompt) / 1000.0 * prices.prompt_per_1k + (
                w_ok @ generated
            ) / 1000.0 * prices.completion_per_1k
        return out

    return figures


def _agrees(figures: dict[str, np.ndarray], rows: Sequence[MetricSummary]) -> bool:
    """Whether one all-ones weighting reproduces the rows' point values (NaN where absent)."""
    for row in rows:
        value = float(figures[row.metric][0])
        if not row.present:
            if not np.isnan(value):
                return False
        elif not np.isclose(value, row.mean, rtol=1e-9, atol=1e-12):
            return False
    return True


def family_absences(
    outputs: Sequence[ModelOutput], stats: Sequence[InstanceStat]
) -> list[MetricSummary]:
    """A robustness / fairness row with a reason when no perturbation of the family ran."""
    families = perturbation_families(outputs)
    rows = []
    for family in (ROBUSTNESS, FAIRNESS):
        if family not in families:
            reason = f"no {family} perturbation configured for this scenario"
            rows.append(absent(f"{family}_worst_case", family, reason))
    if not accuracy_metrics(stats):
        rows.append(absent("accuracy", "accuracy", "no output has a reference to match"))
    return rows
