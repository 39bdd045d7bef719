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
toxicity scorer, either a local classifier (``{classifier_dir: path, toxic_label: optional}``)
or a registered model as judge (``{judge: name@v2 | models:/name@alias, rubric:
prompts:/name@alias}``; the rubric is optional and declares one variable, ``text``); without
one the toxicity family is reported absent. ``columns`` is the column mapping of
``custom_file`` (``assay.scenarios.custom.ColumnMapping``), validated when the suite is read.

LLM-as-judge. A generation entry may name judges that score its outputs with a rubric from
the prompt registry (``assay.judge``)::

      judges: [grader@champion, models:/other-grader@v3]
      judge_rubric: prompts:/grade-answer@production   # variables: input, prediction, reference
      judge_scale: [1, 5]                             # the rubric's scale (default 1..5)
      judge_repeats: 2                                # judgments per judge and output (default 1)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from assay.adapters import AdapterSpec, Method, build_requests, build_variant_requests
from assay.perturbations import Perturbation, get_perturbation
from assay.records import Instance, Request
from assay.registry.names import name_problem
from assay.scenarios import ColumnMapping, Scenario, get_scenario

DEFAULT_SUITE = "default.yaml"


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

    def build(self) -> Scenario:
        return get_scenario(self.scenario, **self.args)

    @property
    def adapters(self) -> list[AdapterSpec]:
        """The base adapter, then every variant: the prompt layouts this entry runs."""
        return [self.adapter, *self.variants]

    def build_requests(
        self, instances: Sequence[Instance], train: Sequence[Instance] = (), perturbation: str = ""
    ) -> list[Request]:
        """Requests of every prompt variant (base first) for these instances."""
        return build_variant_requests(self.adapters, instances, train, perturbation)

    def build_perturbations(self) -> list[Perturbation]:
        """The configured perturbations, in suite order."""
        return [get_perturbation(spec) for spec in self.perturbations]

    def build_perturbed_requests(
        self, instances: Sequence[Instance], train: Sequence[Instance], perturbation: str
    ) -> list[Request]:
        """Requests of the base adapter for perturbed copies of instances (ids kept)."""
        return build_requests(self.adapter, instances, train, perturbation)

    @property
    def metric(self) -> str:
        """The headline metric: given, or the natural one for the adapter's method."""
        if self.primary_metric:
            return self.primary_metric
        return _DEFAULT_METRICS[self.adapter.method]


_DEFAULT_METRICS = {
    Method.GENERATION: "exact_match",
    Method.MULTIPLE_CHOICE_JOINT: "exact_match",
    Method.MULTIPLE_CHOICE_SEPARATE: "acc",
    Method.MULTIPLE_CHOICE_CALIBRATED: "acc_calibrated",
    Method.LANGUAGE_MODELING: "bits_per_byte",
}


@dataclass(frozen=True)
class ToxicityConfig:
    """The toxicity scorer of a suite: a local sequence-classification model directory, or a
    registered model version as judge (``judge``, with an optional registry ``rubric``)."""

    classifier_dir: str | None = None
    toxic_label: str | None = None
    judge: str | None = None  # "name@v2", "name@alias" or "models:/name@alias"
    rubric: str | None = None  # "prompts:/name@alias"; None: the built-in rubric

    def __post_init__(self) -> None:
        if (self.classifier_dir is None) == (self.judge is None):
            raise ValueError("a toxicity scorer needs exactly one of classifier_dir and judge")


@dataclass(frozen=True)
class JudgeConfig:
    """LLM-as-judge settings of one suite entry (see the module doc)."""

    judges: tuple[str, ...]  # model version references, resolved through the registry
    rubric: str  # "prompts:/name@alias" or "prompts:/name/3"
    low: float = 1.0
    high: float = 5.0
    repeats: int = 1


@dataclass(frozen=True)
class Suite:
    """An ordered set of scenario configurations, keyed by partition key."""

    scenarios: dict[str, ScenarioConfig]
    source: str = ""
    toxicity: ToxicityConfig | None = None  # None: the toxicity family is reported absent

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


_ENTRY_FIELDS = {
    "scenario",
    "args",
    "adapter",
    "max_instances",
    "eval_split",
    "train_split",
    "primary_metric",
    "variants",
    "columns",
    "perturbations",
    "judges",
    "judge_rubric",
    "judge_scale",
    "judge_repeats",
}
_JUDGE_FIELDS = ("judges", "judge_rubric", "judge_scale", "judge_repeats")
_SUITE_FIELDS = {"scenarios", "toxicity"}


