"""The scenario plug-in API: a scenario yields typed instances plus the digest of its data."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pyarrow as pa

from assay.core.digests import digest_json
from assay.core.records import Instance

ENTRY_POINT_GROUP = "assay.scenarios"


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


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _SCENARIOS:
            _SCENARIOS[ep.name] = ep.load()


def scenario_names() -> list[str]:
    """Every scenario name known: built in and registered through entry points."""
    _load_entry_points()
    return sorted(_SCENARIOS)


def get_scenario(name: str, **args: Any) -> Scenario:
    """Build a scenario by name with its arguments; unknown names list the known ones."""
    if name not in _SCENARIOS:
        _load_entry_points()
    try:
        factory = _SCENARIOS[name]
    except KeyError:
        known = ", ".join(scenario_names())
        raise KeyError(f"unknown scenario {name!r}; known scenarios: {known}") from None
    try:
        return factory(**args)
    except TypeError as exc:
        raise ValueError(f"scenario {name!r}: bad arguments {args!r}: {exc}") from None


def split(instances: Iterable[Instance], name: str) -> list[Instance]:
    """The instances of one split, in their original order."""
    return [i for i in instances if i.split == name]
