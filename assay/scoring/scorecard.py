"""From model outputs to per-instance stats (long format) and the scorecard of seven families.

:func:`instance_stats` scores every output row; :func:`holistic_scorecard` turns the stats
and the outputs into the scorecard: a bootstrap mean per (metric, family, group,
perturbation) plus partition-level figures (calibration errors, bias, toxicity aggregates,
efficiency percentiles and cost, group gaps). A figure that cannot be computed is a row with
``reason`` set and ``mean`` NaN, never 0.

The parts live beside this module: :mod:`~assay.scoring.instance_stats`,
:mod:`~assay.scoring.summary`, :mod:`~assay.scoring.families` and
:mod:`~assay.scoring.judge_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from assay.core.records import (
    METRIC_FAMILIES,
    Instance,
    InstanceStat,
    MetricSummary,
    ModelOutput,
    TokenPrices,
    headline_means,
)
from assay.scoring.families import (
    bbq_rows,
    calibration_rows,
    delta_rows,
    efficiency_rows,
    family_absences,
    group_rows,
    text_bias_rows,
    toxicity_rows,
)
from assay.scoring.instance_stats import ToxicityRun, instance_stats_of, score_toxicity
from assay.scoring.judge import Judgment
from assay.scoring.judge_scores import judge_rows, judge_stats
from assay.scoring.metrics.directions import LOWER_IS_BETTER
from assay.scoring.metrics.toxicity import ToxicityScorer
from assay.scoring.scorer_runs import EntryScorer, ScorerRun, run_scorer
from assay.scoring.summary import point, ratio_rows, scorecard

FAMILIES = METRIC_FAMILIES


def holistic_scorecard(
    instances: Sequence[Instance],
    outputs: Sequence[ModelOutput],
    stats: Sequence[InstanceStat],
    *,
    prices: TokenPrices | None = None,
    toxicity_configured: bool = False,
    seed_key: str = "",
    toxicity_run: ToxicityRun | None = None,
    judgments: Sequence[Judgment] | None = None,
    scorer_run: ScorerRun | None = None,
) -> list[MetricSummary]:
    """The scorecard of all seven families for one model version × scenario.

    ``stats`` are :func:`instance_stats` of ``outputs``; ``prices`` price the tokens (cost is
    absent without them); ``toxicity_configured`` says whether a toxicity scorer ran and
    ``toxicity_run`` what it made of the texts; ``judgments`` (None: no judges configured)
    add the judge diagnostics; ``scorer_run`` (the entry's scorer) adds its failure count.
    """
    judged = [] if judgments is None else judge_rows(stats, judgments)
    scorer = [] if scorer_run is None else [scorer_failure_row(scorer_run), *scorer_run.card_rows]
    ratios = (
        []
        if scorer_run is None
        else ratio_rows(stats, scorer_run.ratios, seed_key, transforms=scorer_run.ratio_transforms)
    )
    return [
        *scorecard(stats, seed_key),
        *ratios,
        *family_absences(outputs, stats),
        *delta_rows(stats),
        *group_rows(stats),
        *calibration_rows(stats, seed_key),
        *text_bias_rows(outputs, seed_key),
        *bbq_rows(instances, outputs, seed_key),
        *toxicity_rows(stats, toxicity_configured, toxicity_run, seed_key),
        *efficiency_rows(outputs, prices, seed_key),
        *judged,
        *scorer,
    ]


def scorer_failure_row(run: ScorerRun) -> MetricSummary:
    """``scorer_failures``: how many instances (per layout and input version) the entry's
    scorer raised on, out of ``count`` sent, in the scorer's group so it is never ranked."""
    return point(
        "scorer_failures",
        "accuracy",
        float(len(run.failures)),
        run.attempted,
        group=f"scorer={run.scorer}",
        no_interval="a count of the instances the scorer failed on, not an estimate",
    )


@dataclass(frozen=True, slots=True)
class PartitionScores:
    """Per-instance stats and the scorecard of one model version × scenario."""

    stats: list[InstanceStat]
    card: list[MetricSummary]
    toxicity_run: ToxicityRun | None = None  # what the toxicity scorer made of the texts
    scorer_run: ScorerRun | None = None  # what the entry's scorer made of the answers

    def headline(self) -> dict[str, float]:
        """Ungrouped, unperturbed metrics that have a value (for UI metadata)."""
        return headline_means(self.card)


def score_partition(
    instances: Sequence[Instance],
    outputs: Sequence[ModelOutput],
    *,
    prices: TokenPrices | None = None,
    toxicity: ToxicityScorer | None = None,
    seed_key: str = "",
    judgments: Sequence[Judgment] | None = None,
    scorer: EntryScorer | None = None,
    scored: ScorerRun | None = None,
) -> PartitionScores:
    """Per-instance stats and the seven-family scorecard in one call.

    ``judgments`` are :func:`judge_partition`'s for these outputs (None: no judges).
    ``scorer`` scores the generated answers instead of reference matching
    (:mod:`~assay.scoring.scorer_runs`); what its ``check`` raises (``code_execution``:
    ``SandboxUnavailable`` where the sandbox cannot run) propagates before anything is scored.
    ``scored``: answers already scored another way (an lm-eval task's own scoring,
    :mod:`~assay.scoring.lm_eval_scores`), taking the scorer's place.
    """
    scorer_run = scored
    if scorer_run is None and scorer is not None:
        scorer_run = run_scorer(scorer, instances, outputs)
    toxic_run = score_toxicity(outputs, toxicity)
    stats = instance_stats_of(instances, outputs, toxic_run, scorer_run)
    if judgments is not None:
        # Added after the worst cases: judges see only original inputs, so their scores
        # have no perturbed counterpart.
        stats += judge_stats(instances, outputs, judgments)
    card = holistic_scorecard(
        instances,
        outputs,
        stats,
        prices=prices,
        toxicity_configured=toxicity is not None,
        seed_key=seed_key,
        toxicity_run=toxic_run,
        judgments=judgments,
        scorer_run=scorer_run,
    )
    # Each row says which way is better, so rankings and gates read a scorer's directions
    # from the stored tables (``directions.lower_is_better_in``).
    lower = LOWER_IS_BETTER | (scorer_run.lower_is_better if scorer_run else frozenset())
    card = [replace(row, lower_is_better=row.metric in lower) for row in card]
    return PartitionScores(stats, card, toxic_run, scorer_run)
