"""The evaluation suite: which scenarios run, with which arguments and prompt layout.

A suite is a YAML file; its scenario keys become the ``scenario`` partitions. Example::

    scenarios:
      arithmetic:                 # partition key
        scenario: arithmetic_qa   # registered scenario name
        args: {n_test: 150}
        adapter: {method: generation, num_train: 3, max_tokens: 8}
        max_instances: 100        # eval instances used (the first N of the eval split)
        eval_split: test
        primary_metric: exact_match
        variants:                 # optional prompt variants, each overriding the adapter
          - {variant: zero-shot, num_train: 0}
          - {variant: terse, instructions: "Answer with a number."}
        perturbations: [typos:prob=0.05, lowercase, gender_pronouns:target=female]
      my-quiz:
        scenario: custom_file
        args: {path: data/quiz.csv}
        columns: {input: question, choices: options, answer_index: label, groups: [dialect]}

Every variant's requests carry its template id, so prompt sensitivity is a breakdown by
template id within one partition. ``perturbations`` are perturbation specs
(``assay.perturbations.get_perturbation``); each one reruns the eval instances with the base
adapter only (variants × perturbations would multiply the request count), and their results
feed the robustness and fairness families. A top-level ``toxicity`` mapping names the
toxicity scorer: a classifier shipped in a package (``{classifier: alt-profanity-check}``,
``assay.scoring.metrics.toxicity.PACKAGED_CLASSIFIERS``), a local classifier directory
(``{classifier_dir: path, toxic_label: optional}``) or a registered model as judge
(``{judge: name@v2 | models:/name@alias, rubric: prompts:/name@alias}``; the rubric is
optional and declares one variable, ``text``); without one the toxicity family is reported
absent. ``columns`` is the column mapping of
``custom_file`` (``assay.scenarios.custom.ColumnMapping``), validated when the suite is read.

Promotion criteria. A top-level ``promotion`` mapping declares what a version must show before
it takes a gated alias or the Production stage (``assay.evaluate.criteria``); without one,
each scenario's primary metric must be non-inferior to the incumbent's within 0.05.

Contamination. A top-level ``contamination`` mapping says which checks run and names the
detectors whose flags leave an instance out of the clean subset
(``{enabled: true, model_based: false, guided: false, flag_detectors: [gpt3_13gram,
palm_8gram, llama2_span]}``, the defaults; ``assay.contamination.config``): overlap checks run
whenever a version declares training corpora, the model-based ones only when asked. ``rankings:
{subset: clean}`` ranks the leaderboard on the clean subsets
(``assay.compare.standings.ranked_results``).

Prompts from the registry. An adapter's (or a variant's) ``instructions`` may be a pinned
prompt reference, and ``input_template`` one whose template places ``{{ input }}``::

      adapter: {instructions: "prompts:/terse@production", input_template: "prompts:/qa/3"}

They are resolved when a partition is evaluated and every request records the registry
version it used; moving the alias re-evaluates the entries that read it
(``assay.evaluate.registry_prompts``).

LLM-as-judge. A generation entry may name judges that score its outputs with a rubric from
the prompt registry (``assay.scoring.judge``)::

      judges: [grader@champion, models:/other-grader@v3]
      judge_rubric: prompts:/grade-answer@production   # variables: input, prediction, reference
      judge_scale: [1, 5]                             # the rubric's scale (default 1..5)
      judge_repeats: 2                                # judgments per judge and output (default 1)

Scorers. A generation entry may name a scorer that reads its generated answers instead of
matching them against the references (``assay.core.scorers``: the protocol and the registry;
the built-ins are ``code_execution`` and ``math_equivalence``, plugins add more through the
``assay.scorers`` entry point group)::

      scorer: code_execution
      scorer_args: {timeout_s: 3, memory_mb: 512, program: prompt+completion}

``scorer_args`` are checked by the scorer's pydantic model when the suite is read, and the
scorer's headline metric (``pass``, ``math_equiv``, ...) is the entry's default
``primary_metric``. ``code_execution`` runs each completion with its tests in the sandbox
(``assay.scoring.code_execution``): where the sandbox (bubblewrap) cannot run, scoring the
entry fails with the reason; the programs never run another way. ``math_equivalence``
compares the final answer with the reference as mathematics (``assay.scoring.math_equivalence``).
A plugin scenario's ``args`` are checked by its own pydantic model the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from assay.adapters import AdapterSpec, Method, build_requests, build_variant_requests
from assay.contamination.config import ContaminationConfig
from assay.core.plugins import PluginError, validate_args
from assay.core.records import Instance, Request, TemplateVersion
from assay.core.scorers import get_scorer
from assay.core.security import check_data_url
from assay.evaluate import suites as shipped
from assay.evaluate.criteria import PromotionCriteria
from assay.evaluate.registry_prompts import adapter_uses, prompt_uses
from assay.perturbations import Perturbation, get_perturbation
from assay.registry.names import name_problem
from assay.scenarios import ColumnMapping, Scenario, get_scenario, scenario_args_model
from assay.scenarios.lm_eval_chat import ChatTemplateError
from assay.scenarios.lm_eval_requests import requests_for, task_settings
from assay.scenarios.lm_eval_tasks import (
    ALLOW_INCLUDE_ENV,
    LM_EVAL,
    LmEvalArgs,
    LmEvalTask,
    LmEvalTaskError,
    LmEvalUnavailable,
    check_runnable,
    expand,
    load_task,
    primary_metric_of,
)
from assay.scenarios.public import public_loader_names

DEFAULT_SUITE = "default.yaml"
ALLOW_HELM_VENV_ENV = "ASSAY_SUITE_ALLOW_HELM_VENV"
ALLOW_SCENARIO_CLASS_ENV = "ASSAY_SUITE_ALLOW_SCENARIO_CLASS"
_TRUE = ("1", "true", "yes")
_WHY_REFUSED = {
    "venv": "it runs that folder's Python",
    "scenario_class": "it imports any class",
}


def _check_reach(scenario: str, args: dict[str, Any], where: str, base_dir: Path | None) -> None:
    """Refuse arguments that would read outside the data roots or run arbitrary code."""
    roots = [base_dir] if base_dir else []
    if scenario == "custom_file" and "path" in args:
        check_data_url(args["path"], f"{where}.args.path", roots)
    if scenario == LM_EVAL:
        for split, path in (args.get("data_files") or {}).items():
            if isinstance(path, str):
                check_data_url(path, f"{where}.args.data_files.{split}", roots)
        if isinstance(args.get("data_dir"), str):
            check_data_url(args["data_dir"], f"{where}.args.data_dir", roots)
        if (
            args.get("include_path") is not None
            and os.environ.get(ALLOW_INCLUDE_ENV, "").lower() not in _TRUE
        ):
            raise ValueError(
                f"{where}.args.include_path: not allowed in a suite unless the deployment "
                f"sets ${ALLOW_INCLUDE_ENV}=1 (task YAMLs import their Python functions)"
            )
    if scenario == "helm_scenario":
        for name, env in (
            ("venv", ALLOW_HELM_VENV_ENV),
            ("scenario_class", ALLOW_SCENARIO_CLASS_ENV),
        ):
            if args.get(name) is not None and os.environ.get(env, "").lower() not in _TRUE:
                why = _WHY_REFUSED[name]
                raise ValueError(
                    f"{where}.args.{name}: not allowed in a suite unless the deployment sets "
                    f"${env}=1 ({why})"
                )
    # A public benchmark's data_files are read like custom_file's path.
    if scenario in public_loader_names() and isinstance(args.get("data_files"), dict):
        for split, location in args["data_files"].items():
            check_data_url(location, f"{where}.args.data_files.{split}", roots)


def validate_key(key: str, what: str = "partition key") -> str:
    """Refuse keys that break the registry's name rule (``assay.registry.names``), which
    keeps partition keys parseable: no ``/ | , [ ] :``, ``...``, spaces, …"""
    problem = name_problem(key, allow_at=True)
    if problem is not None:
        raise ValueError(f"invalid {what}: {problem}")
    return key


@dataclass(frozen=True)
class ScenarioConfig:
    """One entry of the suite: a scenario with its arguments and adapter."""

    key: str
    scenario: str
    args: dict[str, Any] = field(default_factory=dict)
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    max_instances: int | None = None
    eval_split: str = "test"
    train_split: str = "train"
    primary_metric: str = ""
    variants: tuple[AdapterSpec, ...] = ()  # extra prompt layouts, each over ``adapter``
    perturbations: tuple[str, ...] = ()  # normalized perturbation specs, e.g. "typos:prob=0.05"
    judging: JudgeConfig | None = None  # LLM-as-judge scoring of the generated outputs
    # ``scorer``: what scores the generated answers instead of reference matching.
    scoring: ScorerChoice | None = None
    source: str = ""  # the suite file, for error messages
    # Filled by ``registry_prompts.resolve_prompts``: resolved template id → the registry
    # versions that layout came from, recorded with each of its requests.
    prompt_templates: dict[str, tuple[TemplateVersion, ...]] = field(default_factory=dict)
    # ``scenario: lm_eval``: the lm-eval task whose own objects build the requests and score
    # them (``assay.scenarios.lm_eval_requests``, ``assay.scoring.lm_eval_scores``).
    lm_eval: LmEvalTask | None = None

    def build(self) -> Scenario:
        return get_scenario(self.scenario, **self.args)

    @property
    def adapters(self) -> list[AdapterSpec]:
        """The base adapter, then every variant: the prompt layouts this entry runs."""
        return [self.adapter, *self.variants]

    def build_requests(
        self, instances: Sequence[Instance], train: Sequence[Instance] = (), perturbation: str = ""
    ) -> list[Request]:
        """Requests of every prompt variant (base first) for these instances; an lm-eval
        task's own requests for an ``lm_eval`` entry."""
        if self.lm_eval is not None:
            return requests_for(load_task(self.lm_eval), instances)
        self._check_resolved()
        requests = build_variant_requests(self.adapters, instances, train, perturbation)
        return self._with_templates(requests)

    def _check_resolved(self) -> None:
        uses = prompt_uses(self)
        if uses:
            raise ValueError(
                f"{uses[0].where}: prompt reference {uses[0].uri!r} is not resolved; "
                "resolve the entry with assay.evaluate.registry_prompts.resolve_prompts"
            )

    def _with_templates(self, requests: list[Request]) -> list[Request]:
        if not self.prompt_templates:
            return requests
        return [
            replace(r, prompt_templates=self.prompt_templates.get(r.template_id, ()))
            for r in requests
        ]

    def build_perturbations(self) -> list[Perturbation]:
        """The configured perturbations, in suite order."""
        return [get_perturbation(spec) for spec in self.perturbations]

    def build_perturbed_requests(
        self, instances: Sequence[Instance], train: Sequence[Instance], perturbation: str
    ) -> list[Request]:
        """Requests of the base adapter for perturbed copies of instances (ids kept)."""
        self._check_resolved()
        return self._with_templates(build_requests(self.adapter, instances, train, perturbation))

    @property
    def metric(self) -> str:
        """The headline metric: given, or the natural one for the adapter's method."""
        if self.primary_metric:
            return self.primary_metric
        if self.scoring is not None:
            return self.scoring.metric  # e.g. "pass": per instance, the mean over its samples
        return _DEFAULT_METRICS[self.adapter.method]


