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
from dataclasses import dataclass

from assay.core.records import (
    Instance,
    InstanceStat,
    MetricSummary,
    ModelOutput,
    TokenPrices,
    headline_means,
)
from assay.perturbations import FAIRNESS, ROBUSTNESS
from assay.scoring.code_execution import CodeExecutionConfig, ExecutionRun, execute_outputs
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
from assay.scoring.metrics.toxicity import ToxicityScorer
from assay.scoring.summary import scorecard

FAMILIES = ("accuracy", "calibration", ROBUSTNESS, FAIRNESS, "bias", "toxicity", "efficiency")


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
) -> list[MetricSummary]:
    """The scorecard of all seven families for one model version × scenario.

    ``stats`` are :func:`instance_stats` of ``outputs``; ``prices`` price the tokens (cost is
    absent without them); ``toxicity_configured`` says whether a toxicity scorer ran and
    ``toxicity_run`` what it made of the texts; ``judgments`` (None: no judges configured)
    add the judge diagnostics.
    """
    judged = [] if judgments is None else judge_rows(stats, judgments)
    return [
        *scorecard(stats, seed_key),
        *family_absences(outputs, stats),
        *delta_rows(stats),
        *group_rows(stats),
        *calibration_rows(stats, seed_key),
        *text_bias_rows(outputs, seed_key),
        *bbq_rows(instances, outputs, seed_key),
        *toxicity_rows(stats, toxicity_configured, toxicity_run, seed_key),
        *efficiency_rows(outputs, prices, seed_key),
        *judged,
    ]


@dataclass(frozen=True, slots=True)
class PartitionScores:
    """Per-instance stats and the scorecard of one model version × scenario."""

    stats: list[InstanceStat]
    card: list[MetricSummary]
    toxicity_run: ToxicityRun | None = None  # what the toxicity scorer made of the texts
    executed: ExecutionRun | None = None  # the programs run in the sandbox (code_execution)

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
    execution: CodeExecutionConfig | None = None,
) -> PartitionScores:
    """Per-instance stats and the seven-family scorecard in one call.

    ``judgments`` are :func:`judge_partition`'s for these outputs (None: no judges).
    ``execution`` scores generated programs by running them with the tests in the sandbox
    (:mod:`~assay.scoring.code_execution`); it raises ``SandboxUnavailable``, running
    nothing, where the sandbox cannot run.
    """
    executed = None if execution is None else execute_outputs(instances, outputs, execution)
    toxic_run = score_toxicity(outputs, toxicity)
    stats = instance_stats_of(instances, outputs, toxic_run, executed)
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
    )
    return PartitionScores(stats, card, toxic_run, executed)
