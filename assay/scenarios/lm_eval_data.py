"""Where an lm-eval task's documents come from: its hub dataset, or local files.

With a hub, the task reads its dataset as lm-eval does (``datasets.load_dataset`` with the
task's ``dataset_path``, ``dataset_name`` and ``dataset_kwargs``), at ``revision`` when the
entry gives one, else at the commit its branch is at when the task is built
(:func:`hub_commit`). Without one, the entry points the task at local files in the hub's
schema (the columns the task's YAML and functions read):

- ``data_files: {test: data/gsm8k/test.jsonl, train: data/gsm8k/train.jsonl}``: split → file
  (JSONL, CSV, Parquet or JSON), for one task;
- ``data_dir: data/datasets``: a folder laid out as
  ``<dataset path with / as __>/<config or default>/<split>.jsonl``
  (``openai__gsm8k/main/test.jsonl``), for any task or a whole group.

Files are read by :func:`assay.scenarios.files.iter_rows`, so a malformed file fails with its
name and row, and handed to the task as lm-eval's ``custom_dataset`` (a
``datasets.DatasetDict``), so everything after reading (``process_docs``, the few-shot
sampler) is lm-eval's. A 0-shot task whose few-shot split has no file reads the evaluation
split there instead (it never draws from it), and so does a task whose few-shot examples are
fixed in its config (``fewshot_config.samples``: MATH-hard) for its training split. The
data's revision is the SHA-256 of each file read, or the hub dataset's revision and
fingerprint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from assay.scenarios.download import hub_endpoint
from assay.scenarios.files import DataFileError, iter_rows
from assay.scenarios.lm_eval_tasks import LmEvalTask, LmEvalTaskError

OFFLINE_ENVS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")
_FORMATS = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class TaskData:
    """The documents' source: local files (split → path) or the hub."""

    dataset: str  # dataset_path[/dataset_name] as the task names it
    files: dict[str, str] = field(default_factory=dict)
    file_sha256: dict[str, str] = field(default_factory=dict)
    hub_revision: str = ""
    fingerprint: str = ""

    @property
    def local(self) -> bool:
        return bool(self.files)

    @property
    def revision(self) -> str:
        if self.local:
            joined = ",".join(f"{s}:{self.file_sha256[s][:16]}" for s in sorted(self.files))
            return f"files[{joined}]"
        return f"hub:{self.dataset}@{self.hub_revision or 'default'}#{self.fingerprint}"

    def with_documents(self, task: Any) -> TaskData:
        """Add the hub dataset's fingerprint (local files are identified by their bytes)."""
        if self.local:
            return self
        dataset = getattr(task, "dataset", None)
        prints = []
        if isinstance(dataset, Mapping):
            prints = [f"{k}={getattr(v, '_fingerprint', '')}" for k, v in sorted(dataset.items())]
        digest = hashlib.sha256(";".join(prints).encode()).hexdigest()[:16]
        return replace(self, fingerprint=digest)


def splits_read(config: Mapping[str, Any]) -> dict[str, str]:
    """The splits a task's config reads: role (test_split, ...) → split name."""
    out = {key: config[key] for key in _SPLIT_KEYS if isinstance(config.get(key), str)}
    fewshot = config.get("fewshot_config")
    if isinstance(fewshot, Mapping) and isinstance(fewshot.get("split"), str):
        out["fewshot_split"] = fewshot["split"]
    return out


def fixed_fewshot_samples(config: Mapping[str, Any]) -> bool:
    """Whether the task's few-shot examples are fixed in its config (``fewshot_config.samples``,
    a list or a function, and no few-shot split): lm-eval then never reads its training or
    validation split for them (MATH-hard's four examples)."""
    fewshot = config.get("fewshot_config")
    return (
        isinstance(fewshot, Mapping)
        and fewshot.get("samples") is not None
        and not isinstance(fewshot.get("split"), str)
        and not isinstance(config.get("fewshot_split"), str)
    )


