"""The same MlflowClient registry calls against a real ``mlflow server`` and ``assay server``.

One scripted sequence (``STEPS``: create, get, update and search models and versions with
filters, ordering and pages; tags, aliases, stages; missing things; bad filters) runs against
both servers. Each step's outcome is normalized (timestamps, user and run ids are dropped;
lists MLflow answers in database row order are sorted) and the two are compared: the returned
values, or the ``MlflowException`` error code.

A step where assay answers differently on purpose is in ``DECISIONS`` with the reason and what
assay answers instead; the test checks that assay still answers that and that MLflow still
answers differently, so the list (repeated in the README under "Differences from MLflow's
server") cannot silently go stale.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import RegistryServer

mlflow = pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'assay[mlflow]'")
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.store.entities.paged_list import PagedList  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Names:
    """Model names of one run: a fresh prefix, since the MLflow server lives all session."""

    prefix: str

    @property
    def a(self) -> str:
        return f"{self.prefix}alpha"

    @property
    def b(self) -> str:
        return f"{self.prefix}beta"

    @property
    def c(self) -> str:
        return f"{self.prefix}gamma"

    @property
    def like(self) -> str:
        """A filter for this run's models only."""
        return f"name LIKE '{self.prefix}%'"


@dataclass(frozen=True)
class Step:
    name: str
    call: Callable[[Any, Names], Any]
    role: str = "writer"  # the assay token it runs with; MLflow's server has no auth


def _number(version: Any) -> int:
    return int(version.version)


def _pages(search: Callable[..., PagedList], per_page: int) -> list[list[Any]]:
    """Every page of a search, following the tokens."""
    pages, token = [], None
    for _ in range(20):
        page = search(max_results=per_page, page_token=token)
        pages.append(list(page))
        token = page.token
        if not token:
            return pages
    raise AssertionError("more than 20 pages")


