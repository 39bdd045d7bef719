"""Plugins: scorers and scenarios from installed packages, found through entry points.

A distribution declares what it adds in its metadata, e.g. in ``pyproject.toml``::

    [project.entry-points."assay.scorers"]
    word_overlap = "acme_scoring.overlap:WordOverlap"

    [project.entry-points."assay.scenarios"]
    acme_quiz = "acme_scoring.quiz:AcmeQuiz"

The entry point's name is what a suite file writes (``scorer: word_overlap``,
``scenario: acme_quiz``); its value names the object (the protocols are in
:mod:`assay.core.scorers` and :mod:`assay.scenarios.base`). assay's own built-in scorers are
entry points too, declared in code (:data:`assay.core.scorers.BUILTIN_SCORERS`) so that a
source checkout finds them without being installed; they load through the same path.

Nothing is imported until a suite names it. A plugin that fails to import, or whose object is
not of the expected shape, raises :class:`PluginError` naming the plugin and its entry point.

**Code versions.** :func:`plugin_distributions` lists the installed distributions that declare
entry points of a group, each with its name, version and a digest of its files
(:func:`distribution_digest`); ``assay.storage.code_versions`` folds them into the code
version of the tables the group feeds, so upgrading a plugin marks those tables stale.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import Distribution, EntryPoint, entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

SCORERS_GROUP = "assay.scorers"
SCENARIOS_GROUP = "assay.scenarios"
GROUPS = (SCORERS_GROUP, SCENARIOS_GROUP)
_KIND = {SCORERS_GROUP: "scorer", SCENARIOS_GROUP: "scenario"}
# assay itself is not a plugin: its sources are in every code version already.
_SELF = "assay"


class PluginError(Exception):
    """A plugin could not be found, loaded or run; the message names the plugin and its entry
    point (and the instance, when one instance is at fault)."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One entry point of a group: where it comes from and what it names."""

    group: str  # "assay.scorers" or "assay.scenarios"
    name: str  # what a suite file writes
    value: str  # "module:attribute"
    distribution: str = ""  # "" for assay's built-ins
    version: str = ""

    @property
    def builtin(self) -> bool:
        return not self.distribution

    @property
    def entry(self) -> str:
        """The entry point as declared: ``assay.scorers: word_overlap = pkg.mod:Obj``."""
        return f"{self.group}: {self.name} = {self.value}"

    @property
    def origin(self) -> str:
        """``acme-scoring 1.2.0``, or ``assay (built in)``."""
        return "assay (built in)" if self.builtin else f"{self.distribution} {self.version}"

    def __str__(self) -> str:
        kind = _KIND.get(self.group, "plugin")
        return f"{kind} {self.name!r} (entry point {self.entry}, from {self.origin})"

    def load(self) -> Any:
        """Import the object the entry point names; any failure is a :class:`PluginError`."""
        try:
            return EntryPoint(self.name, self.value, self.group).load()
        except Exception as exc:
            raise PluginError(f"{self} failed to load: {type(exc).__name__}: {exc}") from exc


def _of(ep: EntryPoint) -> Plugin:
    dist = ep.dist
    name = dist.metadata["Name"] if dist is not None else "?"
    version = dist.version if dist is not None else "?"
    return Plugin(ep.group, ep.name, ep.value, name, version)


def installed(group: str) -> list[Plugin]:
    """The entry points of ``group`` declared by installed distributions (not assay's own)."""
    found = [_of(ep) for ep in entry_points(group=group)]
    return [p for p in found if _normalize(p.distribution) != _SELF]


def available(group: str, builtins: Sequence[Plugin] = ()) -> dict[str, list[Plugin]]:
    """Name → every plugin declaring it: the built-ins, then the installed ones."""
    by_name: dict[str, list[Plugin]] = {}
    for plugin in [*builtins, *installed(group)]:
        by_name.setdefault(plugin.name, []).append(plugin)
    return by_name


def find(group: str, name: str, builtins: Sequence[Plugin] = ()) -> Plugin | None:
    """The one plugin of ``group`` called ``name`` (None when there is none). Two plugins of
    one name are an error naming both: neither silently wins."""
    candidates = available(group, builtins).get(name, [])
    if len(candidates) > 1:
        listed = "; ".join(f"{p.entry} from {p.origin}" for p in candidates)
        raise PluginError(
            f"{_KIND.get(group, 'plugin')} name {name!r} is declared more than once ({listed}); "
            "uninstall one of them"
        )
    return candidates[0] if candidates else None


