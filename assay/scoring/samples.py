"""Helpers for scorers (``assay.core.scorers``) that judge each answer right or wrong: group
a call's answers per instance and trial, and turn one value per answer into per-instance stats
with pass@k over sampled answers. The built-in scorers use them; plugins may too."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from assay.core.records import ModelOutput
from assay.core.scorers import Stat
from assay.scoring.metrics import accuracy as acc_metrics


def answers_by_instance(outputs: Iterable[ModelOutput]) -> dict[tuple[str, int], list[ModelOutput]]:
    """``(instance id, trial)`` → its answers (several when sampled), in output order."""
    grouped: dict[tuple[str, int], list[ModelOutput]] = {}
    for output in outputs:
        grouped.setdefault((output.request.instance_id, output.request.trial), []).append(output)
    return grouped


def answer_stats(
    instance_id: str, trial: int, metric: str, values: Sequence[float], sampled: bool
) -> list[Stat]:
    """``metric`` of one instance and trial: the mean of its answers' values (1 right, 0
    wrong); for sampled answers also pass@k (Chen et al.'s unbiased estimator) for every k
    of ``accuracy.pass_at_k_values(n)``, n the answers and c those with value 1."""
    if not values:
        return []
    stats = [Stat(instance_id, metric, sum(values) / len(values), trial=trial)]
    if sampled:
        n, c = len(values), sum(1 for v in values if v == 1.0)
        stats += [
            Stat(instance_id, f"pass@{k}", acc_metrics.pass_at_k(n, c, k), trial=trial)
            for k in acc_metrics.pass_at_k_values(n)
        ]
    return stats


def right_or_wrong(
    outputs: Sequence[ModelOutput], metric: str, judge: Callable[[ModelOutput], float]
) -> list[Stat]:
    """Per instance and trial, :func:`answer_stats` of ``judge`` applied to every answer."""
    stats: list[Stat] = []
    for (instance_id, trial), answers in answers_by_instance(outputs).items():
        values = [judge(answer) for answer in answers]
        sampled = any(a.request.sampled for a in answers)
        stats += answer_stats(instance_id, trial, metric, values, sampled)
    return stats