S = Step
STEPS: list[Step] = [
    # -- registered models
    S("create a", lambda c, n: c.create_registered_model(n.a, {"team": "eval"}, "first")),
    S("create b", lambda c, n: c.create_registered_model(n.b, tags={"team": "ops"})),
    S("create c", lambda c, n: c.create_registered_model(n.c)),
    S("create a again", lambda c, n: c.create_registered_model(n.a)),
    S("create empty name", lambda c, n: c.create_registered_model("")),
    S("create name with slash", lambda c, n: c.create_registered_model(f"{n.a}/x")),
    S("get a", lambda c, n: c.get_registered_model(n.a)),
    S("get c", lambda c, n: c.get_registered_model(n.c)),
    S("get missing model", lambda c, n: c.get_registered_model(f"{n.prefix}missing")),
    S("update a", lambda c, n: c.update_registered_model(n.a, description="second")),
    S("update missing model", lambda c, n: c.update_registered_model(f"{n.prefix}x", "d")),
    # (before any tag or alias: they move assay's last_updated_timestamp, not MLflow's)
    S(
        "models by update DESC",
        lambda c, n: c.search_registered_models(n.like, order_by=["last_updated_timestamp DESC"]),
    ),
    S(
        "models by timestamp DESC",
        lambda c, n: c.search_registered_models(n.like, order_by=["timestamp DESC"]),
    ),
    S(
        "models by update ASC, name DESC",
        lambda c, n: c.search_registered_models(
            n.like, order_by=["last_updated_timestamp ASC", "name DESC"]
        ),
    ),
    S("set model tag", lambda c, n: c.set_registered_model_tag(n.a, "owner", "walt")),
    S("set model tag tier", lambda c, n: c.set_registered_model_tag(n.a, "tier", "gold")),
    S("delete model tag", lambda c, n: c.delete_registered_model_tag(n.a, "tier")),
    S("delete absent model tag", lambda c, n: c.delete_registered_model_tag(n.a, "nope")),
    S("set tag on missing model", lambda c, n: c.set_registered_model_tag(n.prefix, "k", "v")),
    S("model after tags", lambda c, n: c.get_registered_model(n.a)),
    # -- versions: a1, b1, a2, b2, a3 (interleaved, so creation order mixes the models)
    S("create a1", lambda c, n: c.create_model_version(n.a, "hf:/w/a1", tags={"i": "1"})),
    S("create b1", lambda c, n: c.create_model_version(n.b, "hf:/w/b1", tags={"i": "1"})),
    S("create a2", lambda c, n: c.create_model_version(n.a, "hf:/w/a2", tags={"i": "2"})),
    S("create b2", lambda c, n: c.create_model_version(n.b, "hf:/w/b2", description="b two")),
    S("create a3", lambda c, n: c.create_model_version(n.a, "hf:/w/a3", tags={"i": "3"})),
    S("create on missing model", lambda c, n: c.create_model_version(n.prefix, "hf:/w/x")),
    S("source without a scheme", lambda c, n: c.create_model_version(n.c, "relative/dir")),
    S("source an absolute path", lambda c, n: c.create_model_version(n.c, "/abs/dir")),
    S("source with ./", lambda c, n: c.create_model_version(n.c, "hf:/w/./x")),
    S("source with ..", lambda c, n: c.create_model_version(n.c, "s3://b/m/../../x")),
    S("tag with an empty key", lambda c, n: c.set_registered_model_tag(n.c, "", "v")),
    S("tag value too long", lambda c, n: c.set_registered_model_tag(n.c, "k", "x" * 5001)),
    S("tag value at the limit", lambda c, n: c.set_registered_model_tag(n.c, "k", "x" * 5000)),
    S("delete tag k of c", lambda c, n: c.delete_registered_model_tag(n.c, "k")),
    S("get a2", lambda c, n: c.get_model_version(n.a, "2")),
    S("get a9", lambda c, n: c.get_model_version(n.a, "9")),
    S("get version of missing model", lambda c, n: c.get_model_version(n.prefix, "1")),
    S("get version 'x'", lambda c, n: c.get_model_version(n.a, "x")),
    S("download uri a3", lambda c, n: c.get_model_version_download_uri(n.a, "3")),
    S("download uri a9", lambda c, n: c.get_model_version_download_uri(n.a, "9")),
    S("model with versions", lambda c, n: c.get_registered_model(n.a)),
    # -- searching versions while last_updated_timestamp is still the creation time
    S("versions, default order", lambda c, n: c.search_model_versions(n.like)),
    S("versions of a", lambda c, n: c.search_model_versions(f"name = '{n.a}'")),
    S(
        "versions of a, ascending",
        lambda c, n: c.search_model_versions(f"name='{n.a}'", order_by=["version_number ASC"]),
    ),
    S(
        "versions by number ascending",
        lambda c, n: c.search_model_versions(n.like, order_by=["version_number ASC"]),
    ),
    S(
        "versions by name descending",
        lambda c, n: c.search_model_versions(n.like, order_by=["name DESC"]),
    ),
    S(
        "versions by creation ascending",
        lambda c, n: c.search_model_versions(n.like, order_by=["creation_timestamp ASC"]),
    ),
    S(
        "versions by update, then number",
        lambda c, n: c.search_model_versions(
            n.like, order_by=["last_updated_timestamp DESC", "version_number ASC"]
        ),
    ),
    S(
        "versions in pages of 2",
        lambda c, n: _pages(lambda **kw: c.search_model_versions(n.like, **kw), 2),
    ),
    S(
        "versions of a in pages of 2",
        lambda c, n: _pages(lambda **kw: c.search_model_versions(f"name = '{n.a}'", **kw), 2),
    ),
    S(
        "versions number >= 2",
        lambda c, n: c.search_model_versions(f"{n.like} AND version_number >= 2"),
    ),
    S(
        "versions number != 1",
        lambda c, n: c.search_model_versions(f"{n.like} AND version_number != 1"),
    ),
    S("versions tag =", lambda c, n: c.search_model_versions(f"{n.like} AND tags.i = '1'")),
    S("versions tag !=", lambda c, n: c.search_model_versions(f"{n.like} AND tags.i != '1'")),
    S(
        "versions tag LIKE",
        lambda c, n: c.search_model_versions(f"{n.like} AND tag.`i` LIKE '%3'"),
    ),
    S(
        "versions source LIKE",
        lambda c, n: c.search_model_versions(f"{n.like} AND source_path LIKE '%/a_'"),
    ),
    S(
        "versions source =",
        lambda c, n: c.search_model_versions(f"source_path = 'hf:/w/b2' AND {n.like}"),
    ),
    S(
        "versions name IN",
        lambda c, n: c.search_model_versions(f"name IN ('{n.b}', '{n.c}')"),
    ),
    S("versions run_id", lambda c, n: c.search_model_versions(f"{n.like} AND run_id = 'r'")),
    S("versions of missing model", lambda c, n: c.search_model_versions("name = 'nothing'")),
    S(
        "versions name ILIKE",
        lambda c, n: c.search_model_versions(f"name ILIKE '{n.prefix.upper()}A%'"),
    ),
    S("versions filter OR", lambda c, n: c.search_model_versions(f"{n.like} OR name = 'x'")),
    S("versions filter unknown key", lambda c, n: c.search_model_versions("size = 3")),
    S(
        "versions number not a number",
        lambda c, n: c.search_model_versions("version_number = 'x'"),
    ),
    S(
        "versions number LIKE",
        lambda c, n: c.search_model_versions("version_number LIKE '1'"),
    ),
    S(
        "versions order_by unknown key",
        lambda c, n: c.search_model_versions(n.like, order_by=["size DESC"]),
    ),
    S(
        "versions order_by bad direction",
        lambda c, n: c.search_model_versions(n.like, order_by=["name SIDEWAYS"]),
    ),
    S(
        "versions number quoted",
        lambda c, n: c.search_model_versions(f"{n.like} AND version_number = '2'"),
    ),
    S(
        "versions number IN",
        lambda c, n: c.search_model_versions(f"{n.like} AND version_number IN (1, 2)"),
    ),
    S(
        "versions number <>",
        lambda c, n: c.search_model_versions(f"{n.like} AND version_number <> 1"),
    ),
    S(
        "versions number 1.5",
        lambda c, n: c.search_model_versions(f"{n.like} AND version_number = 1.5"),
    ),
    S("versions run_id !=", lambda c, n: c.search_model_versions(f"{n.like} AND run_id != 'r'")),
    S("versions run_id IN", lambda c, n: c.search_model_versions(f"{n.like} AND run_id IN ('r')")),
    S(
        "versions source IN",
        lambda c, n: c.search_model_versions(f"{n.like} AND source_path IN ('x')"),
    ),
    S("versions tag IN", lambda c, n: c.search_model_versions(f"{n.like} AND tags.i IN ('1')")),
    S(
        "versions tag unquoted number",
        lambda c, n: c.search_model_versions(f"{n.like} AND tags.i = 1"),
    ),
    S("versions name unquoted number", lambda c, n: c.search_model_versions("name = 3")),
    S("versions name <", lambda c, n: c.search_model_versions(f"{n.like} AND name < 'z'")),
    S(
        "versions order_by timestamp",
        lambda c, n: c.search_model_versions(n.like, order_by=["timestamp DESC"]),
    ),
    S("versions max_results 0", lambda c, n: c.search_model_versions(n.like, max_results=0)),
    S(
        "versions max_results too big",
        lambda c, n: c.search_model_versions(n.like, max_results=200_001),
    ),
    # -- version updates and tags
    S("update a2", lambda c, n: c.update_model_version(n.a, "2", description="a two")),
    S("update a9", lambda c, n: c.update_model_version(n.a, "9", description="x")),
    S("set version tag", lambda c, n: c.set_model_version_tag(n.a, "2", "k", "v")),
    S("delete version tag", lambda c, n: c.delete_model_version_tag(n.a, "2", "i")),
    S("delete absent version tag", lambda c, n: c.delete_model_version_tag(n.a, "2", "no")),
    S("set tag on a9", lambda c, n: c.set_model_version_tag(n.a, "9", "k", "v")),
    S("a2 after tags", lambda c, n: c.get_model_version(n.a, "2")),
    # -- aliases
    S("set challenger", lambda c, n: c.set_registered_model_alias(n.a, "challenger", "2")),
    S("set candidate", lambda c, n: c.set_registered_model_alias(n.a, "candidate", "2")),
    S("a2 with aliases", lambda c, n: c.get_model_version(n.a, "2")),
    S("by alias", lambda c, n: c.get_model_version_by_alias(n.a, "challenger")),
    S("move challenger", lambda c, n: c.set_registered_model_alias(n.a, "challenger", "3")),
    S("by moved alias", lambda c, n: c.get_model_version_by_alias(n.a, "challenger")),
    S("model with aliases", lambda c, n: c.get_registered_model(n.a)),
    S("by missing alias", lambda c, n: c.get_model_version_by_alias(n.a, "nobody")),
    S("by alias of missing model", lambda c, n: c.get_model_version_by_alias(n.prefix, "x")),
    S("by alias latest", lambda c, n: c.get_model_version_by_alias(n.a, "latest")),
    S(
        "latest of a model without versions",
        lambda c, n: c.get_model_version_by_alias(n.c, "latest"),
    ),
    S("by alias LATEST", lambda c, n: c.get_model_version_by_alias(n.a, "LATEST")),
    S("by alias v1", lambda c, n: c.get_model_version_by_alias(n.a, "v1")),
    S("alias with a dot", lambda c, n: c.set_registered_model_alias(n.a, "a.b", "1")),
    S("alias Latest", lambda c, n: c.set_registered_model_alias(n.a, "Latest", "1")),
    S("alias V7", lambda c, n: c.set_registered_model_alias(n.a, "V7", "1")),
    S("alias to a9", lambda c, n: c.set_registered_model_alias(n.a, "challenger", "9")),
    S("alias latest", lambda c, n: c.set_registered_model_alias(n.a, "latest", "1")),
    S("alias v7", lambda c, n: c.set_registered_model_alias(n.a, "v7", "1")),
    S("alias with a space", lambda c, n: c.set_registered_model_alias(n.a, "a b", "1")),
    S("delete candidate", lambda c, n: c.delete_registered_model_alias(n.a, "candidate")),
    S("delete absent alias", lambda c, n: c.delete_registered_model_alias(n.a, "nobody")),
    S("delete alias, missing model", lambda c, n: c.delete_registered_model_alias(n.prefix, "x")),
    S("a2 after alias moves", lambda c, n: c.get_model_version(n.a, "2")),
    # -- stages
    S(
        "a1 to Production",
        lambda c, n: c.transition_model_version_stage(n.a, "1", "Production"),
        "promoter",
    ),
    S(
        "a3 to Production, archiving",
        lambda c, n: c.transition_model_version_stage(n.a, "3", "production", True),
        "promoter",
    ),
    S(
        "b1 to Staging",
        lambda c, n: c.transition_model_version_stage(n.b, "1", "Staging"),
        "promoter",
    ),
    S(
        "to a bad stage",
        lambda c, n: c.transition_model_version_stage(n.a, "2", "Prod"),
        "promoter",
    ),
    S(
        "a9 to Staging",
        lambda c, n: c.transition_model_version_stage(n.a, "9", "Staging"),
        "promoter",
    ),
    S(
        "a2 to none, lower case",
        lambda c, n: c.transition_model_version_stage(n.a, "2", "none"),
        "promoter",
    ),
    S(
        "latest production, lower case",
        lambda c, n: c.get_latest_versions(n.a, stages=["production"]),
    ),
    S("describe c", lambda c, n: c.update_registered_model(n.c, description="gamma")),
    S("clear c's description", lambda c, n: c.update_registered_model(n.c, description="")),
    S("clear b2's description", lambda c, n: c.update_model_version(n.b, "2", description="")),
    S("set b2's description", lambda c, n: c.update_model_version(n.b, "2", description="b two")),
    S("a1 after archiving", lambda c, n: c.get_model_version(n.a, "1")),
    # (sorted: MLflow answers in its database's row order)
    S("latest versions of a", lambda c, n: sorted(c.get_latest_versions(n.a), key=_number)),
    S("latest Archived of a", lambda c, n: c.get_latest_versions(n.a, stages=["Archived"])),
    S("latest Staging of c", lambda c, n: c.get_latest_versions(n.c, stages=["Staging"])),
    S("latest of a bad stage", lambda c, n: c.get_latest_versions(n.a, stages=["Prod"])),
    S("latest of missing model", lambda c, n: c.get_latest_versions(n.prefix)),
    S("a with stages", lambda c, n: c.get_registered_model(n.a)),
    # -- searching models
    S("models", lambda c, n: c.search_registered_models(n.like)),
    S(
        "models by name DESC",
        lambda c, n: c.search_registered_models(n.like, order_by=["name DESC"]),
    ),
    S("models tag =", lambda c, n: c.search_registered_models(f"{n.like} AND tags.team = 'eval'")),
    S("models tag !=", lambda c, n: c.search_registered_models(f"{n.like} AND tags.team != 'ops'")),
    S(
        "models tag ILIKE",
        lambda c, n: c.search_registered_models(f"tags.team ILIKE 'EV%' AND {n.like}"),
    ),
    S("models name =", lambda c, n: c.search_registered_models(f"name = '{n.b}'")),
    S("models name !=", lambda c, n: c.search_registered_models(f"{n.like} AND name != '{n.b}'")),
    S("models name IN", lambda c, n: c.search_registered_models(f"name IN ('{n.a}', '{n.c}')")),
    S(
        "models name NOT IN",
        lambda c, n: c.search_registered_models(f"{n.like} AND name NOT IN ('{n.a}')"),
    ),
    S(
        "models name ILIKE",
        lambda c, n: c.search_registered_models(f"name ILIKE '{n.prefix.upper()}%'"),
    ),
    S(
        "models in pages of 2",
        lambda c, n: _pages(lambda **kw: c.search_registered_models(n.like, **kw), 2),
    ),
    S("models filter OR", lambda c, n: c.search_registered_models(f"{n.like} OR name = 'x'")),
    S("models filter unknown key", lambda c, n: c.search_registered_models("version_number = 1")),
    S("models name >", lambda c, n: c.search_registered_models("name > 'a'")),
    S("models tag IN", lambda c, n: c.search_registered_models("tags.team IN ('eval')")),
    S("models unparsable filter", lambda c, n: c.search_registered_models("name = ")),
    S(
        "models order_by unknown key",
        lambda c, n: c.search_registered_models(n.like, order_by=["size"]),
    ),
    S(
        "models max_results too big",
        lambda c, n: c.search_registered_models(n.like, max_results=1001),
    ),
    S(
        "models bad page token",
        lambda c, n: c.search_registered_models(n.like, page_token="not-a-token"),
    ),
    # -- where assay answers differently on purpose (DECISIONS); last, as they change state
    S("versions, default order, after updates", lambda c, n: c.search_model_versions(n.like)),
    S("tag b", lambda c, n: c.set_registered_model_tag(n.b, "late", "yes")),
    S(
        "models by update DESC, after a tag",
        lambda c, n: c.search_registered_models(n.like, order_by=["last_updated_timestamp DESC"]),
    ),
    S(
        "models by creation ASC",
        lambda c, n: c.search_registered_models(n.like, order_by=["creation_timestamp ASC"]),
    ),
    S(
        "models order_by twice",
        lambda c, n: c.search_registered_models(n.like, order_by=["name", "name DESC"]),
    ),
    S(
        "versions order_by twice",
        lambda c, n: c.search_model_versions(n.like, order_by=["name ASC", "name DESC"]),
    ),
    S("models max_results 0", lambda c, n: c.search_registered_models(n.like, max_results=0)),
    S(
        "archive Archived versions",
        lambda c, n: c.transition_model_version_stage(n.b, "2", "Archived", True),
        "promoter",
    ),
    S("an opaque source", lambda c, n: c.create_model_version(n.c, "bundled:smollm2-135m")),
    S("gated alias by a writer", lambda c, n: c.set_registered_model_alias(n.b, "champion", "1")),
    S("reserved tag", lambda c, n: c.set_model_version_tag(n.b, "1", "gate.boolq", "passed")),
    S("name with a space", lambda c, n: c.create_registered_model(f"{n.prefix}with space")),
    S("delete b2", lambda c, n: c.delete_model_version(n.b, "2")),
    S("delete c", lambda c, n: c.delete_registered_model(n.c)),
    S("rename a", lambda c, n: c.rename_registered_model(n.a, f"{n.prefix}delta")),
]


