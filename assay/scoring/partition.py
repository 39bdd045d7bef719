"""A suite's partitions scored from stored outputs: what the ``instance_scores`` and
``metric_tables`` assets call. Never calls the evaluated model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from assay.contamination.clean import contamination_rows
from assay.contamination.subsets import Contamination
from assay.core.pinned_prices import pinned_prices
from assay.core.records import Instance, InstanceStat, ModelOutput
from assay.evaluate.suite import JudgeConfig, Suite
from assay.models.base import ModelClient, ModelSpec
from assay.registry import Registry
from assay.scoring.judge import Judgment, Rubric, judge_clients, toxicity_scorer
from assay.scoring.judge_scores import judge_partition, judge_reply_table
from assay.scoring.lm_eval_scores import score_lm_eval
from assay.scoring.scorecard import PartitionScores, score_partition
from assay.scoring.scorer_runs import EntryScorer, ScorerFailure
from assay.scoring.summary import scorecard_table


@dataclass(frozen=True, slots=True)
class ScoredPartition:
    """One partition's per-instance stats and scorecard, with what judged it."""

    scores: PartitionScores
    judgments: list[Judgment] | None  # None: the scenario has no judges
    toxicity_scorer: str  # "none" without one
    prices_from: str  # "evaluation" (pinned in model_outputs) or "registry" (older partitions)
    replies: pa.Table | None = None  # the judges' replies (judge_scores.JUDGE_REPLY_SCHEMA)

    @property
    def stats_table(self) -> pa.Table:
        return InstanceStat.to_table(self.scores.stats)

    @property
    def card_table(self) -> pa.Table:
        return scorecard_table(self.scores.card)

    def headline(self) -> dict[str, float]:
        return self.scores.headline()

    @property
    def scorer_failures(self) -> list[ScorerFailure]:
        """The instances the entry's scorer raised on, each message naming the scorer, its
        entry point and the instance."""
        run = self.scores.scorer_run
        return list(run.failures) if run is not None else []

    def figures(self) -> dict[str, Any]:
        """Counts for the UI: instances, absent metrics, the scorer and judge bookkeeping."""
        out: dict[str, Any] = {
            "num_instances": len({s.instance_id for s in self.scores.stats}),
            "num_absent_metrics": sum(not r.present for r in self.scores.card),
            "toxicity_scorer": self.toxicity_scorer,
            "prices_from": self.prices_from,
        }
        run = self.scores.scorer_run
        if run is not None:
            out["scorer"] = run.scorer
            out["num_scorer_failures"] = len(run.failures)
            out |= {k: int(v) if float(v).is_integer() else v for k, v in run.figures.items()}
        if self.judgments is not None:
            out["num_judgments"] = len(self.judgments)
            out["num_judge_parse_failures"] = sum(j.score is None for j in self.judgments)
            out["num_judgments_cached"] = sum(j.cached for j in self.judgments)
        return out


class SuiteScorer:
    """Scores the partitions of one suite. The toxicity scorer is built once, and each
    judging setup (judge clients and rubric) once, however many partitions a run scores;
    judges' requests go through the request cache, so rescoring asks them only once."""

    def __init__(
        self,
        suite: Suite,
        registry: Callable[[], Registry],
        client: Callable[[ModelSpec], ModelClient],
    ) -> None:
        self.suite, self._registry, self._client = suite, registry, client
        self.toxicity = toxicity_scorer(suite.toxicity, registry, client)
        self._judging: dict[JudgeConfig, tuple[list[tuple[str, ModelClient]], Rubric]] = {}
        self._scorers: dict[str, EntryScorer] = {}

    def _scorer(self, scenario: str) -> EntryScorer | None:
        choice = self.suite[scenario].scoring
        if choice is None:
            return None
        if scenario not in self._scorers:
            self._scorers[scenario] = EntryScorer.named(choice.name, choice.args)
        return self._scorers[scenario]

    def _judges(self, judging: JudgeConfig) -> tuple[list[tuple[str, ModelClient]], Rubric]:
        if judging not in self._judging:
            reg = self._registry()
            self._judging[judging] = (
                judge_clients(reg, judging.judges, self._client),
                Rubric.from_registry(reg, judging.rubric, low=judging.low, high=judging.high),
            )
        return self._judging[judging]

    def score(
        self,
        version: str,
        scenario: str,
        scenario_instances: pa.Table,
        model_outputs: pa.Table,
        seed_key: str,
        contamination: pa.Table | None = None,
    ) -> ScoredPartition:
        """Score ``version``'s stored outputs on ``scenario``, with the token prices pinned
        when the outputs were evaluated, the suite's toxicity scorer and judges, and the
        entry's scorer (``code_execution`` runs the programs in the sandbox; a plugin's runs
        in this process).

        ``contamination`` (the partition's ``contamination`` table; None: not checked) adds
        the contamination rate and the clean-subset rows beside the full ones, under the
        suite's ``contamination.flag_detectors`` (:mod:`assay.contamination.clean`).

        Outputs written before prices were pinned are priced from the registry's current
        prices until the version is evaluated again."""
        instances = Instance.from_table(scenario_instances)
        outputs = ModelOutput.from_table(model_outputs)
        entry = self.suite[scenario]
        judging = entry.judging
        judgments = None
        if judging is not None:
            judges, rubric = self._judges(judging)
            judgments = judge_partition(instances, outputs, judges, rubric, judging.repeats)
        pinned = pinned_prices(model_outputs, f"model_outputs {version} × {scenario}")
        prices = pinned.prices
        if not pinned.pinned:
            prices = self._registry().get_version(version).prices.token_prices()
        scorer = self._scorer(scenario)
        # An lm-eval task is scored by lm-eval's own filters and process_results, unless its
        # entry names a scorer (code_execution for a code task).
        scored = None
        if entry.lm_eval is not None and scorer is None:
            scored = score_lm_eval(entry.lm_eval, instances, outputs)
        scores = score_partition(
            instances,
            outputs,
            prices=prices,
            toxicity=self.toxicity,
            seed_key=seed_key,
            judgments=judgments,
            scorer=scorer,
            scored=scored,
        )
        checked = Contamination.of(
            contamination,
            self.suite.contamination.flag_detectors,
            where=f"contamination {version} × {scenario}",
        )
        flags, rows = contamination_rows(
            scores.stats,
            {o.request.instance_id for o in outputs},
            checked,
            seed_key=seed_key,
            lower_is_better={r.metric for r in scores.card if r.lower_is_better},
        )
        scores = replace(scores, stats=scores.stats + flags, card=scores.card + rows)
        name = self.toxicity.name if self.toxicity is not None else "none"
        replies = judge_reply_table(instances, outputs, judgments, scores.toxicity_run)
        prices_from = "evaluation" if pinned.pinned else "registry"
        return ScoredPartition(scores, judgments, name, prices_from, replies)