def validate_args(
    model: type[BaseModel] | None, data: Mapping[str, Any] | None, where: str
) -> BaseModel | None:
    """A plugin's arguments from a suite file, checked by the plugin's pydantic model.

    Unknown keys are refused whatever the model's own ``extra`` setting (a typo must not be
    ignored); errors name ``where`` and the key: ``s.yaml: scenarios.q.scorer_args.k: ...``.
    Without a model, no arguments are accepted and None is returned.
    """
    data = dict(data or {})
    if model is None:
        if data:
            raise ValueError(f"{where}: takes no arguments, got {', '.join(sorted(data))}")
        return None
    known = {name for name in model.model_fields} | {
        f.alias for f in model.model_fields.values() if f.alias
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        message = f"{where}{loc}: {first['msg']}"
    raise ValueError(message)  # outside the handler: pydantic's long report is not chained


# --------------------------------------------------------------------------- identity, digests


@dataclass(frozen=True, slots=True)
class DistributionVersion:
    """What of an installed plugin distribution enters a table's code version."""

    name: str
    version: str
    digest: str  # of its files (:func:`distribution_digest`)

    def __str__(self) -> str:
        return f"{self.name}=={self.version}#{self.digest}"


def plugin_distributions(groups: Iterable[str]) -> list[DistributionVersion]:
    """Every installed distribution declaring entry points of ``groups``, sorted by name."""
    wanted = set(groups)
    dists: dict[str, Distribution] = {}
    for group in sorted(wanted):
        for ep in entry_points(group=group):
            if ep.dist is not None and _normalize(ep.dist.metadata["Name"]) != _SELF:
                dists.setdefault(_normalize(ep.dist.metadata["Name"]), ep.dist)
    return [
        DistributionVersion(dist.metadata["Name"], dist.version, distribution_digest(dist))
        for _, dist in sorted(dists.items())
    ]


def distribution_digest(dist: Distribution) -> str:
    """A digest (16 hex digits) of a distribution's plugin declarations and of its files:
    their paths (as installed, relative to the install root) and their bytes.

    The files are the ones its installed file list names, and for editable installs, whose
    list names only a path hook, the package its entry points import from, wherever it lies.
    Compiled caches (``__pycache__``, ``.pyc``), metadata and install paths are left out, so
    the digest is the same on every machine that installed the same files.
    """
    digest = hashlib.sha256()
    declared = sorted(f"{ep.group} {ep.name} {ep.value}" for ep in dist.entry_points)
    digest.update("\n".join(declared).encode() + b"\0")
    files: dict[str, Path] = {}
    for file in dist.files or ():
        parts = Path(str(file)).parts
        if parts and _is_source(parts):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                files[Path(str(file)).as_posix()] = path
    listed = {relative.split("/")[0].removesuffix(".py") for relative in files}
    for top in sorted({ep.module.split(".")[0] for ep in dist.entry_points} - listed):
        files.update(_package_files(top))
    for relative, path in sorted(files.items()):
        digest.update(relative.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _is_source(parts: tuple[str, ...]) -> bool:
    first = parts[0]
    if first == ".." or first.endswith((".dist-info", ".egg-info", ".pth")):
        return False  # scripts, metadata, path hooks
    if first.startswith("__editable__") or "__pycache__" in parts:
        return False
    return not parts[-1].endswith((".pyc", ".pyo"))


def _package_files(top: str) -> dict[str, Path]:
    """Path relative to the package's parent → path, for every file of module ``top``."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return {}
    files: dict[str, Path] = {}
    for location in spec.submodule_search_locations or ():
        root = Path(location)
        for path in sorted(root.rglob("*")):
            if path.is_file() and _is_source(path.relative_to(root).parts):
                files[f"{top}/{path.relative_to(root).as_posix()}"] = path
    if not spec.submodule_search_locations and spec.origin and Path(spec.origin).is_file():
        files[Path(spec.origin).name] = Path(spec.origin)
    return files


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
