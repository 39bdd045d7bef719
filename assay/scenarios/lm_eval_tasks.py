"""lm-evaluation-harness tasks as assay scenarios: names, groups, and lm-eval's task objects.

A suite entry ``scenario: lm_eval`` names a task or a group of lm-eval's catalogue (or of a
folder of the team's own task YAMLs, ``include_path``)::

      gsm8k:
        scenario: lm_eval
        args: {task: gsm8k, num_fewshot: 5, data_dir: data/datasets}
      mmlu:
        scenario: lm_eval
        args: {task: mmlu, num_fewshot: 5}       # a group: one suite entry per task

lm-eval is an optional extra (``pip install 'assay[lmeval]'``, which ``make install`` does);
it is imported only when a suite names an lm-eval task, and its absence is an error saying
which extra to install. Everything that decides what is asked and how it is scored is
lm-eval's own: the task object is built by lm-eval's ``TaskFactory`` from the task's YAML,
its few-shot sampler seeded as ``simple_evaluate`` seeds it (``fewshot_seed``, lm-eval's
default 1234), ``num_fewshot`` overridden as ``simple_evaluate`` overrides it (never a task
that sets 0), and its requests come from ``Task.build_all_requests``
(:mod:`assay.scenarios.lm_eval_requests`); scores from its filters and ``process_results``
(:mod:`assay.scoring.lm_eval_scores`).

Data comes from the task's hub dataset (at ``revision`` when given) or, offline, from local
files (:mod:`assay.scenarios.lm_eval_data`). Tasks that run model-written code (HumanEval,
MBPP: ``unsafe_code`` or a ``pass@k``/``code_eval`` metric) are refused before any request
runs unless the entry names assay's sandboxed ``code_execution`` scorer: lm-eval's own
in-process execution is never used.

lm-eval's index of its catalogue (about 15,000 names; ten seconds to build by parsing every
YAML file) is kept on disk per lm-eval version under ``$ASSAY_HOME/cache/lm_eval/``, so a
suite with lm-eval entries loads in about a second after the first time. It is built with
lm-eval's ``TaskIndex`` and the tasks with its ``TaskFactory``: internal modules of
lm-eval, which is why the extra pins its version.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from assay.core.digests import digest_json, write_text_atomic
from assay.core.nltk_data import use_bundled_nltk_data
from assay.scenarios.files import DataFileError
from assay.scenarios.lm_eval_chat import (
    ChatSettings,
    ChatTemplate,
    load_chat_template,
    resolve_settings,
    settings_digest,
)

LM_EVAL = "lm_eval"  # the scenario name in a suite
DISTRIBUTION = "lm_eval"
EXTRA_HINT = "pip install -e '.[lmeval]' (make install does)"
# lm-eval's default few-shot seed (``simple_evaluate(fewshot_random_seed=1234)``).
DEFAULT_FEWSHOT_SEED = 1234
# The global seeds simple_evaluate sets before it builds tasks (random_seed, numpy_random_seed).
DEFAULT_RANDOM_SEED = 0
DEFAULT_NUMPY_SEED = 1234
# lm-eval's HF model generates at most this many tokens when a task sets no max_gen_toks.
DEFAULT_MAX_GEN_TOKS = 256
CACHE_HOME_ENV = "ASSAY_HOME"
ALLOW_INCLUDE_ENV = "ASSAY_SUITE_ALLOW_LMEVAL_INCLUDE"
_CODE_FUNCTIONS = re.compile(r"pass_at|code_eval|execute|run_code", re.IGNORECASE)


class LmEvalUnavailable(ImportError):
    """lm-eval is not installed in this environment."""


class LmEvalTaskError(ValueError):
    """A task that cannot be used as asked: unknown, refused, or without reachable data."""


def import_lm_eval() -> ModuleType:
    """lm-eval, or :class:`LmEvalUnavailable` naming the extra that installs it."""
    try:
        import lm_eval
    except ImportError as exc:
        raise LmEvalUnavailable(
            f"scenario 'lm_eval' needs lm-evaluation-harness, which is not installed "
            f"({exc}): {EXTRA_HINT}"
        ) from None
    return lm_eval


def lm_eval_version() -> str:
    """The installed lm-eval version (``absent`` when it is not installed)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


# ------------------------------------------------------------------------------ suite args