def dataset_name(config: Mapping[str, Any]) -> str:
    path, name = config.get("dataset_path") or "?", config.get("dataset_name")
    return f"{path}/{name}" if name else str(path)


def _dir_files(spec: LmEvalTask, config: Mapping[str, Any], splits: set[str]) -> dict[str, str]:
    folder = Path(spec.data_dir or ".") / str(config.get("dataset_path") or "").replace("/", "__")
    folder = folder / str(config.get("dataset_name") or "default")
    found = {}
    for split in sorted(splits):
        for suffix in _FORMATS:
            path = folder / f"{split}{suffix}"
            if path.is_file():
                found[split] = str(path)
                break
    if not found:
        raise LmEvalTaskError(
            f"lm-eval task {spec.task!r}: data_dir has no files for dataset "
            f"{dataset_name(config)!r}: expected {folder}/<split>.jsonl for split(s) "
            f"{', '.join(sorted(splits))}"
        )
    return found


def dataset_overrides(
    spec: LmEvalTask, config: Mapping[str, Any]
) -> tuple[dict[str, Any], TaskData]:
    """The task config overrides that make it read its data as the entry says, and the
    data's description (its revision is completed once the task is built)."""
    name = dataset_name(config)
    roles = splits_read(config)
    if not spec.data_files and not spec.data_dir:
        revision = spec.revision
        if revision is None:
            try:
                revision = hub_commit(config)
            except Exception as exc:
                raise hub_error(spec, config, exc) or exc from None
        if revision is None:
            return {}, TaskData(name)
        kwargs = {**dict(config.get("dataset_kwargs") or {}), "revision": revision}
        return {"dataset_kwargs": kwargs}, TaskData(name, hub_revision=revision)
    needed = set(roles.values())
    files = dict(spec.data_files) if spec.data_files else _dir_files(spec, config, needed)
    eval_split = roles.get("test_split") or roles.get("validation_split")
    if eval_split is None or eval_split not in files:
        raise LmEvalTaskError(
            f"lm-eval task {spec.task!r} evaluates split {eval_split!r} of {name!r}; the local "
            f"files name split(s) {', '.join(sorted(files)) or 'none'}: give data_files: "
            f"{{{eval_split}: <file>}}"
        )
    shots = spec.num_fewshot if spec.num_fewshot is not None else config.get("num_fewshot") or 0
    fixed = fixed_fewshot_samples(config)
    stand_in: dict[str, str] = {}
    for role, split in roles.items():
        if split in files:
            continue
        if (shots == 0 or fixed) and role in ("training_split", "validation_split"):
            stand_in[split] = eval_split  # never drawn from: no example, or fixed examples
            continue
        if shots == 0 and role == "fewshot_split":
            stand_in[split] = eval_split
            continue
        raise LmEvalTaskError(
            f"lm-eval task {spec.task!r} reads split {split!r} of {name!r} ({role}, "
            f"{shots}-shot); the local files name split(s) {', '.join(sorted(files))}: add "
            f"data_files: {{{split}: <file>}}"
        )
    digests = {split: _sha256(path) for split, path in files.items()}
    loader = LocalDataset(tuple(sorted(files.items())), tuple(sorted(stand_in.items())))
    return {"custom_dataset": loader}, TaskData(name, files, digests)


def hub_commit(config: Mapping[str, Any]) -> str | None:
    """The commit the hub's dataset of ``config`` is at now (on its default branch, or the
    branch or tag its ``dataset_kwargs`` name), so an entry without ``revision`` still reads,
    and records, one commit: the data cannot change between reading and recording, and the
    scenario's revision says which commit a result came from. None where there is no hub
    repository to ask: offline (the cached copy is read as it is), or a dataset that is a
    builder or a local folder rather than ``owner/name``."""
    path = str(config.get("dataset_path") or "")
    if offline_settings() or path.count("/") != 1 or Path(path).exists():
        return None
    from huggingface_hub import HfApi

    branch = (config.get("dataset_kwargs") or {}).get("revision")
    return HfApi(endpoint=hub_endpoint()).dataset_info(path, revision=branch).sha