_DEFAULT_METRICS = {
    Method.GENERATION: "exact_match",
    Method.MULTIPLE_CHOICE_JOINT: "exact_match",
    Method.MULTIPLE_CHOICE_SEPARATE: "acc",
    Method.MULTIPLE_CHOICE_CALIBRATED: "acc_calibrated",
    Method.LANGUAGE_MODELING: "bits_per_byte",
}


@dataclass(frozen=True)
class JudgeConfig:
    """LLM-as-judge settings of one suite entry (see the module doc)."""

    judges: tuple[str, ...]  # model version references, resolved through the registry
    rubric: str  # "prompts:/name@alias" or "prompts:/name/3"
    low: float = 1.0
    high: float = 5.0
    repeats: int = 1


@dataclass(frozen=True)
class ScorerChoice:
    """A suite entry's ``scorer`` with its ``scorer_args`` as the scorer's model checked them
    (``assay.core.scorers``; the scoring step loads the scorer by name)."""

    name: str
    args: BaseModel | None  # None: the scorer takes no arguments
    metric: str  # the scorer's headline metric


@dataclass(frozen=True)
class Suite:
    """An ordered set of scenario configurations, keyed by partition key."""

    scenarios: dict[str, ScenarioConfig]
    source: str = ""
    toxicity: ToxicityConfig | None = None  # None: the toxicity family is reported absent
    # What a version must show to take a gated target (assay.evaluate.criteria).
    promotion: PromotionCriteria = field(default_factory=PromotionCriteria)
    # What the leaderboard ranks on: every evaluated instance, or the clean subset.
    rankings: RankingSettings = field(default_factory=lambda: RankingSettings())
    # Scenario key → digest of its entry as written (and of the suite's toxicity scorer, which
    # scores it): stamped on the tables it produced, so a verdict knows they are current.
    entry_digests: dict[str, str] = field(default_factory=dict)
    # Which contamination checks run and which detectors flag (assay.contamination.config).
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)

    @property
    def keys(self) -> list[str]:
        return list(self.scenarios)

    def __getitem__(self, key: str) -> ScenarioConfig:
        try:
            return self.scenarios[key]
        except KeyError:
            raise KeyError(
                f"unknown scenario key {key!r} in suite {self.source}; "
                f"known: {', '.join(self.scenarios)}"
            ) from None


