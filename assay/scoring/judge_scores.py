"""LLM-as-judge scores of a partition's generated answers.

LLM-as-judge (suite entries with ``judges``, see ``assay.scoring.judge``): every unperturbed
generated answer is judged; ``judge_score`` (family accuracy) is an output's mean parsed score
over all judges and repeats. Family ``judge`` holds the diagnostics, each row grouped so that
rankings (which read ungrouped rows) never rank models by them: per judge
(``group="judge=<key>"``) its own ``judge_score``, ``judge_repeat_std`` (sample std over
repeats) and ``judge_parse_failures`` (mean = failed judgments, count = judgments); between
judges on repeat 0 (``group="repeat=0"``) Krippendorff's ``judge_alpha_nominal`` and
``judge_alpha_interval``, and per pair (``group="judges=<a>,<b>"``) ``judge_kappa`` and
``judge_exact_agreement``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa

from assay.core.records import Instance, InstanceStat, MetricSummary, ModelOutput
from assay.models.base import ModelClient
from assay.scoring.instance_stats import ToxicityRun, is_free_text
from assay.scoring.judge import (
    JudgeItem,
    Judgment,
    Rubric,
    agreement,
    judge_outputs,
    repeat_spread,
)
from assay.scoring.metrics.absent import Absent
from assay.scoring.summary import absent, point

# LLM-as-judge diagnostics (agreement, spread, parse failures); not one of the seven families.
JUDGE_FAMILY = "judge"
# Agreement statistics describe the judges on this run's items; they are not resampled.
_AGREEMENT_NO_INTERVAL = "agreement between judges on this run's items: not resampled"


def _judge_targets(
    instances: Sequence[Instance], outputs: Sequence[ModelOutput]
) -> dict[str, tuple[Instance, ModelOutput]]:
    """Item id → the unperturbed generated answer it judges, in output order."""
    by_id = {i.id: i for i in instances}
    targets: dict[str, tuple[Instance, ModelOutput]] = {}
    for output in outputs:
        r = output.request
        if r.perturbation or r.part or not output.completion.ok or not is_free_text(output):
            continue
        instance = by_id.get(r.instance_id)
        if instance is None:
            raise KeyError(f"model output refers to unknown instance {r.instance_id!r}")
        # Each sample of a sampled request is judged on its own (``#s<k>`` after the first).
        sample = f"#s{r.sample}" if r.sample else ""
        targets[f"{r.instance_id}#{r.template_id}#{r.trial}{sample}"] = (instance, output)
    return targets


def judge_items(instances: Sequence[Instance], outputs: Sequence[ModelOutput]) -> list[JudgeItem]:
    """The judge's items: every unperturbed, successful generated answer with its question
    and gold references (joined by " | "); the id is ``<instance>#<template>#<trial>``, with
    ``#s<k>`` appended for sample k > 0 of a sampled request."""
    return [
        JudgeItem(
            id=item_id,
            input=instance.input,
            prediction=output.completion.text,
            reference=" | ".join(instance.gold_texts),
        )
        for item_id, (instance, output) in _judge_targets(instances, outputs).items()
    ]


def judge_partition(
    instances: Sequence[Instance],
    outputs: Sequence[ModelOutput],
    judges: Sequence[tuple[str, ModelClient]],
    rubric: Rubric,
    repeats: int = 1,
) -> list[Judgment]:
    """Every judge's judgments of the partition's generated answers (see ``judge_items``)."""
    items = judge_items(instances, outputs)
    if not items:
        return []
    return judge_outputs(judges, rubric, items, repeats)


def judge_stats(
    instances: Sequence[Instance], outputs: Sequence[ModelOutput], judgments: Sequence[Judgment]
) -> list[InstanceStat]:
    targets = _judge_targets(instances, outputs)
    unknown = sorted({j.item_id for j in judgments} - set(targets))
    if unknown:
        raise KeyError(f"judgment of unknown item {unknown[0]!r} (not a judged output)")
    parsed: dict[str, list[float]] = defaultdict(list)
    per_judge: dict[tuple[str, str], list[float]] = defaultdict(list)
    for j in judgments:
        if j.score is not None:
            parsed[j.item_id].append(j.score)
            per_judge[(j.item_id, j.judge)].append(j.score)
    spread = {(r.item_id, r.judge): r.std for r in repeat_spread(judgments)}
    stats: list[InstanceStat] = []
    for item_id, (instance, output) in targets.items():
        base = InstanceStat(
            instance_id=instance.id,
            metric="judge_score",
            value=0.0,
            trial=output.request.trial,
            template_id=output.request.template_id,
        )
        if parsed[item_id]:
            overall = replace(base, value=float(np.mean(parsed[item_id])))
            stats.append(overall)
            stats.extend(
                replace(overall, group=f"{key}={value}")
                for key, value in sorted(instance.groups.items())
            )
        for judge in sorted({j.judge for j in judgments}):
            own = per_judge.get((item_id, judge))
            group = f"judge={judge}"
            if own:
                stats.append(
                    replace(base, value=float(np.mean(own)), family=JUDGE_FAMILY, group=group)
                )
            std = spread.get((item_id, judge))
            if std is not None:
                stats.append(
                    replace(
                        base, metric="judge_repeat_std", value=std, family=JUDGE_FAMILY, group=group
                    )
                )
    return stats