def offline_settings() -> list[str]:
    """The hub libraries' offline variables that are set (``HF_HUB_OFFLINE=1``, ...)."""
    return [env for env in OFFLINE_ENVS if os.environ.get(env, "").lower() in ("1", "true")]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc}") from None
    return digest.hexdigest()


@dataclass(frozen=True)
class LocalDataset:
    """lm-eval's ``custom_dataset``: the files read into a ``datasets.DatasetDict``."""

    files: tuple[tuple[str, str], ...]
    stand_in: tuple[tuple[str, str], ...] = ()

    def __call__(self, **_: Any) -> Any:  # lm-eval passes its metadata; files say it all
        import datasets

        splits = {}
        for split, path in self.files:
            rows = [row for _, row in iter_rows(path)]
            if not rows:
                raise DataFileError(f"{path}: no rows")
            try:
                splits[split] = datasets.Dataset.from_list(rows)
            except Exception as exc:  # pyarrow cannot type a column consistently
                raise DataFileError(
                    f"{path}: the rows do not share one schema ({type(exc).__name__}: {exc})"
                ) from None
        for split, source in self.stand_in:
            splits[split] = splits[source]
        return datasets.DatasetDict(splits)


def hub_error(spec: LmEvalTask, config: Mapping[str, Any], exc: BaseException) -> Exception | None:
    """The error for a task whose hub dataset cannot be read (None when ``exc`` is something
    else): the hub cannot be reached (offline, or no answer from ``$HF_ENDPOINT``), or it has
    no such dataset or revision. It names the dataset, the hub and the override that points
    the entry at local files."""
    offline = offline_settings()
    cause = f"{type(exc).__name__}: {exc}"
    text = cause.lower()
    network = any(
        word in text
        for word in ("offline", "connection", "couldn't reach", "could not reach", "timed out")
    )
    # Offline, the hub's libraries answer a dataset they do not have with errors of their own
    # (or OSError/FileNotFoundError); anything else is a task's own error and is reported so.
    origin = type(exc).__module__.split(".")[0]
    loading = origin in ("datasets", "huggingface_hub", "requests", "httpx", "urllib3")
    name, hub = dataset_name(config), hub_endpoint()
    if network or (offline and (loading or isinstance(exc, OSError))):
        why = f"{offline[0]}=1" if offline else f"{hub} cannot be reached: {cause}"
        return LmEvalTaskError(
            f"lm-eval task {spec.task!r} reads dataset {name!r} from the Hugging Face hub, "
            f"which is not reachable here ({why}); {_local_override(config)}"
        )
    missing = type(exc).__name__ in (
        "DatasetNotFoundError",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
    )
    if not (loading and missing):
        return None
    what = f"dataset {name!r}"
    if spec.revision is not None and "revision" in text:
        what = f"revision {spec.revision!r} of dataset {name!r}"
        fix = "give args.revision: a commit of that dataset"
    else:
        fix = "check the task's dataset_path"
    return LmEvalTaskError(
        f"lm-eval task {spec.task!r}: the Hugging Face hub at {hub} has no {what} ({cause}); "
        f"{fix}, or {_local_override(config)}"
    )


def _local_override(config: Mapping[str, Any]) -> str:
    splits = sorted(set(splits_read(config).values()))
    example = ", ".join(f"{s}: <{s}.jsonl>" for s in splits) or "test: <test.jsonl>"
    return (
        f"point the entry at local files in the hub's schema: args.data_files: {{{example}}}, "
        f"or args.data_dir: a folder with "
        f"{str(config.get('dataset_path') or '').replace('/', '__')}/"
        f"{config.get('dataset_name') or 'default'}/<split>.jsonl"
    )