@dataclass(frozen=True)
class Decision:
    """A step assay answers differently on purpose: why, what assay answers instead (an error
    code, or a check of its normalized outcome), and the README's words for it."""

    reason: str
    assay: str | Callable[[Any, Names], bool]
    readme: str  # appears in the README's "Differences from MLflow's server"


def _short(name: str, names: Names) -> str:
    return {names.a: "a", names.b: "b", names.c: "c"}.get(name, name)


def _order_is(*expected: tuple[str, str]) -> Callable[[Any, Names], bool]:
    """The outcome lists these (model, version) pairs, model ``a``/``b``/``c``, in this order."""

    def check(out: Any, names: Names) -> bool:
        got = [(_short(v["name"], names), v["version"]) for v in out["items"]]
        return got == list(expected)

    return check


def _models_are(*expected: str) -> Callable[[Any, Names], bool]:
    def check(out: Any, names: Names) -> bool:
        return [_short(m["name"], names) for m in out["items"]] == list(expected)

    return check


PERMANENT = "Deleting or renaming"
DECISIONS: dict[str, Decision] = {
    "delete b2": Decision(
        "registry entries are permanent: a version key `name@vN` is a Dagster partition key "
        "with stored results, and the event log names models",
        "NOT_IMPLEMENTED",
        PERMANENT,
    ),
    "delete c": Decision("registry entries are permanent", "NOT_IMPLEMENTED", PERMANENT),
    "rename a": Decision("registry entries are permanent", "NOT_IMPLEMENTED", PERMANENT),
    "name with a space": Decision(
        "names are partition keys: letters, digits, `_`, `-` and `.` only",
        "INVALID_PARAMETER_VALUE",
        "Names",
    ),
    "an opaque source": Decision(
        "assay's loaders read sources such as `bundled:name` and `openai:http://host/v1#m`, "
        "which MLflow's server refuses as relative paths",
        lambda out, names: out["source"] == "bundled:smollm2-135m",
        "Sources",
    ),
    "gated alias by a writer": Decision(
        "moving a gated alias (`champion`) needs the promoter role",
        "PERMISSION_DENIED",
        "Roles",
    ),
    "reserved tag": Decision(
        "`gate.*` and `eval.*` tags are written only by the regression gate and the "
        "evaluation recorder",
        "INVALID_PARAMETER_VALUE",
        "Reserved tags",
    ),
    "tag value too long": Decision(
        "a tag value holds at most 5,000 characters (MLflow's registry takes 100,000)",
        "INVALID_PARAMETER_VALUE",
        "Tag values",
    ),
    "versions, default order, after updates": Decision(
        "a version's last_updated_timestamp is its creation time, so the default order "
        "(last_updated_timestamp DESC, name, version_number DESC) is creation order",
        _order_is(("a", "3"), ("b", "2"), ("a", "2"), ("b", "1"), ("a", "1")),
        "Timestamps",
    ),
    "models by update DESC, after a tag": Decision(
        "a model's last_updated_timestamp moves with every change to it or its versions, "
        "tags included",
        _models_are("b", "c", "a"),
        "Timestamps",
    ),
    "models by creation ASC": Decision(
        "models can be ordered by creation_timestamp (MLflow's SQL store refuses the key)",
        _models_are("a", "b", "c"),
        "creation_timestamp",
    ),
    "models order_by twice": Decision(
        "a bad request is a 400 INVALID_PARAMETER_VALUE; MLflow answers a 500 INTERNAL_ERROR",
        "INVALID_PARAMETER_VALUE",
        "INTERNAL_ERROR",
    ),
    "versions order_by twice": Decision(
        "a bad request is a 400 (see above)", "INVALID_PARAMETER_VALUE", "INTERNAL_ERROR"
    ),
    "archive Archived versions": Decision(
        "a bad request is a 400 (see above)", "INVALID_PARAMETER_VALUE", "INTERNAL_ERROR"
    ),
    "models max_results 0": Decision(
        "MLflow answers no models and a next page token that does not advance",
        "INVALID_PARAMETER_VALUE",
        "max_results=0",
    ),
}