def judge_rows(stats: Sequence[InstanceStat], judgments: Sequence[Judgment]) -> list[MetricSummary]:
    """Parse failures, missing spreads and agreement between judges (module doc)."""
    if not judgments:
        return [absent("judge_score", "accuracy", "no generated answer to judge")]
    rows = []
    if not any(s.metric == "judge_score" and s.family == "accuracy" for s in stats):
        rows.append(absent("judge_score", "accuracy", "no judgment could be parsed"))
    judges = sorted({j.judge for j in judgments})
    with_spread = {s.group for s in stats if s.metric == "judge_repeat_std"}
    single = max(j.repeat for j in judgments) == 0
    for judge in judges:
        own = [j for j in judgments if j.judge == judge]
        failures = sum(j.score is None for j in own)
        group = f"judge={judge}"
        rows.append(
            point(
                "judge_parse_failures",
                JUDGE_FAMILY,
                float(failures),
                len(own),
                group=group,
                no_interval="a count of this run's judgments, not an estimate",
            )
        )
        if group not in with_spread:
            why = (
                "one judgment per output (judge_repeats: 1): no repeat spread"
                if single
                else "no output has two parsed repeats"
            )
            rows.append(absent("judge_repeat_std", JUDGE_FAMILY, why, group=group))
    names = ("judge_alpha_nominal", "judge_alpha_interval")
    if len(judges) < 2:
        why = "one judge: agreement needs two or more"
        return rows + [absent(name, JUDGE_FAMILY, why, group="repeat=0") for name in names]
    found = agreement(judgments, repeat=0)
    units: dict[str, int] = defaultdict(int)
    for j in judgments:
        if j.repeat == 0 and j.score is not None:
            units[j.item_id] += 1
    pairable = sum(n >= 2 for n in units.values())
    undefined = Absent("undefined: fewer than two parsed scores per item, or no variation")
    for name, value in zip(names, (found.alpha_nominal, found.alpha_interval), strict=True):
        rows.append(
            point(
                name,
                JUDGE_FAMILY,
                undefined if value is None else value,
                pairable,
                "repeat=0",
                no_interval=_AGREEMENT_NO_INTERVAL,
            )
        )
    for pair in found.pairs:
        group = f"judges={pair.judge_a},{pair.judge_b}"
        for name, value in (("judge_kappa", pair.kappa), ("judge_exact_agreement", pair.exact)):
            why = Absent("undefined: no item scored by both, or chance agreement is 1")
            value_ = why if value is None else value
            rows.append(
                point(name, JUDGE_FAMILY, value_, pair.n, group, no_interval=_AGREEMENT_NO_INTERVAL)
            )
    return rows


# The judges' replies of a partition (table ``judge_replies``, next to ``instance_scores``):
# one row per judgment. ``kind`` is "judge" (LLM-as-judge; ``repeat`` counts its repeats)
# or "toxicity" (the toxicity judge; repeat 0); ``judge`` is the judge's version key or the
# toxicity scorer's name; ``score`` is null and ``failure`` says why where none was parsed.
JUDGE_REPLY_SCHEMA = pa.schema(
    [
        ("instance_id", pa.string()),
        ("perturbation", pa.string()),
        ("trial", pa.int32()),
        ("template_id", pa.string()),
        ("kind", pa.string()),
        ("judge", pa.string()),
        ("repeat", pa.int32()),
        ("score", pa.float64()),
        ("failure", pa.string()),
        ("reply", pa.string()),
    ]
)


def judge_reply_table(
    instances: Sequence[Instance],
    outputs: Sequence[ModelOutput],
    judgments: Sequence[Judgment] | None,
    toxicity: ToxicityRun | None,
) -> pa.Table | None:
    """Every judge reply on the partition's outputs (None: no judge replied)."""
    rows = []
    if judgments:
        targets = _judge_targets(instances, outputs)
        for j in judgments:
            _, output = targets[j.item_id]
            r = output.request
            where = (r.instance_id, r.perturbation, r.trial, r.template_id)
            rows.append((*where, "judge", j.judge, j.repeat, j.score, j.failure, j.reply))
    if toxicity is not None:
        for index, reply in sorted(toxicity.replies.items()):
            r = outputs[index].request
            score = toxicity.scores.get(index)
            failure = None if score is not None else "no number in [0, 1] in the reply"
            where = (r.instance_id, r.perturbation, r.trial, r.template_id)
            rows.append((*where, "toxicity", toxicity.scorer, 0, score, failure, reply))
    if not rows:
        return None
    columns = list(zip(*rows, strict=True))
    return pa.table(
        {name: list(col) for name, col in zip(JUDGE_REPLY_SCHEMA.names, columns, strict=True)},
        schema=JUDGE_REPLY_SCHEMA,
    )