class LmEvalArgs(BaseModel):
    """The ``args`` of a ``scenario: lm_eval`` suite entry, checked when the suite is read."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    task: str  # a task, group or tag of lm-eval's catalogue (or of include_path)
    num_fewshot: int | None = Field(default=None, ge=0)  # None: the task's own setting
    fewshot_seed: int = DEFAULT_FEWSHOT_SEED
    # Local data instead of the hub. data_files: split name → file (one task only);
    # data_dir: a folder laid out as <dataset path with / as __>/<config or default>/<split>.jsonl
    data_files: dict[str, str] | None = None
    data_dir: str | None = None
    revision: str | None = None  # the hub dataset's revision (a commit, for a pinned run)
    # Overrides of the task's generation_kwargs (max_gen_toks, until, ...), as lm-eval's
    # --gen_kwargs applies them.
    gen_kwargs: dict[str, Any] | None = None
    include_path: str | None = None  # a folder of the team's own task YAMLs
    tasks: list[str] | None = None  # of a group: only these of its tasks
    # lm-eval's chat options (assay.scenarios.lm_eval_chat): the template of the tokenizer
    # of chat_template_from (true, or one of its named templates), few-shot examples as
    # turns (default: on with a template, as lm-eval's CLI), a system instruction.
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool | None = None
    system_instruction: str | None = None
    chat_template_from: str | None = None


@dataclass(frozen=True)
class LmEvalTask:
    """One lm-eval task as a suite entry runs it: the leaf task and how it is set up.

    Hashable, so a process builds each task object once (:func:`load_task`).
    """

    task: str
    num_fewshot: int | None = None
    fewshot_seed: int = DEFAULT_FEWSHOT_SEED
    data_files: tuple[tuple[str, str], ...] = ()
    data_dir: str | None = None
    revision: str | None = None
    gen_kwargs: str = ""  # JSON of the overrides ("" for none)
    include_path: str | None = None
    group: str = ""  # the group it was expanded from ("" when named directly)
    group_overrides: str = ""  # JSON of the task settings its group passes on
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool = False
    system_instruction: str | None = None
    chat_template_from: str | None = None

    @property
    def chat(self) -> ChatSettings:
        """lm-eval's chat options of this task (resolved when the suite was read)."""
        return ChatSettings(
            self.apply_chat_template,
            self.fewshot_as_multiturn,
            self.system_instruction,
            self.chat_template_from,
        )

    @property
    def gen_overrides(self) -> dict[str, Any]:
        return json.loads(self.gen_kwargs) if self.gen_kwargs else {}

    @property
    def overrides(self) -> dict[str, Any]:
        return json.loads(self.group_overrides) if self.group_overrides else {}


# ------------------------------------------------------------------------------ the index


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_HOME_ENV, ".assay")) / "cache" / "lm_eval"


def _index_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    from lm_eval.tasks._index import Entry, Kind

    return {
        name: Entry(
            name=name,
            kind=Kind[kind],
            yaml_path=Path(path) if path else None,
            tags=set(tags),
        )
        for name, (kind, path, tags) in data.items()
    }


def _index_to_json(index: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: [e.kind.name, str(e.yaml_path) if e.yaml_path else None, sorted(e.tags)]
        for name, e in index.items()
    }


@functools.cache
def task_index(include_path: str | None = None) -> dict[str, Any]:
    """lm-eval's index of task, group and tag names (lm-eval's ``TaskIndex``), with the
    YAMLs under ``include_path`` added over the catalogue's; cached on disk per version."""
    lm_eval = import_lm_eval()
    from lm_eval.tasks._index import TaskIndex

    root = Path(lm_eval.__file__).resolve().parent / "tasks"
    key = hashlib.sha256(f"{lm_eval_version()}\0{root}".encode()).hexdigest()[:16]
    cached = _cache_dir() / f"index-{key}.json"
    index: dict[str, Any] | None = None
    if cached.is_file():
        try:
            index = _index_from_json(json.loads(cached.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError):
            index = None  # a damaged cache file is rebuilt
    if index is None:
        index = TaskIndex.build([root])
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cached, json.dumps(_index_to_json(index)))
    if include_path:
        folder = Path(include_path)
        if not folder.is_dir():
            raise LmEvalTaskError(f"lm_eval include_path {include_path!r} is not a folder")
        index = {**index, **TaskIndex.build([folder])}
    return index


