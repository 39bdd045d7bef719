"""HELM scenarios as assay scenarios, and HELM's own prompts for parity checks.

HELM (``crfm-helm``) pins packages assay cannot share (pandas 2, an older fsspec, its own
torch), so it lives in a virtual environment of its own (``make helm-venv`` builds one in
``.peers/helm-venv``).
Every HELM call therefore runs in a child interpreter: the one named by ``venv`` or
``$ASSAY_HELM_VENV``, else this one when ``helm`` imports here. The child gets a JSON job and
writes a JSON answer; HELM's global state (it seeds ``random`` and ``numpy`` globally,
registers model configs) never touches this process.

``helm_scenario`` builds a HELM scenario by its run-spec name (``run_spec:
synthetic_reasoning``, ``args: {mode: pattern_match}``: a ``helm-run`` run entry's name and
arguments) or by its class path (``scenario_class``, ``args`` for its constructor) and
converts its instances; ids are HELM runner's (``id0``, ``id1``, … in scenario
order) when the scenario sets none, so they match ``helm-run``'s output. Downloads go under
``output_dir``, ``$ASSAY_HELM_CACHE`` or ``.assay/helm``, laid out as HELM's
``benchmark_output/scenarios/<name>``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from assay.adapters.helm_prompts import from_helm_adapter_spec
from assay.adapters.spec import AdapterSpec
from assay.core.records import Instance, Reference
from assay.scenarios.base import Scenario, ScenarioData, register_scenario

VENV_ENV = "ASSAY_HELM_VENV"
CACHE_ENV = "ASSAY_HELM_CACHE"
DEFAULT_CACHE = Path(".assay") / "helm"
CORRECT_TAG = "correct"  # HELM's tag of a gold reference


class HelmUnavailableError(ImportError):
    """No interpreter with HELM: neither ``helm`` importable here nor ``$ASSAY_HELM_VENV``."""


class HelmError(RuntimeError):
    """HELM itself failed on a job; the message carries the end of its error output."""


@dataclasses.dataclass(frozen=True, slots=True)
class HelmRuntime:
    """The Python interpreter that runs HELM."""

    python: str


def find_helm(venv: str | os.PathLike[str] | None = None) -> HelmRuntime:
    """The interpreter to run HELM with: ``venv``, then ``$ASSAY_HELM_VENV``, then this one."""
    for where, path in (("venv", venv), (VENV_ENV, os.environ.get(VENV_ENV))):
        if path:
            python = Path(path) / "bin" / "python"
            if not python.exists():
                raise HelmUnavailableError(f"{where}={path}: no Python interpreter at {python}")
            return HelmRuntime(str(python))
    if importlib.util.find_spec("helm") is not None:
        return HelmRuntime(sys.executable)
    raise HelmUnavailableError(
        f"HELM is not installed: point {VENV_ENV} at a virtual environment that has "
        "crfm-helm (`make helm-venv` builds one in .peers/helm-venv)"
    )


# ---------------------------------------------------------------------------------------------
# Instances: HELM's dict form (dataclasses.asdict of helm.benchmark.scenarios.scenario.Instance,
# as in its input_instances.json and scenario_state.json) to assay's and back.


def _text(value: Any, what: str, label: str) -> str:
    if not isinstance(value, Mapping):
        raise ValueError(f"HELM instance {label}: {what} is not an object with a 'text' field")
    text = value.get("text")
    if not isinstance(text, str) or (
        not text and (value.get("multimedia_content") or value.get("messages"))
    ):
        raise ValueError(
            f"HELM instance {label}: {what} has no text (multimodal and chat inputs are not "
            "supported)"
        )
    return text


def instance_from_helm(item: Mapping[str, Any] | Any, position: int = 0) -> Instance:
    """One HELM ``Instance`` (the object or its dict form) as an assay ``Instance``.

    A reference is correct when it carries HELM's ``correct`` tag. A missing id becomes
    ``id<position>``, HELM runner's id for the instance at that position.
    """
    data = dataclasses.asdict(item) if dataclasses.is_dataclass(item) else item
    if not isinstance(data, Mapping):
        raise ValueError(f"HELM instance #{position}: expected an Instance or a mapping")
    label = repr(data.get("id") or f"#{position}")
    references = []
    for number, ref in enumerate(data.get("references") or []):
        if not isinstance(ref, Mapping):
            raise ValueError(f"HELM instance {label}: reference {number} is not an object")
        text = _text(ref.get("output"), f"reference {number} output", label)
        references.append(Reference(text, CORRECT_TAG in (ref.get("tags") or [])))
    split = data.get("split")
    if not isinstance(split, str) or not split:
        raise ValueError(f"HELM instance {label}: field 'split' is missing")
    return Instance(
        id=str(data.get("id") or f"id{position}"),
        input=_text(data.get("input"), "input", label),
        references=tuple(references),
        split=split,
        sub_split=data.get("sub_split") or "",
    )


def instances_from_helm(items: Sequence[Mapping[str, Any] | Any]) -> list[Instance]:
    """A scenario's HELM instances, in order, with HELM runner's ids where any id is missing.

    HELM's runner renumbers every instance ``id<i>`` as soon as one has no id; so does this.
    """
    converted = [instance_from_helm(item, i) for i, item in enumerate(items)]
    if any(not _raw_id(item) for item in items):
        converted = [dataclasses.replace(c, id=f"id{i}") for i, c in enumerate(converted)]
    seen: set[str] = set()
    for instance in converted:
        if instance.id in seen:
            raise ValueError(f"HELM instances: id {instance.id!r} occurs more than once")
        seen.add(instance.id)
    return converted


def _raw_id(item: Mapping[str, Any] | Any) -> Any:
    return item.get("id") if isinstance(item, Mapping) else getattr(item, "id", None)


def instance_to_helm(instance: Instance) -> dict[str, Any]:
    """The dict form of the HELM ``Instance`` that holds ``instance``."""
    return {
        "input": {"text": instance.input},
        "references": [
            {"output": {"text": ref.text}, "tags": [CORRECT_TAG] if ref.correct else []}
            for ref in instance.references
        ],
        "split": instance.split,
        "sub_split": instance.sub_split or None,
        "id": instance.id,
    }


# ---------------------------------------------------------------------------------------------
# The HELM side: a program the HELM interpreter runs with a job file and an answer path. It
# needs only HELM and the standard library (dacite comes with HELM).

_HELM_PROGRAM = r"""
import dataclasses, json, os, sys, tempfile
from importlib.metadata import version


