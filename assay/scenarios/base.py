"""The scenario plug-in API: a scenario yields typed instances plus the digest of its data.

Built-in scenarios register with :func:`register_scenario`. Installed packages add scenarios
through ``assay.scenarios`` entry points (``assay.core.plugins``) whose value names a
:class:`Scenario` subclass: a suite names it like a built-in (``scenario: acme_quiz``), its
``args`` are its keyword arguments, checked when the suite is read by the class's pydantic
model ``Args`` when it has one, and ``load()`` returns a :class:`ScenarioData` or a list of
:class:`Instance` (the plugin's name and version are then the data's revision). A plugin that
fails to import, raises while loading or returns anything else fails with an error naming the
plugin, its entry point and, where one is at fault, the instance.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from assay.core.digests import digest_json
from assay.core.plugins import SCENARIOS_GROUP, Plugin, PluginError, find, installed, validate_args
from assay.core.records import Instance

ENTRY_POINT_GROUP = SCENARIOS_GROUP


@dataclass(frozen=True, slots=True)
class ScenarioData:
    """The instances of one scenario, with what identifies the data they came from."""

    instances: list[Instance]
    revision: str  # the source's version (a date, a commit, a checksum, "generated-v1", …)

    @property
    def digest(self) -> str:
        """Digest of the normalized instances themselves, whatever the source."""
        return instances_digest(Instance.to_table(self.instances))


def instances_digest(table: pa.Table) -> str:
    """Digest of a scenario's instances table (as stored in ``scenario_instances``)."""
    return digest_json(table.to_pylist())


class Scenario(abc.ABC):
    """A source of evaluation instances. Subclasses take their arguments as keyword args."""

    name: str = ""

    @abc.abstractmethod
    def load(self) -> ScenarioData:
        """Return every instance of the scenario (all splits)."""


_SCENARIOS: dict[str, Callable[..., Scenario]] = {}


def register_scenario(name: str) -> Callable[[type[Scenario]], type[Scenario]]:
    """Class decorator: make a scenario available by name to suite files."""

    def decorate(cls: type[Scenario]) -> type[Scenario]:
        if name in _SCENARIOS and _SCENARIOS[name] is not cls:
            raise ValueError(f"scenario name {name!r} is already registered")
        cls.name = name
        _SCENARIOS[name] = cls
        return cls

    return decorate


def scenario_names() -> list[str]:
    """Every scenario name known: built in and registered through entry points."""
    return sorted(set(_SCENARIOS) | {p.name for p in installed(SCENARIOS_GROUP)})


def _plugin(name: str) -> Plugin | None:
    plugin = find(SCENARIOS_GROUP, name)
    if plugin is not None and name in _SCENARIOS:
        raise PluginError(
            f"scenario name {name!r} is built into assay and also declared by {plugin}; "
            "uninstall the plugin or rename its entry point"
        )
    return plugin


def _plugin_class(plugin: Plugin) -> type[Scenario]:
    cls = plugin.load()
    if not (isinstance(cls, type) and issubclass(cls, Scenario)):
        raise PluginError(f"{plugin} names {cls!r}, not a subclass of assay's Scenario")
    model = getattr(cls, "Args", None)
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(f"{plugin}: its 'Args' is not a pydantic model class")
    return cls


def scenario_args_model(name: str) -> type[BaseModel] | None:
    """The pydantic model of a plugin scenario's arguments (None for a built-in, an unknown
    name or a plugin without one), so a suite's ``args`` are checked when it is read."""
    plugin = _plugin(name) if name not in _SCENARIOS else None
    return None if plugin is None else getattr(_plugin_class(plugin), "Args", None)


def get_scenario(name: str, **args: Any) -> Scenario:
    """Build a scenario by name with its arguments; unknown names list the known ones."""
    plugin = _plugin(name)
    if plugin is not None:
        return _build_plugin(plugin, args)
    try:
        factory = _SCENARIOS[name]
    except KeyError:
        known = ", ".join(scenario_names())
        raise KeyError(f"unknown scenario {name!r}; known scenarios: {known}") from None
    try:
        return factory(**args)
    except TypeError as exc:
        raise ValueError(f"scenario {name!r}: bad arguments {args!r}: {exc}") from None


def _build_plugin(plugin: Plugin, args: dict[str, Any]) -> Scenario:
    cls = _plugin_class(plugin)
    model = getattr(cls, "Args", None)
    if model is not None:
        checked = validate_args(model, args, f"{plugin}: args")
        args = {name: getattr(checked, name) for name in model.model_fields}
    try:
        scenario = cls(**args)
    except Exception as exc:
        raise PluginError(
            f"{plugin}: could not be created with arguments {args!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return PluginScenario(plugin, scenario)


class PluginScenario(Scenario):
    """A plugin's scenario, its ``load`` checked so that a broken one names itself."""

    def __init__(self, plugin: Plugin, inner: Scenario) -> None:
        self.plugin, self.inner, self.name = plugin, inner, plugin.name

    def load(self) -> ScenarioData:
        try:
            loaded: Any = self.inner.load()
        except Exception as exc:
            raise PluginError(f"{self.plugin}: load() failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(loaded, ScenarioData):
            instances, revision = loaded.instances, loaded.revision
        elif isinstance(loaded, Iterable) and not isinstance(loaded, str | bytes | dict):
            instances = list(loaded)
            revision = f"{self.plugin.distribution}=={self.plugin.version}"
        else:
            raise PluginError(
                f"{self.plugin}: load() returned {type(loaded).__name__}, not ScenarioData or "
                "a list of Instance"
            )
        seen: set[str] = set()
        for index, instance in enumerate(instances):
            if not isinstance(instance, Instance):
                raise PluginError(
                    f"{self.plugin}: load() item {index} is {type(instance).__name__}, "
                    "not an Instance"
                )
            if instance.id in seen:
                raise PluginError(f"{self.plugin}: instance {instance.id!r} appears twice")
            seen.add(instance.id)
        if not isinstance(revision, str):
            raise PluginError(f"{self.plugin}: the revision is not a string: {revision!r}")
        return ScenarioData(list(instances), revision)


def split(instances: Iterable[Instance], name: str) -> list[Instance]:
    """The instances of one split, in their original order."""
    return [i for i in instances if i.split == name]