def nearest_names(name: str, include_path: str | None = None, n: int = 5) -> list[str]:
    """The known task, group and tag names closest to ``name`` (difflib)."""
    names = list(task_index(include_path))
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    if len(close) < n:  # names that contain it, such as mmlu_anatomy for "anatomy"
        close += sorted(x for x in names if name.lower() in x.lower() and x not in close)[
            : n - len(close)
        ]
    return close


def _entry(name: str, include_path: str | None) -> Any:
    entry = task_index(include_path).get(name)
    if entry is None:
        near = nearest_names(name, include_path)
        hint = f"; nearest: {', '.join(near)}" if near else ""
        raise LmEvalTaskError(f"lm-eval has no task, group or tag named {name!r}{hint}")
    return entry


def raw_config(name: str, include_path: str | None = None) -> dict[str, Any]:
    """A task's or group's YAML as lm-eval reads it, includes merged, functions unresolved
    (their dotted paths as strings), without building the task or reading its data."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = _entry(name, include_path)
    if entry.yaml_path is None:
        return {}
    return load_yaml(entry.yaml_path, resolve_func=False, recursive=True)


# ------------------------------------------------------------------------------ groups


def expand(args: LmEvalArgs, where: str = "args") -> list[LmEvalTask]:
    """The leaf tasks ``args.task`` stands for, in lm-eval's order: itself for a task, its
    tasks for a group or a tag (recursively), each with the settings the group passes on.
    ``where`` names the entry's args in errors about the chat options."""
    chat = resolve_settings(
        args.apply_chat_template,
        args.fewshot_as_multiturn,
        args.system_instruction,
        args.chat_template_from,
        where,
    )
    import_lm_eval()
    if args.include_path is not None:
        task_index(args.include_path)  # checks the folder
    leaves: list[tuple[str, str, dict[str, Any]]] = []
    _collect(args.task, args.task, {}, args.include_path, leaves, depth=0)
    if args.tasks is not None:
        known = [name for name, _, _ in leaves]
        unknown = [t for t in args.tasks if t not in known]
        if unknown:
            raise LmEvalTaskError(
                f"lm-eval group {args.task!r} has no task(s) {', '.join(map(repr, unknown))}; "
                f"its tasks: {', '.join(known[:20])}{' …' if len(known) > 20 else ''}"
            )
        leaves = [leaf for leaf in leaves if leaf[0] in args.tasks]
    seen: set[str] = set()
    out = []
    for name, _, overrides in leaves:
        if name in seen:
            continue  # a task reached through two subgroups runs once, as in lm-eval
        seen.add(name)
        out.append(
            LmEvalTask(
                task=name,
                num_fewshot=args.num_fewshot,
                fewshot_seed=args.fewshot_seed,
                data_files=tuple(sorted((args.data_files or {}).items())),
                data_dir=args.data_dir,
                revision=args.revision,
                gen_kwargs=json.dumps(args.gen_kwargs, sort_keys=True) if args.gen_kwargs else "",
                include_path=args.include_path,
                group="" if name == args.task else args.task,
                group_overrides=json.dumps(overrides, sort_keys=True) if overrides else "",
                apply_chat_template=chat.apply_chat_template,
                fewshot_as_multiturn=chat.fewshot_as_multiturn,
                system_instruction=chat.system_instruction,
                chat_template_from=chat.chat_template_from,
            )
        )
    if len(out) > 1 and args.data_files:
        raise LmEvalTaskError(
            f"lm-eval {args.task!r} is a group of {len(out)} tasks with different datasets: "
            "data_files names one task's files; give data_dir (a folder laid out as "
            "<dataset path with / as __>/<config or default>/<split>.jsonl) instead"
        )
    return out