def instances(job):
    from helm.benchmark.scenarios.scenario import ScenarioSpec, create_scenario

    name, args, adapter_spec = job["run_spec"], job["args"], None
    if job["scenario_class"]:
        spec = ScenarioSpec(class_name=job["scenario_class"], args=args)
    else:
        from helm.benchmark.run_spec import get_run_spec_function

        function = get_run_spec_function(name)
        if function is None:
            raise SystemExit(f"HELM has no run spec named {name!r}")
        run_spec = function(**args)
        spec, adapter_spec = run_spec.scenario_spec, dataclasses.asdict(run_spec.adapter_spec)
    scenario = create_scenario(spec)
    path = os.path.join(job["output_dir"], "scenarios", scenario.name)
    os.makedirs(path, exist_ok=True)
    return {
        "scenario_class": spec.class_name,
        "scenario_args": spec.args,
        "adapter_spec": adapter_spec,
        "instances": [dataclasses.asdict(i) for i in scenario.get_instances(path)],
    }


def prompts(job):
    import dacite
    from helm.benchmark.adaptation.adapter_spec import AdapterSpec
    from helm.benchmark.adaptation.adapters.adapter_factory import AdapterFactory
    from helm.benchmark.config_registry import register_builtin_configs_from_helm_package
    from helm.benchmark.scenarios.scenario import Instance
    from helm.benchmark.window_services.tokenizer_service import TokenizerService
    from helm.common.cache_backend_config import BlackHoleCacheBackendConfig
    from helm.common.local_context import LocalContext

    register_builtin_configs_from_helm_package()
    answers = []
    with tempfile.TemporaryDirectory() as base:
        context = LocalContext(base_path=base, cache_backend_config=BlackHoleCacheBackendConfig())
        service = TokenizerService(context)
        for case in job["cases"]:
            spec = dacite.from_dict(AdapterSpec, case["adapter_spec"])
            if not spec.model_deployment:
                # HELM's built-in offline test model: a window service without downloads.
                spec = dataclasses.replace(spec, model_deployment="simple/model1")
            items = [dacite.from_dict(Instance, i) for i in case["instances"]]
            states = AdapterFactory.get_adapter(spec, service).adapt(items, parallelism=1)
            answers.append([
                {
                    "instance_id": s.instance.id,
                    "trial": s.train_trial_index,
                    "prompt": s.request.prompt,
                    "num_train_instances": s.num_train_instances,
                    "truncated": s.prompt_truncated,
                }
                for s in states
            ])
    return {"prompts": answers}


with open(sys.argv[1]) as handle:
    job = json.load(handle)
answer = {"helm_version": version("crfm-helm")}
answer.update({"instances": instances, "prompts": prompts}[job["command"]](job))
with open(sys.argv[2] + ".part", "w") as handle:
    json.dump(answer, handle)
os.replace(sys.argv[2] + ".part", sys.argv[2])
"""


def _run_helm(
    runtime: HelmRuntime, job: dict[str, Any], cwd: Path | None, timeout_s: float | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="assay-helm-") as tmp:
        job_path, answer_path = Path(tmp) / "job.json", Path(tmp) / "answer.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        argv = [runtime.python, "-c", _HELM_PROGRAM, str(job_path), str(answer_path)]
        try:
            done = subprocess.run(
                argv, cwd=cwd or tmp, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            raise HelmError(
                f"HELM ({runtime.python}) {job['command']}: over {timeout_s} s"
            ) from None
        if done.returncode != 0 or not answer_path.exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
            raise HelmError(
                f"HELM ({runtime.python}) {job['command']} failed (exit {done.returncode}):\n{tail}"
            )
        return json.loads(answer_path.read_text(encoding="utf-8"))


def _json_args(args: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ValueError(f"{where}: expected a mapping of argument names to values")
    for key, value in args.items():
        if not isinstance(key, str):
            raise ValueError(f"{where}: argument name {key!r} is not a string")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}.{key}: {value!r} is not a JSON value") from None
    return dict(args)


def cache_dir(output_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where HELM scenarios download to: ``output_dir``, ``$ASSAY_HELM_CACHE``, ``.assay/helm``."""
    return Path(output_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).resolve()


