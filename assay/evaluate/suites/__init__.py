"""The suite files shipped with assay, named by their file name without ``.yaml``.

``default`` is the demo's suite (generated scenarios, no download). The others are the
standard suites people report: ``open-llm-leaderboard-v2`` (lm-eval's leaderboard tasks),
``helm-classic-core`` (HELM Classic's core scenarios through the native loaders and the HELM
bridge) and ``helm-capabilities`` (HELM Capabilities' scenarios where they can be reached).
A suite is chosen by name wherever a path is accepted (``$ASSAY_SUITE``, the suite resource,
``assay suite``); the comments in each file say which entries need a hub, a judge or the
sandbox.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def shipped_suites() -> list[str]:
    """The names of the shipped suites, sorted."""
    folder = resources.files(__name__)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and _NAME.fullmatch(entry.name.removesuffix(".yaml"))
    )


def is_shipped(name: str) -> bool:
    """Whether ``name`` is a shipped suite's name (not a path)."""
    return bool(_NAME.fullmatch(name)) and name in shipped_suites()


def read_shipped(name: str) -> tuple[str, str]:
    """The text of a shipped suite and the source name errors cite."""
    if not is_shipped(name):
        raise ValueError(f"unknown suite {name!r}; shipped suites: {', '.join(shipped_suites())}")
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text("utf-8")
    return text, f"assay/evaluate/suites/{name}.yaml"


def description(text: str) -> str:
    """A suite file's first comment line: what the suite is."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""