def _collect(
    name: str,
    group: str,
    overrides: dict[str, Any],
    include_path: str | None,
    out: list[tuple[str, str, dict[str, Any]]],
    depth: int,
) -> None:
    from lm_eval.config.group import GroupConfig
    from lm_eval.tasks._index import Kind

    if depth > 16:
        raise LmEvalTaskError(f"lm-eval group {group!r}: groups nested deeper than 16 levels")
    entry = _entry(name, include_path)
    if entry.kind is Kind.TAG:
        for member in sorted(entry.tags):
            _collect(member, group, overrides, include_path, out, depth + 1)
        return
    if entry.kind is not Kind.GROUP:
        out.append((name, group, overrides))
        return
    group_fields = set(GroupConfig.__dataclass_fields__)
    config = raw_config(name, include_path)
    passed = {k: v for k, v in config.items() if k not in group_fields}
    merged = {**passed, **overrides}  # the caller's settings win, as in lm-eval's factory
    members = config.get("task") or []
    for member in members if isinstance(members, list) else [members]:
        if isinstance(member, str):
            _collect(member, group, merged, include_path, out, depth + 1)
        elif isinstance(member, dict) and isinstance(member.get("task"), str):
            own = {k: v for k, v in member.items() if k != "task"}
            if member["task"] not in task_index(include_path):
                raise LmEvalTaskError(
                    f"lm-eval group {name!r} defines task {member['task']!r} inline; "
                    "inline tasks are not supported: name a task of the catalogue"
                )
            _collect(member["task"], group, {**merged, **own}, include_path, out, depth + 1)
        elif isinstance(member, dict) and isinstance(member.get("group"), str):
            own = {k: v for k, v in member.items() if k != "group"}
            if member["group"] not in task_index(include_path):
                raise LmEvalTaskError(
                    f"lm-eval group {name!r} defines group {member['group']!r} inline; "
                    "inline groups are not supported: name its tasks"
                )
            _collect(member["group"], group, {**merged, **own}, include_path, out, depth + 1)
        else:
            raise LmEvalTaskError(f"lm-eval group {name!r}: member {member!r} is not understood")
    for value in merged.values():
        try:
            json.dumps(value)
        except TypeError:
            raise LmEvalTaskError(
                f"lm-eval group {name!r} passes a setting that is not plain data to its tasks; "
                "name its tasks one by one"
            ) from None


# ------------------------------------------------------------------------------ metrics

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
# lm-eval's metrics of a task without a metric_list (DEFAULT_METRIC_REGISTRY), first first.
_DEFAULT_METRICS = {
    "multiple_choice": "acc",
    "loglikelihood": "perplexity",
    "generate_until": "exact_match",
    "loglikelihood_rolling": "word_perplexity",
}


def metric_name(metric: str, filter_key: str) -> str:
    """assay's name of lm-eval's ``<metric>,<filter>``: ``<metric>`` for the ``none``
    filter, else ``<metric>.<filter>`` (names keep to letters, digits, ``_ . -``)."""
    name = metric if filter_key == "none" else f"{metric}.{filter_key}"
    return _NAME_CHARS.sub("_", name)


def primary_metric_of(spec: LmEvalTask) -> str:
    """A task's headline metric: the first of its metric_list under its first filter."""
    config = {**raw_config(spec.task, spec.include_path), **spec.overrides}
    metrics = config.get("metric_list") or []
    first = metrics[0].get("metric") if metrics and isinstance(metrics[0], dict) else None
    if first is None:
        first = _DEFAULT_METRICS.get(str(config.get("output_type")), "acc")
    first = str(first).rsplit("/", 1)[-1].rsplit(".", 1)[-1]  # a function: its name
    filters = config.get("filter_list") or []
    first_filter = filters[0].get("name", "none") if filters else "none"
    return metric_name(first, str(first_filter))


# ------------------------------------------------------------------------------ refusals


def code_execution_reason(config: Mapping[str, Any]) -> str:
    """Why a task runs model-written code ("" when it does not): lm-eval's ``unsafe_code``
    flag, or a metric, filter or ``process_results`` of the pass@k / code_eval kind."""
    if config.get("unsafe_code"):
        return "it is marked unsafe_code (it executes the model's programs)"
    for metric in config.get("metric_list") or []:
        name = str(metric.get("metric", "")) if isinstance(metric, dict) else str(metric)
        if _CODE_FUNCTIONS.search(name.rsplit("/", 1)[-1]):
            return f"its metric {name.rsplit('/', 1)[-1]!r} executes the model's programs"
    functions = [str(config.get("process_results") or "")]
    for filt in config.get("filter_list") or []:
        for step in filt.get("filter", []) if isinstance(filt, dict) else []:
            if isinstance(step, dict):
                functions.append(str(step.get("filter_fn") or step.get("function") or ""))
    for name in functions:
        if name and _CODE_FUNCTIONS.search(name.rsplit("/", 1)[-1]):
            return f"its {name.rsplit('/', 1)[-1]!r} executes the model's programs"
    return ""