# --------------------------------------------------------------------------- the file schema
#
# The suite file is validated by the pydantic models below. Their errors are rewritten into
# one sentence that names the file and the key at fault (``s.yaml: scenarios.quiz.judges[0]:
# expected ...``); a field's type error reads as the sentence in ``_EXPECTED``.


class _Invalid(ValueError):
    """A validator's error about a part of the value: ``at`` is appended to the key path
    (``"[2]"`` for a list item, a field name for a model-level rule)."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


_MODEL_REF = (
    "expected a model version reference like 'name@v2', 'name@champion' or 'models:/name@champion'"
)
_PROMPT_URI = "expected a prompt URI like 'prompts:/name@alias' or 'prompts:/name/3'"
_STRING = "expected a string"
_POSITIVE = "expected a positive integer"
_EXPECTED = {
    "": "expected a mapping with a 'scenarios' mapping",
    "scenarios.*": "expected a mapping with a 'scenario' name",
    "scenario": _STRING,
    "args": "expected a mapping",
    "adapter": "expected a mapping of adapter fields",
    "max_instances": _POSITIVE,
    "eval_split": _STRING,
    "train_split": _STRING,
    "primary_metric": _STRING,
    "variants": "expected a list of adapter overrides",
    "perturbations": "expected a list of perturbation specs",
    "perturbations[]": "expected a spec string like 'typos:prob=0.05'",
    "judges": "expected a non-empty list of model version references",
    "judges[]": _MODEL_REF,
    "judge_rubric": _PROMPT_URI,
    "judge_scale": "expected [low, high] numbers with low < high",
    "judge_repeats": _POSITIVE,
    "scorer": _STRING,
    "scorer_args": "expected a mapping",
    "toxicity": "expected a mapping with a 'classifier', a 'classifier_dir' path or a 'judge'",
    "promotion": "expected a mapping (mode, alpha, margin, primary_metrics, criteria)",
    "contamination": "expected a mapping (enabled, model_based, guided, flag_detectors, "
    "min_k, alpha)",
    "flag_detectors": "expected a non-empty list of detector names",
    "rankings": "expected a mapping (subset)",
    "subset": "expected 'full' or 'clean'",
    "criteria": "expected a list of criteria",
    "criteria[]": "expected a mapping (scenario, metric or family, at_least/at_most/margin, on)",
    "mode": "expected 'require_non_inferiority' or 'block_regressions'",
    "primary_metrics": "expected true or false",
}


def _model_ref(value: str) -> str:
    if "@" not in value and not value.startswith("models:/"):
        raise _Invalid(f"{_MODEL_REF}, got {value!r}")
    return value


def _prompt_uri(value: str | None) -> str | None:
    if value is not None and not value.startswith("prompts:/"):
        raise _Invalid(f"{_PROMPT_URI}, got {value!r}")
    return value


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ToxicityConfig(_FileModel):
    """The toxicity scorer of a suite: a classifier shipped in a package (``classifier``), a
    local sequence-classification model directory (``classifier_dir``), or a registered model
    version as judge (``judge``, with an optional registry ``rubric``)."""

    # A name in assay.scoring.metrics.toxicity.PACKAGED_CLASSIFIERS, e.g. "alt-profanity-check",
    # checked when the scorer is built (scoring imports this module, not the other way).
    classifier: str | None = None
    classifier_dir: str | None = None
    toxic_label: str | None = None
    judge: str | None = None  # "name@v2", "name@alias" or "models:/name@alias"
    rubric: str | None = None  # "prompts:/name@alias"; None: the built-in rubric

    _judge = field_validator("judge")(lambda v: v if v is None else _model_ref(v))
    _rubric = field_validator("rubric")(_prompt_uri)

    @model_validator(mode="after")
    def _one_scorer(self) -> ToxicityConfig:
        given = [self.classifier, self.classifier_dir, self.judge]
        if sum(v is not None for v in given) != 1:
            raise _Invalid("give exactly one of 'classifier', 'classifier_dir' and 'judge'")
        if self.classifier_dir is None and self.toxic_label is not None:
            raise _Invalid("only a classifier directory has labels to choose", "toxic_label")
        if self.judge is None and self.rubric is not None:
            raise _Invalid("only a judge reads a rubric", "rubric")
        return self


class ScenarioEntry(_FileModel):
    """One ``scenarios`` entry of the file, checked field by field (see the module doc)."""

    scenario: str
    args: dict[str, Any] | None = None
    adapter: dict[str, Any] | None = None
    max_instances: int | None = Field(default=None, ge=1)
    eval_split: str = "test"
    train_split: str = "train"
    primary_metric: str = ""
    variants: list[Any] | None = None
    columns: Any = None  # checked by ColumnMapping.from_dict, which names its own keys
    perturbations: list[str] | None = None
    judges: list[str] | None = Field(default=None, min_length=1)
    judge_rubric: str | None = None
    judge_scale: tuple[int | float, int | float] = (1, 5)
    judge_repeats: int = Field(default=1, ge=1)
    scorer: str | None = None  # None: reference matching; a registered scorer's name
    scorer_args: dict[str, Any] | None = None

    @field_validator("perturbations")
    @classmethod
    def _normalized_perturbations(cls, specs: list[str] | None) -> list[str] | None:
        """Perturbation specs are checked now, so a typo fails at load and not mid-run."""
        if specs is None:
            return None
        normalized: list[str] = []
        for index, spec in enumerate(specs):
            try:
                name = get_perturbation(spec).spec
            except ValueError as exc:
                raise _Invalid(str(exc), f"[{index}]") from None
            if name in normalized:
                raise _Invalid(f"duplicate perturbation {name!r}", f"[{index}]")
            normalized.append(name)
        return normalized

    @field_validator("judges")
    @classmethod
    def _judge_refs(cls, refs: list[str] | None) -> list[str] | None:
        for index, ref in enumerate(refs or ()):
            try:
                _model_ref(ref)
            except _Invalid as exc:
                raise _Invalid(str(exc), f"[{index}]") from None
        if refs is not None and len(set(refs)) != len(refs):
            raise _Invalid("a judge is listed twice")
        return refs

    _rubric = field_validator("judge_rubric")(_prompt_uri)

    @field_validator("judge_scale", mode="before")
    @classmethod
    def _scale(cls, scale: Any) -> Any:
        # A YAML list is the natural spelling; bool is an int subclass and no scale bound.
        if not isinstance(scale, list | tuple) or len(scale) != 2:
            raise _Invalid(_EXPECTED["judge_scale"])
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in scale):
            raise _Invalid(_EXPECTED["judge_scale"])
        if not scale[0] < scale[1]:
            raise _Invalid(_EXPECTED["judge_scale"])
        return tuple(scale)

    @model_validator(mode="after")
    def _judging_and_columns(self) -> ScenarioEntry:
        given = [f for f in _JUDGE_FIELDS if f in self.model_fields_set]
        if given and (self.judges is None or self.judge_rubric is None):
            raise _Invalid(f"{', '.join(given)} need both 'judges' and 'judge_rubric'")
        if "columns" in self.model_fields_set and "columns" in (self.args or {}):
            raise _Invalid("give columns once, not also in args")
        if self.scorer_args is not None and self.scorer is None:
            raise _Invalid("scorer_args need a 'scorer'", "scorer_args")
        return self

    def config(self, key: str, where: str, base_dir: Path | None = None) -> ScenarioConfig:
        """The runtime record; the adapter, variants and columns are checked by their own
        modules, with ``where`` naming the entry; what the arguments may reach is checked
        against the data roots (``base_dir``: the suite file's folder)."""
        args = dict(self.args or {})
        _check_reach(self.scenario, args, where, base_dir)
        try:
            model = scenario_args_model(self.scenario)
        except PluginError as exc:
            raise ValueError(f"{where}.scenario: {exc}") from None
        if model is not None:
            validate_args(model, args, where + ".args")  # the plugin's own checks, now
        if "columns" in self.model_fields_set:
            # Validated now, kept as plain data so args stay JSON-serializable.
            ColumnMapping.from_dict(self.columns, where + ".columns")
            args["columns"] = dict(self.columns)
        adapter = AdapterSpec.from_dict(dict(self.adapter or {}), where + ".adapter")
        variants = _variants(adapter, self.variants or [], where + ".variants")
        # Registry references are checked for shape now and resolved at evaluation time.
        adapter_uses(adapter, 0, where + ".adapter")
        for index, variant in enumerate(variants):
            adapter_uses(variant, index + 1, f"{where}.variants[{index}]")
        source, _, _ = where.partition(": scenarios.")
        return ScenarioConfig(
            key=key,
            scenario=self.scenario,
            args=args,
            adapter=adapter,
            variants=variants,
            source=source,
            max_instances=self.max_instances,
            eval_split=self.eval_split,
            train_split=self.train_split,
            primary_metric=self.primary_metric,
            perturbations=tuple(self.perturbations or ()),
            judging=self._judging(adapter, where),
            scoring=self._scoring(adapter, where),
        )

    def lm_eval_configs(
        self, key: str, where: str, base_dir: Path | None = None
    ) -> list[ScenarioConfig]:
        """The runtime records of an ``lm_eval`` entry: one per task of the group it names
        (keys ``<key>.<task>``), or one keyed ``key`` for a task. lm-eval builds the prompts
        and scores them, so assay's own layouts, perturbations and judges are refused."""
        args = dict(self.args or {})
        _check_reach(self.scenario, args, where, base_dir)
        for name in ("adapter", "variants", "perturbations", "judges", "columns"):
            if name in self.model_fields_set:
                raise ValueError(
                    f"{where}.{name}: an lm_eval entry takes lm-eval's own prompts and "
                    "scoring; assay's adapters, variants, perturbations and judges do not apply"
                )
        checked = validate_args(LmEvalArgs, args, where + ".args")
        assert isinstance(checked, LmEvalArgs)
        try:
            tasks = expand(checked, where + ".args")
        except ChatTemplateError as exc:
            raise ValueError(str(exc)) from None
        except (LmEvalTaskError, LmEvalUnavailable) as exc:
            raise ValueError(f"{where}.args.task: {exc}") from None
        scoring = self._scoring(AdapterSpec(method=Method.GENERATION), where)
        configs = []
        for spec in tasks:
            try:
                check_runnable(spec, self.scorer, where)
            except LmEvalTaskError as exc:
                raise ValueError(str(exc)) from None
            task_key = key if spec.task == checked.task else f"{key}.{spec.task}"
            validate_key(task_key, f"scenario key of lm-eval task {spec.task!r} in {where}")
            source, _, _ = where.partition(": scenarios.")
            configs.append(
                ScenarioConfig(
                    key=task_key,
                    scenario=LM_EVAL,
                    args=task_settings(spec),
                    source=source,
                    max_instances=self.max_instances,
                    eval_split="test",
                    primary_metric=self.primary_metric or primary_metric_of(spec),
                    scoring=scoring,
                    lm_eval=spec,
                )
            )
        return configs

    def _scoring(self, adapter: AdapterSpec, where: str) -> ScorerChoice | None:
        if self.scorer is None:
            return None
        if adapter.method is not Method.GENERATION:
            raise ValueError(
                f"{where}.scorer: a scorer reads generated answers; the adapter method is "
                f"{adapter.method.value!r}, not 'generation'"
            )
        try:
            loaded = get_scorer(self.scorer)
        except KeyError as exc:
            raise ValueError(f"{where}.scorer: {exc.args[0]}") from None
        except PluginError as exc:
            raise ValueError(f"{where}.scorer: {exc}") from None
        args = loaded.validate(self.scorer_args, where + ".scorer_args")
        return ScorerChoice(self.scorer, args, loaded.metric)

    def _judging(self, adapter: AdapterSpec, where: str) -> JudgeConfig | None:
        if self.judges is None or self.judge_rubric is None:
            return None
        if adapter.method is not Method.GENERATION:
            raise ValueError(
                f"{where}.judges: judges read generated answers; the adapter method is "
                f"{adapter.method.value!r}, not 'generation'"
            )
        low, high = self.judge_scale
        return JudgeConfig(
            tuple(self.judges), self.judge_rubric, float(low), float(high), self.judge_repeats
        )


_JUDGE_FIELDS = ("judges", "judge_rubric", "judge_scale", "judge_repeats")


class RankingSettings(_FileModel):
    """The suite's ``rankings:`` block. ``subset: clean`` ranks every partition that has a
    clean slice on it (its clean rows, and per instance only its clean instances for the rank
    intervals and paired tests); a partition with no contamination check is ranked on all its
    instances, and the board's notes name it."""

    subset: Literal["full", "clean"] = "full"


class SuiteFile(_FileModel):
    """The whole file: the scenario entries in order, and the optional toxicity scorer."""

    scenarios: dict[str, ScenarioEntry]
    toxicity: ToxicityConfig | None = None
    promotion: PromotionCriteria | None = None
    contamination: ContaminationConfig | None = None
    rankings: RankingSettings | None = None


def _variants(base: AdapterSpec, raw: list[Any], where: str) -> tuple[AdapterSpec, ...]:
    variants = []
    names = {base.variant}
    for index, override in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(override, dict) or not override.get("variant"):
            raise ValueError(f"{at}: each variant needs a 'variant' name")
        if override["variant"] in names:
            raise ValueError(f"{at}: duplicate variant name {override['variant']!r}")
        names.add(override["variant"])
        variants.append(base.override(override, at))
    return tuple(variants)


def _path(loc: tuple[int | str, ...]) -> str:
    """``("scenarios", "quiz", "judges", 0)`` → ``scenarios.quiz.judges[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _sentence(errors: list[ErrorDetails], source: str) -> str:
    """The first of pydantic's errors as one sentence naming the file and the key."""
    # Unknown keys are reported together, per mapping, as the hand-written checks did.
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    first = extra[0] if extra else errors[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        names = sorted(str(e["loc"][-1]) for e in extra if e["loc"][:-1] == first["loc"][:-1])
        what = "unknown top-level field(s)" if not parent else "unknown field(s)"
        return _at(source, parent, f"{what}: {', '.join(names)}")
    error = (first.get("ctx") or {}).get("error")
    if isinstance(error, _Invalid):
        at = ("." + error.at) if error.at and not error.at.startswith("[") else error.at
        return _at(source, loc, str(error), at)
    if error is not None and loc[:1] in (("promotion",), ("contamination",)):  # a rule, in words
        return _at(source, loc, str(error))
    # A type error: the sentence the field's table entry gives.
    if loc == ("scenarios",) or (first["type"] == "missing" and loc[-1:] == ("scenario",)):
        loc = loc[:-1]  # a missing or malformed part is reported at the mapping that lacks it
    if len(loc) == 2 and loc[0] == "scenarios":
        return _at(source, loc, _EXPECTED["scenarios.*"])
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    key = f"{name}[]" if loc and isinstance(loc[-1], int) else name
    if loc[:1] == ("toxicity",) and len(loc) > 1:
        return _at(source, loc, _STRING)
    return _at(source, loc, _EXPECTED.get(key, first["msg"]))


def _at(source: str, loc: tuple[int | str, ...], message: str, tail: str = "") -> str:
    where = _path(loc) + tail
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def parse_suite(data: Any, source: str = "<suite>", base_dir: Path | None = None) -> Suite:
    """Validate a parsed YAML document; every error names the file and key at fault.

    ``base_dir`` (the suite file's folder) is a data root for ``custom_file`` paths besides
    the working directory (see ``check_data_url``).
    """
    if isinstance(data, dict) and isinstance(data.get("scenarios"), dict):
        # Partition keys follow the one key rule; YAML may have read them as numbers.
        for key in data["scenarios"]:
            validate_key(str(key), f"scenario key in {source}")
        data = {**data, "scenarios": {str(k): v for k, v in data["scenarios"].items()}}
    try:
        parsed = SuiteFile.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_sentence(exc.errors(), source)) from None
    if not parsed.scenarios:
        raise ValueError(f"{source}: the suite has no scenarios")
    entries: dict[str, ScenarioConfig] = {}
    origins: dict[str, str] = {}  # entry key → the suite file's key it came from
    for key, entry in parsed.scenarios.items():
        where = f"{source}: scenarios.{key}"
        configs = (
            entry.lm_eval_configs(key, where, base_dir)
            if entry.scenario == LM_EVAL
            else [entry.config(key, where, base_dir)]
        )
        for config in configs:
            if config.key in entries:
                raise ValueError(
                    f"{where}: scenario key {config.key!r} is already an entry of the suite"
                )
            entries[config.key] = config
            origins[config.key] = key
    groups: dict[str, list[str]] = {}
    for key, origin in origins.items():
        if key != origin:  # a task of a group entry (lm-eval's mmlu → mmlu.mmlu_anatomy, …)
            groups.setdefault(origin, []).append(key)
    promotion = (parsed.promotion or PromotionCriteria()).resolve_groups(
        list(entries), groups, f"{source}: promotion"
    )
    raw = data["scenarios"]
    toxicity = data.get("toxicity")
    digests = {}
    for key, origin in origins.items():
        content = {"entry": raw[origin], "toxicity": toxicity}
        if data.get("contamination") is not None:  # it decides the clean rows of every entry
            content["contamination"] = data["contamination"]
        if key != origin:  # one task of a group: its own entry
            content["key"] = key
        digests[key] = content_digest(content)
    return Suite(
        entries,
        source=source,
        toxicity=parsed.toxicity,
        promotion=promotion,
        rankings=parsed.rankings or RankingSettings(),
        entry_digests=digests,
        contamination=parsed.contamination or ContaminationConfig(),
    )


def content_digest(data: Any) -> str:
    """sha256 of ``data`` as canonical JSON: the same content, the same digest."""
    canonical = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_suite(path: str | os.PathLike[str] | None = None) -> Suite:
    """Read a suite file, or a shipped suite by name (``helm-classic-core``: see
    ``assay.evaluate.suites``); ``None`` means ``$ASSAY_SUITE`` or the shipped default suite.

    A name is a shipped suite only when no file of that name exists, so a local file always
    wins; shipped suites have no data root besides the working directory.
    """
    path = path or os.environ.get("ASSAY_SUITE") or DEFAULT_SUITE.removesuffix(".yaml")
    base_dir = None
    if isinstance(path, str) and not Path(path).exists() and shipped.is_shipped(path):
        text, source = shipped.read_shipped(path)
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            names = ", ".join(shipped.shipped_suites())
            raise ValueError(
                f"suite {str(path)!r}: no such file and not a shipped suite ({names})"
            ) from None
        source = str(path)
        base_dir = Path(path).resolve().parent
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    return parse_suite(data, source, base_dir)
