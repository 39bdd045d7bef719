"""MLflow interop: mirror a real MLflow registry's aliases into assay, export evaluations back.

Flow: ``MlflowRegistryWatcher.snapshot()`` reads every registered model's alias map (MLflow's
search results omit aliases and moving an alias changes no timestamp, so each model is read
with ``get_registered_model``); ``diff_alias_maps`` compares it with the previous snapshot;
``mirror_changes`` registers the aliased MLflow versions in assay's ``Registry`` and sets the
same aliases there. The alias events in assay's log then drive ``model_promotion_sensor``,
which launches the evaluations: nothing here starts a run. ``export_evaluation`` logs a
finished evaluation to MLflow as a run and links it to the MLflow model version.

Needs the optional extra: ``pip install 'assay[mlflow]'``. ``mlflow`` is imported lazily so the
rest of assay works without it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from assay.core.records import InstanceStat, is_headline
from assay.registry import ErrorCode, ModelVersion, Registry, RegistryError
from assay.registry.gating import Outcome
from assay.scenarios.base import instances_digest
from assay.scoring.summary import LATER_SCORECARD_COLUMNS, SCORECARD_SCHEMA
from assay.storage.code_versions import code_version
from assay.storage.contract import (
    METRIC_TABLES,
    MODEL_OUTPUTS,
    SCENARIO,
    SCENARIO_INSTANCES,
)
from assay.storage.parquet import ParquetStore

# Tags assay puts on a version mirrored from MLflow; (model, version, created) identify the
# MLflow version across ticks, including a model deleted and re-created under the same name.
TAG_MODEL = "mlflow.model"
TAG_VERSION = "mlflow.version"
TAG_CREATED = "mlflow.model_created_ms"
TAG_SOURCE = "mlflow.source"
TAG_RUN_ID = "mlflow.run_id"
# An MLflow version tag that names the assay source outright (e.g. "openai:http://h/v1#m").
SOURCE_OVERRIDE_TAG = "assay.source"
# Placeholder scheme for versions whose artifacts assay cannot load; the model factory refuses
# it with a message naming the scheme, so such a version fails loudly instead of silently.
UNSERVABLE_SCHEME = "mlflow"

_INSTALL_HINT = "pip install 'assay[mlflow]'"


def _mlflow() -> Any:
    """Import mlflow on first use, with an error that names the extra to install."""
    try:
        import mlflow
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"MLflow interop needs mlflow: {_INSTALL_HINT}") from exc
    return mlflow


def mlflow_available() -> bool:
    """True when the ``mlflow`` package is installed (found without importing it: slow)."""
    return importlib.util.find_spec("mlflow") is not None


def redact_uri(uri: str) -> str:
    """``uri`` without user and password, for messages and metadata."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


# --------------------------------------------------------------------------- alias maps


@dataclass(frozen=True, slots=True)
class ModelAliases:
    """One registered model's aliases (alias → version string) and its creation time."""

    created_ms: int
    aliases: dict[str, str] = field(default_factory=dict)


# model name → its aliases; the sensor's cursor is this map as JSON.
AliasMap = dict[str, ModelAliases]