def _perturbations(raw: Any, where: str) -> tuple[str, ...]:
    """Validate perturbation specs now, so a typo fails at load and not mid-run."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list of perturbation specs")
    specs: list[str] = []
    for index, spec in enumerate(raw):
        if not isinstance(spec, str):
            raise ValueError(f"{where}[{index}]: expected a spec string like 'typos:prob=0.05'")
        try:
            normalized = get_perturbation(spec).spec
        except ValueError as exc:
            raise ValueError(f"{where}[{index}]: {exc}") from None
        if normalized in specs:
            raise ValueError(f"{where}[{index}]: duplicate perturbation {normalized!r}")
        specs.append(normalized)
    return tuple(specs)


def _toxicity(raw: Any, where: str) -> ToxicityConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with a 'classifier_dir' path or a 'judge'")
    unknown = sorted(set(raw) - {"classifier_dir", "toxic_label", "judge", "rubric"})
    if unknown:
        raise ValueError(f"{where}: unknown field(s): {', '.join(unknown)}")
    for name in ("classifier_dir", "toxic_label", "judge", "rubric"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ValueError(f"{where}.{name}: expected a string")
    if ("classifier_dir" in raw) == ("judge" in raw):
        raise ValueError(f"{where}: give either 'classifier_dir' or 'judge' (exactly one)")
    if "judge" in raw:
        if "toxic_label" in raw:
            raise ValueError(f"{where}.toxic_label: only a classifier has labels")
        rubric = raw.get("rubric")
        if rubric is not None:
            _prompt_uri(rubric, where + ".rubric")
        return ToxicityConfig(judge=_model_ref(raw["judge"], where + ".judge"), rubric=rubric)
    if "rubric" in raw:
        raise ValueError(f"{where}.rubric: only a judge reads a rubric")
    return ToxicityConfig(raw["classifier_dir"], raw.get("toxic_label"))


def _model_ref(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or ("@" not in raw and not raw.startswith("models:/")):
        raise ValueError(
            f"{where}: expected a model version reference like 'name@v2', 'name@champion' "
            f"or 'models:/name@champion', got {raw!r}"
        )
    return raw


def _prompt_uri(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.startswith("prompts:/"):
        raise ValueError(
            f"{where}: expected a prompt URI like 'prompts:/name@alias' or 'prompts:/name/3', "
            f"got {raw!r}"
        )
    return raw


def _judging(entry: dict[str, Any], adapter: AdapterSpec, where: str) -> JudgeConfig | None:
    """The entry's judge settings; all-or-nothing, and only for generated answers."""
    given = [name for name in _JUDGE_FIELDS if name in entry]
    if not given:
        return None
    if "judges" not in entry or "judge_rubric" not in entry:
        raise ValueError(f"{where}: {', '.join(given)} need both 'judges' and 'judge_rubric'")
    if adapter.method is not Method.GENERATION:
        raise ValueError(
            f"{where}.judges: judges read generated answers; the adapter method is "
            f"{adapter.method.value!r}, not 'generation'"
        )
    raw = entry["judges"]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}.judges: expected a non-empty list of model version references")
    judges = tuple(_model_ref(ref, f"{where}.judges[{i}]") for i, ref in enumerate(raw))
    if len(set(judges)) != len(judges):
        raise ValueError(f"{where}.judges: a judge is listed twice")
    rubric = _prompt_uri(entry["judge_rubric"], where + ".judge_rubric")
    scale = entry.get("judge_scale", [1, 5])
    if (
        not isinstance(scale, list)
        or len(scale) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in scale)
        or not scale[0] < scale[1]
    ):
        raise ValueError(f"{where}.judge_scale: expected [low, high] numbers with low < high")
    repeats = entry.get("judge_repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"{where}.judge_repeats: expected a positive integer")
    return JudgeConfig(judges, rubric, float(scale[0]), float(scale[1]), repeats)


def _variants(base: AdapterSpec, raw: Any, where: str) -> tuple[AdapterSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list of adapter overrides")
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


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate a parsed YAML document; every error names the file and key at fault."""
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), dict):
        raise ValueError(f"{source}: expected a mapping with a 'scenarios' mapping")
    unknown_top = sorted(set(data) - _SUITE_FIELDS)
    if unknown_top:
        raise ValueError(f"{source}: unknown top-level field(s): {', '.join(unknown_top)}")
    entries = {}
    for key, entry in data["scenarios"].items():
        where = f"{source}: scenarios.{key}"
        validate_key(str(key), f"scenario key in {source}")
        if not isinstance(entry, dict) or "scenario" not in entry:
            raise ValueError(f"{where}: expected a mapping with a 'scenario' name")
        unknown = sorted(set(entry) - _ENTRY_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s): {', '.join(unknown)}")
        max_instances = entry.get("max_instances")
        if max_instances is not None and (not isinstance(max_instances, int) or max_instances < 1):
            raise ValueError(f"{where}.max_instances: expected a positive integer")
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise ValueError(f"{where}.args: expected a mapping")
        args = dict(args)
        if "columns" in entry:
            if "columns" in args:
                raise ValueError(f"{where}: give columns once, not also in args")
            # Validated now, kept as plain data so args stay JSON-serializable.
            ColumnMapping.from_dict(entry["columns"], where + ".columns")
            args["columns"] = dict(entry["columns"])
        adapter = AdapterSpec.from_dict(dict(entry.get("adapter") or {}), where + ".adapter")
        entries[str(key)] = ScenarioConfig(
            key=str(key),
            scenario=entry["scenario"],
            args=args,
            adapter=adapter,
            variants=_variants(adapter, entry.get("variants"), where + ".variants"),
            max_instances=max_instances,
            eval_split=entry.get("eval_split", "test"),
            train_split=entry.get("train_split", "train"),
            primary_metric=entry.get("primary_metric", ""),
            perturbations=_perturbations(entry.get("perturbations"), where + ".perturbations"),
            judging=_judging(entry, adapter, where),
        )
    if not entries:
        raise ValueError(f"{source}: the suite has no scenarios")
    return Suite(
        entries, source=source, toxicity=_toxicity(data.get("toxicity"), source + ": toxicity")
    )


def load_suite(path: str | os.PathLike[str] | None = None) -> Suite:
    """Read a suite file; ``None`` means ``$ASSAY_SUITE`` or the shipped default suite."""
    path = path or os.environ.get("ASSAY_SUITE")
    if path:
        text = Path(path).read_text(encoding="utf-8")
        source = str(path)
    else:
        text = resources.files("assay.suites").joinpath(DEFAULT_SUITE).read_text("utf-8")
        source = f"assay/suites/{DEFAULT_SUITE}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    return parse_suite(data, source)
