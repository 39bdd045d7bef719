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
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from assay.adapters import AdapterSpec, Method
from assay.scenarios import Scenario, get_scenario

# Characters Dagster partition keys cannot hold, plus anything outside a conservative set.
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")

DEFAULT_SUITE = "default.yaml"


def validate_key(key: str, what: str = "partition key") -> str:
    """Refuse keys that would break a partition key (``/ | , [ ]``, ``...``, spaces, …)."""
    if not isinstance(key, str) or not _KEY_RE.match(key) or "..." in key:
        raise ValueError(
            f"invalid {what} {key!r}: use 1-128 letters, digits, '_', '-', '.', '@' "
            "(no '...'), starting with a letter or digit"
        )
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

    def build(self) -> Scenario:
        return get_scenario(self.scenario, **self.args)

    @property
    def metric(self) -> str:
        """The headline metric: given, or the natural one for the adapter's method."""
        if self.primary_metric:
            return self.primary_metric
        return "exact_match" if self.adapter.method is Method.GENERATION else "acc"


@dataclass(frozen=True)
class Suite:
    """An ordered set of scenario configurations, keyed by partition key."""

    scenarios: dict[str, ScenarioConfig]
    source: str = ""

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
}


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate a parsed YAML document; every error names the file and key at fault."""
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), dict):
        raise ValueError(f"{source}: expected a mapping with a 'scenarios' mapping")
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
        entries[str(key)] = ScenarioConfig(
            key=str(key),
            scenario=entry["scenario"],
            args=dict(entry.get("args") or {}),
            adapter=AdapterSpec.from_dict(dict(entry.get("adapter") or {}), where + ".adapter"),
            max_instances=max_instances,
            eval_split=entry.get("eval_split", "test"),
            train_split=entry.get("train_split", "train"),
            primary_metric=entry.get("primary_metric", ""),
        )
    if not entries:
        raise ValueError(f"{source}: the suite has no scenarios")
    return Suite(entries, source=source)


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