# --------------------------------------------------------------------------- normalizing


def _version(v: Any) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "stage": v.current_stage,
        "description": v.description or "",
        "source": v.source,
        "status": v.status,
        "tags": dict(v.tags),
        "aliases": sorted(v.aliases),
    }


def _model(m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "description": m.description or "",
        "tags": dict(m.tags),
        "aliases": dict(m.aliases),
        # MLflow lists them in its database's row order (SQL without ORDER BY): not compared
        "latest_versions": sorted(
            (_version(v) for v in m.latest_versions or []), key=lambda v: int(v["version"])
        ),
    }


def normalize(value: Any) -> Any:
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

    if isinstance(value, PagedList):
        return {"items": [normalize(v) for v in value], "next_page": bool(value.token)}
    if isinstance(value, ModelVersion):
        return _version(value)
    if isinstance(value, RegisteredModel):
        return _model(value)
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def run(client: Any, names: Names, use_role: Callable[[str], None]) -> dict[str, Any]:
    """Every step's normalized outcome: its value, or ``("error", code)``."""
    outcomes: dict[str, Any] = {}
    for step in STEPS:
        use_role(step.role)
        try:
            outcomes[step.name] = normalize(step.call(client, names))
        except MlflowException as exc:
            outcomes[step.name] = ("error", exc.error_code)
        time.sleep(0.005)  # distinct millisecond timestamps, so orders by time are defined
    return outcomes