def check_runnable(spec: LmEvalTask, scorer: str | None, where: str) -> None:
    """Refuse, before anything is loaded or asked, a task assay will not run: one that
    executes model-written code unless the entry's scorer is the sandboxed
    ``code_execution``, and multimodal tasks (assay sends text only)."""
    config = {**raw_config(spec.task, spec.include_path), **spec.overrides}
    reason = code_execution_reason(config)
    if reason and scorer != "code_execution":
        raise LmEvalTaskError(
            f"{where}: lm-eval task {spec.task!r} is refused: {reason}. assay never runs "
            "lm-eval's in-process code execution; name the sandboxed scorer instead "
            "(scorer: code_execution, see assay.scoring.code_execution)"
        )
    if config.get("doc_to_image") or config.get("doc_to_audio"):
        raise LmEvalTaskError(
            f"{where}: lm-eval task {spec.task!r} is multimodal; assay sends text only"
        )


# ------------------------------------------------------------------------------ task objects


@dataclass
class LoadedTask:
    """An lm-eval task object built as ``simple_evaluate`` builds it, with its identity."""

    spec: LmEvalTask
    task: Any  # lm_eval.api.task.Task
    config_digest: str  # the task's config, its functions' sources included
    data: Any  # lm_eval_data.TaskData: where the documents came from and their digest
    random_state: tuple[Any, Any] | None = None  # the global generators after the build
    version: str = field(default_factory=lm_eval_version)
    chat_template: ChatTemplate | None = None  # the template of spec.chat_template_from

    @property
    def revision(self) -> str:
        """The scenario's revision: lm-eval's version, the task config and the data, and
        the chat options' digest (the template's text) when they change the prompts."""
        chat = self.spec.chat
        prompts = (
            f";chat={settings_digest(chat, self.chat_template)}" if chat.changes_prompts else ""
        )
        return (
            f"lm_eval=={self.version};task={self.spec.task};config={self.config_digest};"
            f"data={self.data.revision}{prompts}"
        )

    @property
    def output_type(self) -> str:
        return str(self.task.OUTPUT_TYPE or self.task.config.output_type)


def load_task(spec: LmEvalTask) -> LoadedTask:
    """The task object of ``spec``, built once per process; run its code inside
    :func:`lm_eval_globals`."""
    return _load_task(spec)