@dataclasses.dataclass(frozen=True, slots=True)
class HelmScenarioData:
    """A HELM scenario's instances with what identifies them, and its run spec's prompt."""

    data: ScenarioData
    helm_version: str
    scenario_class: str
    scenario_args: dict[str, Any]
    # The run spec's HELM AdapterSpec (dict form); None when built from a class path.
    helm_adapter_spec: dict[str, Any] | None

    def adapter_spec(self, variant: str = "helm") -> AdapterSpec:
        """The assay spec that renders this run spec's HELM prompts (see helm_prompts)."""
        if self.helm_adapter_spec is None:
            raise ValueError(
                f"HELM scenario {self.scenario_class}: built from a class path, so it has no "
                "run spec adapter; name a run spec instead"
            )
        return from_helm_adapter_spec(self.helm_adapter_spec, variant)


def load_helm_scenario(
    run_spec: str | None = None,
    args: Mapping[str, Any] | None = None,
    scenario_class: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    venv: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
) -> HelmScenarioData:
    """Build a HELM scenario in the HELM interpreter and convert its instances.

    Name exactly one of ``run_spec`` (``synthetic_reasoning``; ``args`` are the run entry's
    arguments, e.g. ``{"mode": "pattern_match"}``) and ``scenario_class``
    (``helm.benchmark.scenarios.boolq_scenario.BoolQScenario``; ``args`` go to its
    constructor). The revision is the HELM version, which also fixes generated data.
    """
    if (run_spec is None) == (scenario_class is None):
        raise ValueError("helm_scenario: name exactly one of run_spec and scenario_class")
    for where, value in (("run_spec", run_spec), ("scenario_class", scenario_class)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"helm_scenario.{where}: expected a non-empty string")
    job = {
        "command": "instances",
        "run_spec": run_spec,
        "scenario_class": scenario_class,
        "args": _json_args(args, "helm_scenario.args"),
        "output_dir": str(cache_dir(output_dir)),
    }
    runtime = find_helm(venv)
    Path(job["output_dir"]).mkdir(parents=True, exist_ok=True)
    answer = _run_helm(runtime, job, Path(job["output_dir"]), timeout_s)
    instances = instances_from_helm(answer["instances"])
    version = answer["helm_version"]
    return HelmScenarioData(
        data=ScenarioData(instances, revision=f"crfm-helm=={version}"),
        helm_version=version,
        scenario_class=answer["scenario_class"],
        scenario_args=answer["scenario_args"],
        helm_adapter_spec=answer["adapter_spec"],
    )


@register_scenario("helm_scenario")
class HelmScenario(Scenario):
    """Any HELM scenario, by run-spec name or class path, with its arguments."""

    def __init__(
        self,
        run_spec: str | None = None,
        args: Mapping[str, Any] | None = None,
        scenario_class: str | None = None,
        output_dir: str | None = None,
        venv: str | None = None,
    ) -> None:
        self.run_spec = run_spec
        self.args = _json_args(args, "helm_scenario.args")
        self.scenario_class = scenario_class
        self.output_dir = output_dir
        self.venv = venv

    def load(self) -> ScenarioData:
        loaded = load_helm_scenario(
            self.run_spec, self.args, self.scenario_class, self.output_dir, self.venv
        )
        return loaded.data


# ---------------------------------------------------------------------------------------------
# HELM's own prompts, for checking that assay renders the same text.


@dataclasses.dataclass(frozen=True, slots=True)
class HelmPrompt:
    """One prompt HELM's adapter rendered."""

    instance_id: str
    trial: int
    prompt: str
    num_train_instances: int
    truncated: bool


def helm_prompts(
    cases: Sequence[tuple[Mapping[str, Any], Sequence[Instance]]],
    venv: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
) -> list[list[HelmPrompt]]:
    """HELM's prompts for each (HELM adapter spec dict, instances) case, in HELM's order.

    HELM's ``AdapterFactory`` adapter runs on the instances as given (train split as the
    few-shot pool; valid and test as eval instances), with HELM's offline ``simple/model1``
    deployment for fitting when the spec names none. All cases run in one HELM process.
    """
    job = {
        "command": "prompts",
        "cases": [
            {"adapter_spec": dict(spec), "instances": [instance_to_helm(i) for i in instances]}
            for spec, instances in cases
        ],
    }
    answer = _run_helm(find_helm(venv), job, None, timeout_s)
    return [[HelmPrompt(**row) for row in rows] for rows in answer["prompts"]]