def _unprefixed(value: Any, prefix: str) -> Any:
    return repr(value).replace(prefix, "")


# --------------------------------------------------------------------------- the test


def test_the_mlflow_client_gets_the_answers_mlflow_gives(
    mlflow_uri: str, start_registry_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refusals fail at once
    # champion gated as deployed (its role check is a documented difference); stages are not,
    # so the stage steps compare MLflow's answers with moves made at once.
    monkeypatch.setenv("ASSAY_GATED_ALIASES", "champion")
    registry_server: RegistryServer = start_registry_server()
    names = Names(f"par{uuid.uuid4().hex[:8]}-")

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    reference_client = mlflow.MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    try:
        reference = run(reference_client, names, lambda role: None)
    finally:
        # The MLflow server is the session's: leave no models (or aliases) for other tests.
        for model in reference_client.search_registered_models(names.like):
            reference_client.delete_registered_model(model.name)
    tokens = {"writer": registry_server.tokens["walt"], "promoter": registry_server.tokens["pat"]}
    answers = run(
        mlflow.MlflowClient(tracking_uri=registry_server.url, registry_uri=registry_server.url),
        names,
        lambda role: monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", tokens[role]),
    )

    differences = [
        f"{step.name}:\n  mlflow: {_unprefixed(reference[step.name], names.prefix)}\n"
        f"  assay:  {_unprefixed(answers[step.name], names.prefix)}"
        for step in STEPS
        if step.name not in DECISIONS and reference[step.name] != answers[step.name]
    ]
    assert not differences, "assay answers differently from MLflow:\n" + "\n".join(differences)

    for name, decision in DECISIONS.items():
        got = answers[name]
        if isinstance(decision.assay, str):
            assert got == ("error", decision.assay), f"{name}: assay answered {got}"
        else:
            assert decision.assay(got, names), f"{name}: assay answered {got}"
        assert reference[name] != got, f"{name}: MLflow now answers as assay does; drop it"


def test_every_decision_is_a_step_and_in_the_readme() -> None:
    steps = {s.name for s in STEPS}
    assert len(steps) == len(STEPS), "step names must be unique"
    assert set(DECISIONS) <= steps
    text = README.read_text()
    heading = "### Differences from MLflow's server"
    assert heading in text
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    missing = {d.readme for d in DECISIONS.values() if d.readme not in section}
    assert not missing, f"the README's list of differences does not mention {missing}"
