"""From model outputs to per-instance stats (long format) and the aggregated scorecard."""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from assay.adapters import UNCONDITIONED, Method, joint_answer_map
from assay.digests import seed_from
from assay.records import Instance, InstanceStat, ModelOutput, RequestKind

# Bump when a metric definition changes: metric tables then re-materialize from stored
# model outputs, without a single model call.
SCORING_VERSION = "1"

SCORECARD_SCHEMA = pa.schema(
    [
        ("metric", pa.string()),
        ("family", pa.string()),
        ("group", pa.string()),
        ("perturbation", pa.string()),
        ("mean", pa.float64()),
        ("count", pa.int64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("reason", pa.string()),  # why a metric is absent; "" when computed
    ]
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """HELM's answer normalization: lowercase, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    return float(any(prediction.strip() == g.strip() for g in golds))


def quasi_exact_match(prediction: str, golds: Sequence[str]) -> float:
    return float(any(normalize_text(prediction) == normalize_text(g) for g in golds))


def _generation_stats(output: ModelOutput, instance: Instance) -> dict[str, tuple[str, float]]:
    prediction, golds = output.completion.text, instance.gold_texts
    return {
        "exact_match": ("accuracy", exact_match(prediction, golds)),
        "quasi_exact_match": ("accuracy", quasi_exact_match(prediction, golds)),
    }


def _choice_stats(output: ModelOutput, instance: Instance) -> dict[str, tuple[str, float]]:
    choices = output.completion.choices
    correct = set(instance.correct_indices)
    logprobs = np.array([c.logprob for c in choices])
    chars = np.array([max(c.n_chars, 1) for c in choices])
    chosen = int(np.argmax(logprobs))
    chosen_norm = int(np.argmax(logprobs / chars))
    # Probability of the chosen answer, renormalized over the choices (for calibration).
    probs = np.exp(logprobs - logprobs.max())
    probs /= probs.sum()
    return {
        "acc": ("accuracy", float(chosen in correct)),
        "acc_norm": ("accuracy", float(chosen_norm in correct)),
        "chosen_prob": ("calibration", float(probs[chosen])),
    }


_JOINT_LETTER = re.compile(r"^\W*([A-Z])(?![A-Za-z])")


def _joint_stats(output: ModelOutput, instance: Instance) -> dict[str, tuple[str, float]]:
    """multiple_choice_joint: the generated letter against the correct references' letters.

    Reference ``i`` is shown as the ``i``-th letter (see ``assay.adapters.joint_answer_map``).
    """
    match = _JOINT_LETTER.match(output.completion.text)
    answers = joint_answer_map(instance)
    chosen = answers.get(match.group(1)) if match else None
    return {
        "exact_match": ("accuracy", float(chosen in set(instance.correct_indices))),
        "valid_letter": ("accuracy", float(chosen is not None)),
    }


def _calibrated_stats(
    output: ModelOutput, unconditioned: ModelOutput | None, instance: Instance
) -> dict[str, tuple[str, float]]:
    """multiple_choice_calibrated: argmax of log P(choice | prompt) − log P(choice | prefix)."""
    values = _choice_stats(output, instance)
    if unconditioned is None or not unconditioned.completion.ok:
        return values
    conditioned = np.array([c.logprob for c in output.completion.choices])
    prior = np.array([c.logprob for c in unconditioned.completion.choices])
    if len(conditioned) != len(prior):
        raise ValueError(
            f"instance {instance.id!r}: calibrated request has {len(conditioned)} choices "
            f"but its unconditioned request has {len(prior)}"
        )
    chosen = int(np.argmax(conditioned - prior))
    values["acc_calibrated"] = ("accuracy", float(chosen in set(instance.correct_indices)))
    return values


def _language_modeling_stats(windows: Sequence[ModelOutput]) -> dict[str, tuple[str, float]]:
    """Perplexity and bits per byte of a document from its windows' log-likelihoods."""
    if not windows or not all(w.completion.ok and w.completion.choices for w in windows):
        return {}
    logprob = sum(w.completion.choices[0].logprob for w in windows)
    n_tokens = sum(w.completion.choices[0].n_tokens for w in windows)
    n_bytes = sum(w.completion.choices[0].n_bytes for w in windows)
    return {
        "logprob": ("accuracy", logprob),
        "perplexity": ("accuracy", math.exp(-logprob / max(n_tokens, 1))),
        "bits_per_byte": ("accuracy", -logprob / (max(n_bytes, 1) * math.log(2))),
    }


def _group_key(output: ModelOutput) -> tuple[str, int, str, str]:
    r = output.request
    return (r.instance_id, r.trial, r.template_id, r.perturbation)


def instance_stats(
    instances: Sequence[Instance], outputs: Sequence[ModelOutput]
) -> list[InstanceStat]:
    """Per-instance accuracy, calibration inputs and efficiency stats for every output row."""
    by_id = {i.id: i for i in instances}
    # Methods that send several requests per instance are scored on their main row.
    unconditioned: dict[tuple[str, int, str, str], ModelOutput] = {}
    windows: dict[tuple[str, int, str, str], list[ModelOutput]] = defaultdict(list)
    for output in outputs:
        if output.request.part == UNCONDITIONED:
            unconditioned[_group_key(output)] = output
        elif output.request.method == Method.LANGUAGE_MODELING.value:
            windows[_group_key(output)].append(output)
    stats = []
    for output in outputs:
        request, completion = output.request, output.completion
        instance = by_id.get(request.instance_id)
        if instance is None:
            raise KeyError(f"model output refers to unknown instance {request.instance_id!r}")
        values: dict[str, tuple[str, float]] = {}
        if completion.ok:
            if request.method == Method.LANGUAGE_MODELING.value:
                if request.part == "window-0":
                    values.update(_language_modeling_stats(windows[_group_key(output)]))
            elif request.part == UNCONDITIONED:
                pass  # scored with its conditioned request
            elif request.method == Method.MULTIPLE_CHOICE_JOINT.value:
                values.update(_joint_stats(output, instance))
            elif request.method == Method.MULTIPLE_CHOICE_CALIBRATED.value:
                values.update(
                    _calibrated_stats(output, unconditioned.get(_group_key(output)), instance)
                )
            elif request.kind is RequestKind.GENERATE:
                values.update(_generation_stats(output, instance))
            else:
                values.update(_choice_stats(output, instance))
        values["failed"] = ("efficiency", float(not completion.ok))
        values["latency_s"] = ("efficiency", completion.latency_s)
        values["prompt_tokens"] = ("efficiency", float(completion.prompt_tokens))
        values["completion_tokens"] = ("efficiency", float(completion.completion_tokens))
        for metric, (family, value) in values.items():
            stats.append(
                InstanceStat(
                    instance_id=instance.id,
                    metric=metric,
                    value=value,
                    family=family,
                    perturbation=request.perturbation,
                    trial=request.trial,
                    template_id=request.template_id,
                )
            )
    return stats


def bootstrap_ci(
    values: np.ndarray, seed: int, n_resamples: int = 1000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    if len(values) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
    means = values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One row of the scorecard."""

    metric: str
    family: str
    group: str
    perturbation: str
    mean: float
    count: int
    ci_low: float
    ci_high: float
    reason: str = ""


def scorecard(stats: Sequence[InstanceStat], seed_key: str = "") -> list[MetricSummary]:
    """Mean, count and a bootstrap 95% interval per (metric, group, perturbation).

    Rows that share an instance (trials) are averaged per instance first, so the interval
    resamples instances, not correlated rows.
    """
    cells: dict[tuple[str, str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for s in stats:
        cells[(s.metric, s.family, s.group, s.perturbation)][s.instance_id].append(s.value)
    rows = []
    for (metric, family, group, perturbation), per_instance in sorted(cells.items()):
        values = np.array([np.mean(v) for v in per_instance.values()], dtype=float)
        low, high = bootstrap_ci(values, seed_from(seed_key, metric, group, perturbation))
        rows.append(
            MetricSummary(
                metric, family, group, perturbation, float(values.mean()), len(values), low, high
            )
        )
    return rows


def scorecard_table(rows: Sequence[MetricSummary]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "metric": r.metric,
                "family": r.family,
                "group": r.group,
                "perturbation": r.perturbation,
                "mean": r.mean,
                "count": r.count,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "reason": r.reason,
            }
            for r in rows
        ],
        schema=SCORECARD_SCHEMA,
    )