def alias_map_to_json(snapshot: Mapping[str, ModelAliases]) -> str:
    """The cursor form: ``{model: {"created_ms": ..., "aliases": {alias: version}}}``."""
    return json.dumps(
        {
            name: {"created_ms": m.created_ms, "aliases": dict(sorted(m.aliases.items()))}
            for name, m in sorted(snapshot.items())
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def alias_map_from_json(text: str | None) -> AliasMap:
    """Parse a cursor written by ``alias_map_to_json``; None or "" is the empty map."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"MLflow alias cursor is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("MLflow alias cursor must be a JSON object of model name → entry")
    out: AliasMap = {}
    for name, entry in data.items():
        where = f"MLflow alias cursor, model {name!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: entry must be an object, got {entry!r}")
        created, aliases = entry.get("created_ms"), entry.get("aliases")
        if isinstance(created, bool) or not isinstance(created, int):
            raise ValueError(f"{where}: 'created_ms' must be an integer, got {created!r}")
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
        ):
            raise ValueError(f"{where}: 'aliases' must map alias → version string")
        out[name] = ModelAliases(created, dict(aliases))
    return out


@dataclass(frozen=True, slots=True)
class MlflowVersion:
    """What assay needs from one MLflow model version to mirror it."""

    model: str
    version: str
    model_created_ms: int
    source: str
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # The version's artifacts as a local path, when they are on this machine's file system.
    local_path: str | None = None


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One alias that appeared, moved or disappeared between two snapshots.

    ``before``/``after`` are MLflow version strings (None: unset). ``model_created_ms`` is the
    creation time of the model incarnation the change belongs to (the old one for a removal
    caused by deletion). ``target`` describes the ``after`` version once fetched.
    """

    model: str
    alias: str
    before: str | None
    after: str | None
    model_created_ms: int
    target: MlflowVersion | None = None

    @property
    def kind(self) -> str:
        if self.after is None:
            return "removed"
        return "set" if self.before is None else "moved"


def diff_alias_maps(
    old: Mapping[str, ModelAliases], new: Mapping[str, ModelAliases]
) -> list[AliasChange]:
    """Alias changes from ``old`` to ``new``, ordered by model then alias.

    A model whose creation time changed was deleted and re-created: its aliases count as new
    (``before`` None) even where the version number is the same, because it names a different
    version. Aliases of a deleted model, or of an old incarnation that the new one lacks, are
    reported as removed.
    """
    changes: list[AliasChange] = []
    empty = ModelAliases(-1)
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, empty), new.get(name, empty)
        same_model = name in old and name in new and before.created_ms == after.created_ms
        for alias in sorted(set(before.aliases) | set(after.aliases)):
            was, now = before.aliases.get(alias), after.aliases.get(alias)
            if now is None:
                changes.append(AliasChange(name, alias, was, None, before.created_ms))
            elif not same_model:
                changes.append(AliasChange(name, alias, None, now, after.created_ms))
            elif was != now:
                changes.append(AliasChange(name, alias, was, now, after.created_ms))
    return changes


# --------------------------------------------------------------------------- watching MLflow


class MlflowUnavailable(RuntimeError):
    """The MLflow tracking server could not be reached or answered with an error."""


class MlflowRejected(RuntimeError):
    """MLflow refused the request itself (a 4xx other than throttling or authentication):
    asking again gives the same answer, so the caller records it and moves on."""


def _local_path(uri: str) -> str | None:
    """A local file-system path for ``uri`` (absolute path or file:// URI), else None."""
    if uri.startswith("file:"):
        parsed = urllib.parse.urlsplit(uri)
        if parsed.netloc not in ("", "localhost"):
            return None
        return urllib.request.url2pathname(parsed.path)
    if os.path.isabs(uri):
        return uri
    return None


class MlflowRegistryWatcher:
    """Reads alias maps and version details from an MLflow registry.

    ``timeout_s`` bounds the reachability check made before each snapshot; MLflow's own
    client retries a dead server for minutes, longer than a sensor tick may take.
    """

    def __init__(
        self, tracking_uri: str, registry_uri: str | None = None, timeout_s: float = 5.0
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.timeout_s = timeout_s
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            mlflow = _mlflow()
            self._client = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
            )
        return self._client

    def check_reachable(self) -> None:
        """Raise ``MlflowUnavailable`` if an HTTP registry does not answer ``/health``."""
        parts = urllib.parse.urlsplit(self.registry_uri)
        if parts.scheme not in ("http", "https"):
            return  # a database or file store: the first query reports any problem
        url = self.registry_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                response.read(64)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MlflowUnavailable(
                f"MLflow at {redact_uri(self.registry_uri)} is unreachable: {reason}"
            ) from exc

    def snapshot(self) -> AliasMap:
        """Every registered model's aliases and creation time, read model by model."""
        self.check_reachable()
        mlflow = _mlflow()
        try:
            names: list[str] = []
            token = None
            while True:
                page = self.client.search_registered_models(max_results=100, page_token=token)
                names.extend(m.name for m in page)
                token = page.token
                if not token:
                    break
            out: AliasMap = {}
            for name in names:
                try:
                    model = self.client.get_registered_model(name)
                except mlflow.exceptions.MlflowException as exc:
                    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                        continue  # deleted between the search and this read
                    raise
                out[name] = ModelAliases(
                    int(model.creation_timestamp or 0),
                    {alias: str(v) for alias, v in (model.aliases or {}).items()},
                )
            return out
        except mlflow.exceptions.MlflowException as exc:
            raise MlflowUnavailable(
                f"MLflow at {redact_uri(self.registry_uri)} failed: {exc.message}"
            ) from exc

    def version(self, model: str, version: str, model_created_ms: int) -> MlflowVersion:
        """Details of one MLflow version, with its artifacts' local path when there is one."""
        mv = self.client.get_model_version(model, version)
        source = str(mv.source or "")
        location = getattr(mv, "storage_location", None) or source
        local = _local_path(location)
        if local is None and location.startswith("runs:/") and mv.run_id:
            # runs:/<run_id>/<path> is relative to the run's artifact root.
            rel = location[len("runs:/") :].partition("/")[2]
            root = _local_path(self.client.get_run(mv.run_id).info.artifact_uri)
            if root is not None:
                local = os.path.join(root, rel) if rel else root
        return MlflowVersion(
            model=model,
            version=str(mv.version),
            model_created_ms=model_created_ms,
            source=source,
            run_id=mv.run_id or None,
            tags=dict(mv.tags or {}),
            local_path=local,
        )

    def with_targets(self, changes: Iterable[AliasChange]) -> list[AliasChange]:
        """The changes with ``target`` filled in for every alias set or moved."""
        out = []
        for change in changes:
            if change.after is not None and change.target is None:
                target = self.version(change.model, change.after, change.model_created_ms)
                change = AliasChange(
                    change.model,
                    change.alias,
                    change.before,
                    change.after,
                    change.model_created_ms,
                    target,
                )
            out.append(change)
        return out


# --------------------------------------------------------------------------- mirroring


def assay_source(version: MlflowVersion) -> tuple[str, bool]:
    """The assay source URI for an MLflow version, and whether assay can serve it.

    The ``assay.source`` tag wins; then a local directory becomes ``hf:<dir>`` and a local
    ``.gguf`` file ``gguf:<file>``. Anything else (s3://, mlflow-artifacts:/, a path missing
    on this machine) gets the placeholder ``mlflow:models:/<name>/<version>``, which the model
    factory refuses: give such a version an ``assay.source`` tag to make it servable.
    """
    override = version.tags.get(SOURCE_OVERRIDE_TAG)
    if override:
        return override, True
    if version.local_path is not None:
        path = Path(version.local_path)
        if path.is_dir():
            return f"hf:{path}", True
        if path.is_file() and path.suffix == ".gguf":
            return f"gguf:{path}", True
    return f"{UNSERVABLE_SCHEME}:models:/{version.model}/{version.version}", False


def _serving(version: MlflowVersion) -> dict[str, Any] | None:
    """The ``assay.serving`` tag (a JSON object of ServingConfig fields), if present."""
    text = version.tags.get("assay.serving")
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(
            ErrorCode.INVALID_PARAMETER_VALUE,
            f"MLflow model {version.model!r} version {version.version}: tag 'assay.serving' "
            f"is not valid JSON: {exc}",
        ) from exc
    if not isinstance(data, dict):
        raise RegistryError(
            ErrorCode.INVALID_PARAMETER_VALUE,
            f"MLflow model {version.model!r} version {version.version}: tag 'assay.serving' "
            "must be a JSON object",
        )
    return data


@dataclass(frozen=True, slots=True)
class MirrorResult:
    """What ``mirror_changes`` did with one change: ``action`` is ``alias_set``,
    ``alias_removed``, ``unchanged``, ``skipped`` (for good), ``deferred`` (to be retried
    once the MLflow version is servable), or for a gated alias ``pending`` (recorded; the
    promotion sensor decides) or ``refused`` (a verdict on the current suite refused it);
    ``reason`` says why."""

    change: AliasChange
    action: str
    key: str | None = None  # the assay version key the alias points at (or pointed at)
    servable: bool = True
    reason: str = ""


def _mirrored_version(
    registry: Registry, model: str, version: str, created_ms: int
) -> ModelVersion | None:
    try:
        versions = registry.list_versions(model)
    except RegistryError as exc:
        if exc.code == ErrorCode.RESOURCE_DOES_NOT_EXIST:
            return None
        raise
    for v in versions:
        if (
            v.tags.get(TAG_MODEL) == model
            and v.tags.get(TAG_VERSION) == version
            and v.tags.get(TAG_CREATED) == str(created_ms)
        ):
            return v
    return None


def mirror_version(
    registry: Registry, version: MlflowVersion, actor: str
) -> tuple[ModelVersion, bool]:
    """The assay version mirroring ``version``, registered on first sight; and servability."""
    source, servable = assay_source(version)
    existing = _mirrored_version(registry, version.model, version.version, version.model_created_ms)
    if existing is not None:
        return existing, servable
    tags = {
        TAG_MODEL: version.model,
        TAG_VERSION: version.version,
        TAG_CREATED: str(version.model_created_ms),
        TAG_SOURCE: version.source[:5000],
    }
    if version.run_id:
        tags[TAG_RUN_ID] = version.run_id
    registry.get_or_create_model(
        version.model,
        description="mirrored from MLflow",
        tags={TAG_MODEL: version.model},
        actor=actor,
    )
    created = registry.create_version(
        version.model,
        source,
        serving=_serving(version),
        description=f"MLflow model {version.model!r} version {version.version}",
        tags=tags,
        actor=actor,
    )
    return created, servable


def mirror_changes(
    changes: Sequence[AliasChange],
    registry: Registry,
    actor: str = "mlflow-sync",
    *,
    register_unservable: bool = False,
    move_gated: bool = False,
) -> list[MirrorResult]:
    """Apply MLflow alias changes to assay's registry, one result per change.

    A gated alias (``champion`` by default; ``Registry.gated_aliases``) is moved in assay only
    by a promoter, and anyone who may write to the MLflow registry is not one: its changes
    are ``skipped`` unless the operator passes ``move_gated=True``. The target version is
    still registered, so it can be evaluated and then promoted in assay. Even then the move
    goes through the promotion decision (``assay.registry.gating``) like any other: ``pending``
    until a verdict on the current suite passes, ``refused`` when one failed.

    Set or moved: the MLflow version is registered in assay (once; later changes reuse it) and
    the alias set there, which is the event ``model_promotion_sensor`` turns into an
    evaluation run. Removed: the assay alias is deleted only while it still points at the
    version mirrored from that MLflow model, so aliases assay users set are left alone.

    A target without a servable source (see ``assay_source``) is ``deferred``: nothing is
    written, because the promotion sensor resolves the artifacts of every version it sees and
    would fail on it at every tick. ``register_unservable=True`` registers it anyway, under the
    placeholder source. Names assay refuses (see ``assay.registry.names``) are ``skipped`` with
    the reason; any other error propagates, so a caller can retry the whole batch (every step
    is idempotent).
    """
    results = []
    for change in changes:
        try:
            if (
                change.target is not None
                and not register_unservable
                and not assay_source(change.target)[1]
            ):
                reason = (
                    f"MLflow version source {change.target.source!r} is not servable by assay; "
                    f"tag the version {SOURCE_OVERRIDE_TAG!r} with an assay source URI"
                )
                results.append(MirrorResult(change, "deferred", servable=False, reason=reason))
                continue
            results.append(_mirror_one(change, registry, actor, move_gated))
        except RegistryError as exc:
            if exc.code != ErrorCode.INVALID_PARAMETER_VALUE:
                raise
            results.append(MirrorResult(change, "skipped", reason=str(exc)))
    return results


def _mirror_one(
    change: AliasChange, registry: Registry, actor: str, move_gated: bool
) -> MirrorResult:
    if change.alias in registry.gated_aliases and not move_gated:
        key = mirror_version(registry, change.target, actor)[0].key if change.target else None
        reason = (
            f"{change.alias!r} is a gated alias: the MLflow sync does not move it (a promoter "
            "moves it in assay, where the gate decides; the operator may allow the sync with "
            "ASSAY_MLFLOW_SYNC_MOVES_GATED=1)"
        )
        return MirrorResult(change, "skipped", key=key, reason=reason)
    if change.after is None:
        mirrored = (
            _mirrored_version(registry, change.model, change.before, change.model_created_ms)
            if change.before is not None
            else None
        )
        if mirrored is None or change.alias not in mirrored.aliases:
            return MirrorResult(change, "unchanged", reason="alias not held by the mirror")
        registry.delete_alias(change.model, change.alias, actor=actor)
        return MirrorResult(change, "alias_removed", key=mirrored.key)
    if change.target is None:
        raise ValueError(
            f"alias {change.alias!r} of MLflow model {change.model!r}: change has no target "
            "version; pass the changes through MlflowRegistryWatcher.with_targets first"
        )
    version, servable = mirror_version(registry, change.target, actor)
    if change.alias in version.aliases:
        return MirrorResult(change, "unchanged", key=version.key, servable=servable)
    # The one ruling decides a gated alias here too: pending until a verdict on the current
    # suite passes, refused with its reasons when one failed.
    result = registry.request_alias(change.model, change.alias, version.version, actor=actor)
    if result.outcome is Outcome.MOVED:
        return MirrorResult(change, "alias_set", key=version.key, servable=servable)
    if result.outcome is Outcome.UNCHANGED:
        return MirrorResult(change, "unchanged", key=version.key, servable=servable)
    return MirrorResult(
        change, result.outcome.value, key=version.key, servable=servable, reason=result.reason
    )


def cursor_after(current: Mapping[str, ModelAliases], results: Iterable[MirrorResult]) -> AliasMap:
    """The snapshot to remember: ``current`` with every deferred change undone, so the next
    diff reports it again (and mirrors it once the MLflow version has a servable source)."""
    out = {name: ModelAliases(m.created_ms, dict(m.aliases)) for name, m in current.items()}
    for result in results:
        change = result.change
        if result.action != "deferred" or change.model not in out:
            continue
        aliases = out[change.model].aliases
        if change.before is None:
            aliases.pop(change.alias, None)
        else:
            aliases[change.alias] = change.before
    return out


# --------------------------------------------------------------------------- exporting


@dataclass(frozen=True, slots=True)
class ExportedRun:
    """The MLflow run an evaluation was logged as, and the model version it was linked to."""

    run_id: str
    experiment_id: str
    linked_version: str | None  # "name/version" in MLflow, None when not mirrored from MLflow
    metrics: dict[str, float]


def _check_columns(table: pa.Table, schema: pa.Schema, what: str) -> None:
    if not isinstance(table, pa.Table):
        raise TypeError(f"{what} must be a pyarrow Table, got {type(table).__name__}")
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"{what} is missing column(s): {', '.join(missing)}")