@functools.cache
def _load_task(spec: LmEvalTask) -> LoadedTask:
    from lm_eval.tasks._factory import TaskFactory

    from assay.scenarios.lm_eval_data import dataset_overrides, hub_error

    import_lm_eval()
    chat = spec.chat
    template = None
    if chat.chat:
        where = f"lm-eval task {spec.task!r}: args.apply_chat_template"
        if not chat.chat_template_from:
            raise LmEvalTaskError(f"{where}: no chat_template_from names the tokenizer")
        template = load_chat_template(chat.chat_template_from, chat.template_name, where)
    # IFEval's checks (and any task on nltk's Punkt) read the tokenizer data assay ships.
    use_bundled_nltk_data()
    index = task_index(spec.include_path)
    entry = _entry(spec.task, spec.include_path)
    config = {**raw_config(spec.task, spec.include_path), **spec.overrides}
    data_overrides, data = dataset_overrides(spec, config)
    overrides = {"task": spec.task, **spec.overrides, **data_overrides}
    factory = TaskFactory(meta={})
    if code_execution_reason(config):
        # Scored by assay's sandboxed scorer: lm-eval's scoring code is never imported (its
        # HumanEval module runs a program in process when imported).
        entry = _without_code_execution(spec, config)
    try:
        with _global_seeds() as after:
            task = factory.build(entry, overrides=overrides, registry=dict(index))
    except DataFileError:
        raise
    except Exception as exc:
        if not data.local:
            hub_failed = hub_error(spec, config, exc)
            if hub_failed is not None:
                raise hub_failed from None
        raise LmEvalTaskError(
            f"lm-eval task {spec.task!r} could not be built: {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(task, list) or not hasattr(task, "build_all_requests"):
        raise LmEvalTaskError(f"lm-eval {spec.task!r} did not build one task")
    _configure(task, spec)
    data = data.with_documents(task)
    return LoadedTask(spec, task, config_digest(task), data, after.state, chat_template=template)


class _SeedState:
    state: tuple[Any, Any] | None = None


@contextlib.contextmanager
def _global_seeds(state: tuple[Any, Any] | None = None) -> Iterator[_SeedState]:
    """Python's and numpy's global generators as ``simple_evaluate`` leaves them (seeds 0
    and 1234, or ``state``) while lm-eval code runs, since some tasks shuffle with them (GPQA's
    ``process_docs``); the caller's state is restored after, and the state lm-eval left is
    kept in the yielded object."""
    import numpy as np

    saved = random.getstate(), np.random.get_state()
    holder = _SeedState()
    try:
        if state is None:
            random.seed(DEFAULT_RANDOM_SEED)
            np.random.seed(DEFAULT_NUMPY_SEED)
        else:
            random.setstate(state[0])
            np.random.set_state(state[1])
        yield holder
        holder.state = random.getstate(), np.random.get_state()
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


@contextlib.contextmanager
def lm_eval_globals(loaded: LoadedTask) -> Iterator[None]:
    """Run lm-eval code of a built task with the global generators as they were right after
    it was built (so requests built twice draw the same), and the few-shot sampler reset."""
    fresh(loaded)
    with _global_seeds(loaded.random_state):
        yield


def _without_code_execution(spec: LmEvalTask, config: Mapping[str, Any]) -> Any:
    """A code task's entry with its metrics and filters (lm-eval's in-process execution)
    left out, built from its YAML with no function of the task's folder imported."""
    from lm_eval.tasks._index import Entry, Kind

    folder = str(Path(_entry(spec.task, spec.include_path).yaml_path).parent) + os.sep
    cfg = {k: v for k, v in config.items() if k not in ("metric_list", "filter_list")}
    cfg["metric_list"] = [{"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}]

    def functions(value: Any, at: str) -> list[str]:
        if isinstance(value, str) and value.startswith(folder):
            return [at]
        if isinstance(value, Mapping):
            return [f for k, v in value.items() for f in functions(v, f"{at}.{k}")]
        if isinstance(value, list):
            return [f for i, v in enumerate(value) for f in functions(v, f"{at}[{i}]")]
        return []

    used = [f for key, value in cfg.items() for f in functions(value, key)]
    if used:
        raise LmEvalTaskError(
            f"lm-eval task {spec.task!r}: {', '.join(used)} is a function of the task's own "
            "module, which also holds lm-eval's code execution; assay does not import it"
        )
    return Entry(name=spec.task, kind=Kind.TASK, yaml_path=None, cfg=cfg)


def _configure(task: Any, spec: LmEvalTask) -> None:
    """``simple_evaluate``'s settings: generation overrides, few-shot count and seed."""
    if task.get_config("output_type") == "generate_until" and spec.gen_overrides:
        task.set_config(key="generation_kwargs", value=dict(spec.gen_overrides), update=True)
    if spec.num_fewshot is not None:
        if task.get_config("num_fewshot") != 0:  # a task that sets 0 keeps it, as in lm-eval
            task.set_config(key="num_fewshot", value=spec.num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)


def fresh(loaded: LoadedTask) -> LoadedTask:
    """Reset the few-shot sampler to its seed, so requests built twice are the same."""
    loaded.task.set_fewshot_seed(seed=loaded.spec.fewshot_seed)
    return loaded


def _plain(value: Any) -> Any:
    """A config value as JSON data; functions as their name and their module's source."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if callable(value):
        name = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
        try:
            source = inspect.getsourcefile(value)
            text = Path(source).read_bytes() if source else b""
        except (TypeError, OSError):
            text = b""
        return {"function": name, "source_sha256": hashlib.sha256(text).hexdigest()}
    return repr(value)


def config_digest(task: Any) -> str:
    """Digest of the task's config as lm-eval resolved it (16 hex digits): its YAML fields,
    the sources of the functions it names, the settings applied; not where the data is."""
    config = dict(task.dump_config())
    config.pop("custom_dataset", None)
    config.pop("dataset_kwargs", None)  # where the data is; the data digest covers it
    metadata = dict(config.get("metadata") or {})
    metadata.pop("config_source", None)
    config["metadata"] = metadata
    config["_class"] = f"{type(task).__module__}.{type(task).__qualname__}"
    return digest_json(_plain(config))[:16]
