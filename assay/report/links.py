"""The explorer's file names and links: every page, data file and export path."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

_SAFE_NAME = re.compile(r"[A-Za-z0-9._@-]+")


def slug(key: str) -> str:
    """A file-name-safe form of a key; keys with other characters get a digest suffix, so
    two keys never share a file."""
    if _SAFE_NAME.fullmatch(key) and not key.startswith("."):
        return key
    cleaned = re.sub(r"[^A-Za-z0-9._@-]+", "_", key).strip("._")[:60]
    return f"{cleaned}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def day_page(day: str) -> str:
    return f"day-{slug(day)}.html"


def scenario_page(scenario: str) -> str:
    """The scenario page's path within the site."""
    return f"scenario-{slug(scenario)}.html"


def compare_page(a: str, b: str) -> str:
    pair = hashlib.sha256(f"{a}\x00{b}".encode()).hexdigest()[:8]
    return f"compare-{slug(a)}--{slug(b)}-{pair}.html"


def pair_href(a: str, b: str) -> str:
    """The in-browser comparison of any two versions of the newest board (``compare.html``)."""
    return f"compare.html#a={quote(a, safe='')}&b={quote(b, safe='')}"


def instance_href(scenario: str, version: str, instance_id: str) -> str:
    """The instance page's link for one prediction (parameters in the fragment)."""
    # What urlencode(..., quote_via=quote) writes, without its per-call overhead (a
    # comparison page links thousands of instances).
    s, v, i = (quote(x, safe="") for x in (scenario, version, instance_id))
    return f"instance.html#s={s}&v={v}&id={i}"


def data_file(scenario: str, version: str) -> str:
    return f"data/{slug(scenario)}/{slug(version)}.js"


def instances_file(scenario: str) -> str:
    """The scenario's inputs and references, shared by every version's data file."""
    return f"data/{slug(scenario)}/_instances.js"


def jsonl_file(scenario: str, version: str) -> str:
    # Gzipped: a partition's rows repeat the prompts and references, and compress ~10×.
    return f"export/instances/{slug(scenario)}/{slug(version)}.jsonl.gz"


def headline_file(version: str) -> str:
    """A version's headline cells, as the leaderboards' chart last drew them."""
    return f"data/_headline/{slug(version)}.json"


def card_file(scenario: str, version: str) -> str:
    """A version's scorecard on ``scenario`` as its scenario page draws it (version keys
    hold an ``@``, so no version's data file is named like this or the index below)."""
    return f"data/{slug(scenario)}/{slug(version)}.card.js"


def cards_file(scenario: str) -> str:
    """The scenario page's index: the board's versions with a scorecard there, in order."""
    return f"data/{slug(scenario)}/_cards.js"