def headline_metrics(metric_table: pa.Table) -> dict[str, float]:
    """``<metric>.mean``/``.ci_low``/``.ci_high`` for every unperturbed, ungrouped row that
    was computed; non-finite values (an interval of one instance) are left out."""
    needed = pa.schema(
        [f for f in SCORECARD_SCHEMA if f.name not in LATER_SCORECARD_COLUMNS]
    )  # tables stored before a later column existed still export
    _check_columns(metric_table, needed, "metric_table")
    out: dict[str, float] = {}
    # A contamination subset's rows (``subset``) are not the headline: read the column too.
    columns = needed.names + ["subset"] * ("subset" in metric_table.column_names)
    for row in metric_table.select(columns).to_pylist():
        if not is_headline(row) or row["reason"]:
            continue
        for part in ("mean", "ci_low", "ci_high"):
            value = row[part]
            if value is not None and math.isfinite(value):
                out[f"{row['metric']}.{part}"] = float(value)
    return out


def export_evaluation(
    tracking_uri: str,
    key: str,
    scenario: str,
    metric_table: pa.Table,
    instance_scores: pa.Table,
    registry_version: ModelVersion,
    *,
    dataset_digest: str | None = None,
    prompt_versions: Sequence[str] = (),
    template_id: str | None = None,
    experiment: str = "assay-evaluations",
    registry_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ExportedRun:
    """Log one evaluation (version ``key`` on ``scenario``) to MLflow as a finished run.

    Run tags name the version (``assay.model_version``) and scenario, plus ``tags``.
    Params: model version key, scenario, template id (default: the template ids found in
    ``instance_scores``), scoring version and, if given, the dataset digest and the
    prompt-registry versions (``prompts:/name/N``) the requests were built from. Metrics: each
    headline metric's mean and interval bounds. Artifact: ``instance_scores.parquet``. When
    the version was mirrored from MLflow (and that model still exists, same incarnation),
    the MLflow model version gets the tag ``assay.eval.<scenario>.run_id`` = the run id.
    A failure after the run was created marks it FAILED, so no half-logged run looks finished.
    """
    if registry_version.key != key:
        raise ValueError(f"key {key!r} does not match registry version {registry_version.key!r}")
    needed = pa.schema([f for f in InstanceStat.SCHEMA if f.name not in InstanceStat.LATER_COLUMNS])
    _check_columns(instance_scores, needed, "instance_scores")
    metrics = headline_metrics(metric_table)
    if template_id is None:
        ids = sorted({t for t in instance_scores.column("template_id").to_pylist() if t})
        template_id = ",".join(ids)
    params = {
        "model_version": key,
        "scenario": scenario,
        "template_id": template_id,
        "scoring_version": code_version(METRIC_TABLES),
    }
    if dataset_digest:
        params["dataset_digest"] = dataset_digest
    if prompt_versions:
        params["prompt_versions"] = ",".join(prompt_versions)
    mlflow = _mlflow()
    client = mlflow.MlflowClient(
        tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri
    )
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tags = {**(tags or {}), "assay.model_version": key, "assay.scenario": scenario}
    mirrored = registry_version.tags.get(TAG_MODEL), registry_version.tags.get(TAG_VERSION)
    if all(mirrored):
        tags["assay.mlflow_model_version"] = f"{mirrored[0]}/{mirrored[1]}"
    run = client.create_run(experiment_id, run_name=f"{key} {scenario}", tags=tags)
    run_id = run.info.run_id
    try:
        entities = mlflow.entities
        client.log_batch(
            run_id,
            metrics=[entities.Metric(k, v, 0, 0) for k, v in sorted(metrics.items())],
            params=[entities.Param(k, str(v)) for k, v in params.items()],
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "instance_scores.parquet"
            pq.write_table(instance_scores, path)
            client.log_artifact(run_id, str(path))
        linked = _link_model_version(client, mlflow, registry_version, scenario, run_id)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return ExportedRun(run_id, experiment_id, linked, metrics)


def _link_model_version(
    client: Any, mlflow: Any, version: ModelVersion, scenario: str, run_id: str
) -> str | None:
    name, number = version.tags.get(TAG_MODEL), version.tags.get(TAG_VERSION)
    if not name or not number:
        return None
    try:
        model = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None  # deleted in MLflow since it was mirrored
        raise
    if str(model.creation_timestamp) != version.tags.get(TAG_CREATED):
        return None  # re-created: the same number names a different version now
    client.set_model_version_tag(name, number, f"assay.eval.{scenario}.run_id", run_id)
    return f"{name}/{number}"


# --------------------------------------------------------------------------- automatic export

DEFAULT_EXPERIMENT = "assay-evaluations"
# The run tag naming the evaluation a run exports (``<partition key>#<storage id>``): looked up
# before exporting, so an evaluation is logged once even if a tick is repeated.
EVALUATION_TAG = "assay.evaluation"


def exported_run(client: Any, experiment: str, evaluation: str) -> str | None:
    """The id of a finished run exporting ``evaluation`` in ``experiment``, if there is one."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    # Partition keys follow the registry's name rule, so they hold no quote to escape.
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{EVALUATION_TAG}` = '{evaluation}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


@dataclass(frozen=True, slots=True)
class StoredExport:
    """What ``export_stored_evaluation`` did: the run, and whether it logged it now."""

    evaluation: str
    run_id: str
    logged: bool  # False: an earlier tick had already logged it


@dataclass(frozen=True, slots=True)
class Provenance:
    """What an evaluation was computed from, beyond its model version and scenario."""

    prompt_versions: tuple[str, ...] = ()  # "prompts:/name/N" its requests were built from
    dataset_digest: str | None = None  # of the scenario's stored instances


def stored_provenance(store: ParquetStore, partition: Mapping[str, str]) -> Provenance:
    """The prompt versions in a partition's ``model_outputs`` and the digest of its scenario's
    stored ``scenario_instances`` (each left out when that table is not stored)."""
    prompts: set[str] = set()
    if store.exists(MODEL_OUTPUTS, partition):
        outputs = store.read(MODEL_OUTPUTS, partition, columns=["prompt_templates"])
        column = outputs.column("prompt_templates").to_pylist()
        prompts = {f"prompts:/{t['name']}/{t['version']}" for used in column for t in used or ()}
    scenario = {SCENARIO: partition[SCENARIO]}
    digest = None
    if store.exists(SCENARIO_INSTANCES, scenario):
        digest = instances_digest(store.read(SCENARIO_INSTANCES, scenario))
    return Provenance(tuple(sorted(prompts)), digest)


# Refusals that may pass once an operator acts (a token, a permission): held, not skipped.
_HELD_STATUSES = frozenset({401, 403, 429})


def export_stored_evaluation(
    tracking_uri: str,
    evaluation: str,
    metric_table: pa.Table,
    instance_scores: pa.Table,
    registry_version: ModelVersion,
    scenario: str,
    *,
    provenance: Provenance | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    timeout_s: float = 5.0,
) -> StoredExport:
    """Log one stored evaluation unless a finished run already exports it.

    The server is probed first (MLflow's client retries a dead server for minutes). MLflow
    refusing the request itself (a 4xx other than 401, 403 and 429) is ``MlflowRejected``:
    asking again would change nothing. Any other failure talking to MLflow (unreachable, 5xx,
    throttled, not authorized) is ``MlflowUnavailable`` with the cause, so the caller can
    retry later. A bad table is a ValueError before any run is created.
    """
    watcher = MlflowRegistryWatcher(tracking_uri, timeout_s=timeout_s)
    watcher.check_reachable()
    mlflow = _mlflow()
    provenance = provenance or Provenance()
    try:
        existing = exported_run(watcher.client, experiment, evaluation)
        if existing is not None:
            return StoredExport(evaluation, existing, False)
        run = export_evaluation(
            tracking_uri,
            registry_version.key,
            scenario,
            metric_table,
            instance_scores,
            registry_version,
            dataset_digest=provenance.dataset_digest,
            prompt_versions=provenance.prompt_versions,
            experiment=experiment,
            tags={EVALUATION_TAG: evaluation},
        )
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        where = f"MLflow at {redact_uri(tracking_uri)}"
        status = (
            exc.get_http_status_code()
            if isinstance(exc, mlflow.exceptions.MlflowException)
            else 503
        )
        if 400 <= status < 500 and status not in _HELD_STATUSES:
            code = getattr(exc, "error_code", "")
            raise MlflowRejected(f"{where} refused it ({code}): {str(message)[:300]}") from exc
        raise MlflowUnavailable(f"{where} failed: {str(message)[:300]}") from exc
    return StoredExport(evaluation, run.run_id, True)
