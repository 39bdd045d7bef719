"""MLflow's Model Registry REST API (``/api/2.0/mlflow/...``) over assay's registry.

Field names and shapes follow MLflow's ``model_registry.proto`` (JSON names in snake_case, as
MLflow's server writes them); versions are strings, timestamps milliseconds.

Answers follow MLflow's server with its SQL store (``tests/test_mlflow_parity.py`` runs the
same client calls against both): error codes (a missing alias is INVALID_PARAMETER_VALUE, a
missing model RESOURCE_DOES_NOT_EXIST; deleting a tag or alias that is not there is no error),
filter comparators, and orders with their tie-breaks (versions by default
``last_updated_timestamp DESC, name ASC, version_number DESC``).

Decisions where the two registries differ (the README's "Differences from MLflow's server"):
- Deleting and renaming models and versions answer NOT_IMPLEMENTED (501). A version key
  ``name@vN`` is a Dagster partition key with stored outputs, and the event log names models:
  history that can be deleted or renamed away is not history. Archive a version with the
  ``Archived`` stage or remove its aliases instead.
- A version's ``last_updated_timestamp`` is its creation time (assay stores no update time per
  version; the event log has every change), so the default order of versions is creation
  order. A model's moves with any change to it or its versions. ``run_id`` and ``run_link``
  are accepted and not kept. ``user_id`` is filled in the answer to create (the authenticated
  principal); the event log (``/api/assay/v1/events``) says who did what to every version.
- Tags ``gate.*`` and ``eval.*`` are written only by the regression gate and the evaluation
  recorder; setting or deleting them here is refused whatever the caller's role.
- Moving a gated alias (``champion`` by default) needs the ``promoter`` role, as does any stage
  transition; other writes need ``writer``; reads ``reader``.
- Requests MLflow answers with a 500 (a key twice in ``order_by``, archiving other versions
  into a stage other than Staging or Production) are INVALID_PARAMETER_VALUE (400);
  ``max_results`` is at least 1.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from assay.registry.entities import ModelVersion, RegisteredModel, Stage
from assay.registry.errors import ErrorCode, RegistryError
from assay.registry.limits import check_public_tag_key, check_public_tags
from assay.registry.tokens import Role
from assay.server.http import ApiError, Call, Handler, invalid, millis
from assay.server.search import (
    Comparison,
    decode_page_token,
    encode_page_token,
    parse_filter,
    parse_order_by,
)

MODELS_MAX_RESULTS = 1000
VERSIONS_MAX_RESULTS = 200_000


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    role: Role


# --------------------------------------------------------------------------- shapes


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def version_json(
    version: ModelVersion, user_id: str = "", *, aliases: bool = True
) -> dict[str, Any]:
    created = millis(version.created_at)
    return {
        "name": version.model,
        "version": str(version.version),
        "creation_timestamp": created,
        "last_updated_timestamp": created,
        "user_id": user_id,
        "current_stage": version.stage.value,
        "description": version.description,
        "source": version.source,
        "run_id": "",
        "status": version.status,
        "tags": _tags(version.tags),
        "aliases": list(version.aliases) if aliases else [],
    }


def model_json(model: RegisteredModel, latest: list[ModelVersion]) -> dict[str, Any]:
    """``latest``: the newest version in each stage, as ``Registry.latest_versions`` gives.

    As in MLflow, the versions in ``latest_versions`` carry no aliases (the model's ``aliases``
    has them); ``get-latest-versions`` answers them with their aliases."""
    return {
        "name": model.name,
        "creation_timestamp": millis(model.created_at),
        "last_updated_timestamp": millis(model.updated_at),
        "description": model.description,
        "latest_versions": [version_json(v, aliases=False) for v in latest],
        "tags": _tags(model.tags),
        "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(model.aliases.items())],
    }


# --------------------------------------------------------------------------- helpers


def _version_number(call: Call) -> int:
    return call.integer("version")


def _model_payload(call: Call, name: str) -> dict[str, Any]:
    model = call.registry.get_model(name)
    return {"registered_model": model_json(model, call.registry.latest_versions(name))}


def _version_payload(call: Call, name: str, number: int) -> dict[str, Any]:
    version = call.registry.resolve(f"models:/{name}/{number}")
    return {"model_version": version_json(version)}


def _public_tags(tags: dict[str, str]) -> dict[str, str]:
    check_public_tags(tags)
    return tags


def _not_offered(what: str) -> ApiError:
    return ApiError(
        "NOT_IMPLEMENTED",
        f"{what} is not offered: version keys are partition keys with stored results and the "
        "event log names models, so registry entries are permanent. Archive a version with "
        "the Archived stage, or remove its aliases.",
    )


def _missing(exc: RegistryError) -> bool:
    return exc.code is ErrorCode.RESOURCE_DOES_NOT_EXIST


# --------------------------------------------------------------------------- MLflow's rules

# MLflow's alias rule (word characters and '-'), and the aliases it reserves in any letter case:
# "latest" (the newest version) and version-like words ("v3", "V3").
_MLFLOW_ALIAS = re.compile(r"[\w\-]+")
_VERSION_ALIAS = re.compile(r"[vV]\d+")


def _check_alias_name(alias: str) -> str:
    if not _MLFLOW_ALIAS.fullmatch(alias):
        raise invalid(
            f"invalid alias name {alias!r}: aliases contain only letters, digits, '_' and '-'"
        )
    return alias


def _check_alias_not_reserved(alias: str) -> None:
    if alias.lower() == "latest":
        raise invalid("'latest' alias name (case insensitive) is reserved")
    if _VERSION_ALIAS.fullmatch(alias):
        raise invalid(f"version alias name {alias!r} is reserved")


def _check_source(source: str) -> str:
    """MLflow's server refuses a source that climbs out of its path (``..`` or ``.`` segments,
    also percent-encoded) or holds a NUL; so does this one. Opaque sources (``bundled:name``,
    ``openai:http://host/v1#model``) have no path to check."""
    decoded = source
    while (unquoted := urllib.parse.unquote_plus(decoded)) != decoded:
        decoded = unquoted
    path = re.sub(r"/+", "/", urllib.parse.urlparse(decoded).path.rstrip("/"))
    relative = path.startswith("/") and posixpath.normpath(path) != path
    if "\x00" in decoded or ".." in decoded.split("/") or relative:
        raise invalid(
            f"invalid model version source {source!r}: give an absolute path without relative "
            "path references ('..', '.')"
        )
    return source


# MLflow's SQL store: which comparators each kind of filter key takes.
_PROMPT_TAG = "mlflow.prompt.is_prompt"
_TAG_OPS = ("=", "!=", "LIKE", "ILIKE")
_NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")


def _asks_for_prompts(term: Comparison) -> bool:
    value = str(term.value).lower()
    return (term.op == "=" and value == "true") or (term.op == "!=" and value == "false")


def _mlflow_terms(
    terms: list[Comparison], *, numeric: Sequence[str] = (), lists: Sequence[str] = ("name",)
) -> list[Comparison]:
    """Refuse what MLflow's SQL store refuses (INVALID_PARAMETER_VALUE), whether or not any
    record would be compared: comparators a key does not take, numbers for text, text that is
    not an integer for ``version_number``, ``IN`` outside ``lists``. A term on MLflow's prompt
    tag is dropped unless it asks for prompts, as MLflow drops it (assay keeps prompts apart)."""
    kept = []
    for term in terms:
        what = f"{term.op} on {term.key!r}"
        if term.tag is not None:
            if term.op not in _TAG_OPS:
                raise invalid(f"invalid comparator {what}: tags take =, !=, LIKE or ILIKE")
            if not isinstance(term.value, str):
                raise invalid(f"invalid value {term.value!r} for {term.key!r}: quote it")
            if term.tag == _PROMPT_TAG and not _asks_for_prompts(term):
                continue
        elif term.key in numeric:
            if term.op not in _NUMERIC_OPS:
                raise invalid(f"invalid comparator {what}: use one of {' '.join(_NUMERIC_OPS)}")
            value = term.value
            if isinstance(value, float) or not str(value).strip().lstrip("-").isdigit():
                raise invalid(f"invalid value {value!r} for numeric attribute {term.key!r}")
        else:
            if term.op not in _STRING_OPS or (
                term.op in ("IN", "NOT IN") and term.key not in lists
            ):
                raise invalid(f"invalid comparator {what}")
            if not isinstance(term.value, str | tuple):
                raise invalid(f"invalid value {term.value!r} for {term.key!r}: quote it")
        kept.append(term)
    return kept


def _order(
    clauses: list[str], allowed: Sequence[str], same: dict[str, str] | None = None
) -> list[tuple[str, bool]]:
    """``parse_order_by``, with MLflow's spellings folded (``same``) and a key named twice
    refused (MLflow's SQL store refuses it too, as an INTERNAL_ERROR)."""
    order = [((same or {}).get(key, key), desc) for key, desc in parse_order_by(clauses, allowed)]
    keys = [key for key, _ in order]
    if len(set(keys)) != len(keys):
        raise invalid(f"order_by names a key twice: {clauses}")
    return order


# --------------------------------------------------------------------------- registered models


def create_registered_model(call: Call) -> dict[str, Any]:
    name = call.text("name")
    call.require(Role.WRITER, name)
    tags = _public_tags(call.tags())
    description = call.text("description", required=False)
    call.registry.create_model(name, description, tags, actor=call.actor)
    return _model_payload(call, name)


def get_registered_model(call: Call) -> dict[str, Any]:
    return _model_payload(call, call.text("name"))


def update_registered_model(call: Call) -> dict[str, Any]:
    name = call.text("name")
    call.require(Role.WRITER, name)
    description = call.optional_text("description")
    if description is not None:
        call.registry.set_description(name, description, actor=call.actor)
    return _model_payload(call, name)


def rename_registered_model(call: Call) -> dict[str, Any]:
    call.require(Role.WRITER, call.text("name"))
    raise _not_offered("renaming a registered model")


def delete_registered_model(call: Call) -> dict[str, Any]:
    call.require(Role.WRITER, call.text("name"))
    raise _not_offered("deleting a registered model")


def search_registered_models(call: Call) -> dict[str, Any]:
    terms = _mlflow_terms(parse_filter(call.optional_text("filter"), ["name"]))
    order = _order(
        call.strings("order_by"),
        ["name", "creation_timestamp", "last_updated_timestamp", "timestamp"],
        {"timestamp": "last_updated_timestamp"},
    )
    limit = call.integer("max_results", default=100)
    if limit > MODELS_MAX_RESULTS:
        raise invalid(f"max_results must be at most {MODELS_MAX_RESULTS}, got {limit}")
    offset = decode_page_token(call.optional_text("page_token"))
    if "name" not in dict(order):
        order.append(("name", False))  # MLflow's tie-break
    found = call.registry.search_models(terms, order, offset, limit)
    out: dict[str, Any] = {
        "registered_models": [
            model_json(m, call.registry.latest_versions(m.name)) for m in found.items
        ]
    }
    if found.more:
        out["next_page_token"] = encode_page_token(offset + limit)
    return out


def get_latest_versions(call: Call) -> dict[str, Any]:
    name = call.text("name")
    stages = [Stage.parse(s) for s in call.strings("stages")] or None
    versions = call.registry.latest_versions(name, stages)
    return {"model_versions": [version_json(v) for v in versions]}


def set_registered_model_tag(call: Call) -> dict[str, Any]:
    name = call.text("name")
    call.require(Role.WRITER, name)
    key = check_public_tag_key(call.text("key"))
    call.registry.set_tag(name, key, call.text("value", required=False), actor=call.actor)
    return {}


def delete_registered_model_tag(call: Call) -> dict[str, Any]:
    name = call.text("name")
    call.require(Role.WRITER, name)
    key = check_public_tag_key(call.text("key"))
    try:
        call.registry.delete_tag(name, key, actor=call.actor)
    except RegistryError as exc:
        if not _missing(exc):
            raise
        call.registry.get_model(name)  # as MLflow: no such tag is no error, no such model is
    return {}


def _alias_role(call: Call, alias: str) -> Role:
    return Role.PROMOTER if alias in call.registry.gated_aliases else Role.WRITER


def set_registered_model_alias(call: Call) -> dict[str, Any]:
    name, alias = call.text("name"), call.text("alias")
    call.require(_alias_role(call, alias), name)
    _check_alias_not_reserved(_check_alias_name(alias))
    call.registry.set_alias(name, alias, _version_number(call), actor=call.actor)
    return {}


def delete_registered_model_alias(call: Call) -> dict[str, Any]:
    name, alias = call.text("name"), call.text("alias")
    call.require(_alias_role(call, alias), name)
    _check_alias_name(alias)
    try:
        call.registry.delete_alias(name, alias, actor=call.actor)
    except RegistryError as exc:
        if not _missing(exc):
            raise
        call.registry.get_model(name)  # as MLflow: no such alias is no error, no such model is
    return {}


def get_model_version_by_alias(call: Call) -> dict[str, Any]:
    """As MLflow: ``latest`` in any letter case is the newest version; an alias the model
    does not have is INVALID_PARAMETER_VALUE, a model that does not exist
    RESOURCE_DOES_NOT_EXIST."""
    name, alias = call.text("name"), _check_alias_name(call.text("alias"))
    if alias.lower() == "latest":
        return {"model_version": version_json(call.registry.resolve(f"models:/{name}"))}
    version = None
    if not _VERSION_ALIAS.fullmatch(alias):  # no alias looks like a version ("@v3" is one)
        try:
            version = call.registry.resolve(f"models:/{name}@{alias}")
        except RegistryError as exc:
            if not _missing(exc):
                raise
    if version is None:
        call.registry.get_model(name)  # RESOURCE_DOES_NOT_EXIST for a missing model
        raise invalid(f"registered model alias {alias} not found")
    return {"model_version": version_json(version)}


# --------------------------------------------------------------------------- model versions


def create_model_version(call: Call) -> dict[str, Any]:
    name = call.text("name")
    call.require(Role.WRITER, name)
    tags = _public_tags(call.tags())
    version = call.registry.create_version(
        name,
        _check_source(call.text("source")),
        description=call.text("description", required=False),
        tags=tags,
        actor=call.actor,
    )
    return {"model_version": version_json(version, call.actor)}


def get_model_version(call: Call) -> dict[str, Any]:
    return _version_payload(call, call.text("name"), _version_number(call))


def update_model_version(call: Call) -> dict[str, Any]:
    name, number = call.text("name"), _version_number(call)
    call.require(Role.WRITER, name)
    description = call.optional_text("description")
    if description is not None:
        call.registry.set_description(name, description, number, actor=call.actor)
    return _version_payload(call, name, number)


def delete_model_version(call: Call) -> dict[str, Any]:
    call.require(Role.WRITER, call.text("name"))
    raise _not_offered("deleting a model version")


def transition_model_version_stage(call: Call) -> dict[str, Any]:
    name, number = call.text("name"), _version_number(call)
    call.require(Role.PROMOTER, name)
    version = call.registry.transition_stage(
        name,
        number,
        call.text("stage"),
        archive_existing_versions=call.boolean("archive_existing_versions"),
        actor=call.actor,
    )
    return {"model_version": version_json(version)}


# MLflow's order when none is asked for, and the tie-breaks it appends to any order.
_VERSIONS_ORDER = [("last_updated_timestamp", True), ("name", False), ("version_number", True)]


def _versions_order(clauses: list[str]) -> list[tuple[str, bool]]:
    order = _order(
        clauses, ["name", "version_number", "creation_timestamp", "last_updated_timestamp"]
    )
    if not order:
        return list(_VERSIONS_ORDER)
    named = dict(order)
    return order + [(key, desc) for key, desc in _VERSIONS_ORDER[1:] if key not in named]


def _by_number(order: list[tuple[str, bool]]) -> bool | None:
    """Whether ``order`` lists one model's versions by number descending (True), ascending
    (False), or neither (None). Within a model, creation time grows with the number (and
    ``last_updated_timestamp`` is the creation time), so a time clause and the number agree;
    equal milliseconds fall through to the next clause, so every clause must agree."""
    direction = None
    for key, descending in order:
        if key == "name":
            continue
        if direction is None:
            direction = descending
        elif direction != descending:
            return None
        if key == "version_number":
            return direction
    return direction


def search_model_versions(call: Call) -> dict[str, Any]:
    attributes = ["name", "version_number", "run_id", "source_path"]
    terms = _mlflow_terms(
        parse_filter(call.optional_text("filter"), attributes),
        numeric=["version_number"],
        lists=["name", "run_id"],
    )
    order = _versions_order(call.strings("order_by"))
    limit = call.integer("max_results", default=10_000)
    if limit > VERSIONS_MAX_RESULTS:
        raise invalid(f"max_results must be at most {VERSIONS_MAX_RESULTS}, got {limit}")
    offset = decode_page_token(call.optional_text("page_token"))
    descending = _by_number(order)
    if len(terms) == 1 and terms[0].key == "name" and terms[0].op == "=" and descending is not None:
        # The common question, one model's versions by number (creation order is the same),
        # is answered a page at a time by the database.
        try:
            page, total = call.registry.versions_page(
                str(terms[0].value), offset, limit, descending=descending
            )
        except RegistryError as exc:
            if not _missing(exc):
                raise
            page, total = [], 0
        answer: dict[str, Any] = {"model_versions": [version_json(v) for v in page]}
        if offset + limit < total:
            answer["next_page_token"] = encode_page_token(offset + limit)
        return answer
    found = call.registry.search_versions(terms, order, offset, limit)
    out: dict[str, Any] = {"model_versions": [version_json(v) for v in found.items]}
    if found.more:
        out["next_page_token"] = encode_page_token(offset + limit)
    return out


def get_model_version_download_uri(call: Call) -> dict[str, Any]:
    version = call.registry.resolve(f"models:/{call.text('name')}/{_version_number(call)}")
    return {"artifact_uri": version.source}


def set_model_version_tag(call: Call) -> dict[str, Any]:
    name, number = call.text("name"), _version_number(call)
    call.require(Role.WRITER, name)
    key = check_public_tag_key(call.text("key"))
    value = call.text("value", required=False)
    call.registry.set_tag(name, key, value, number, actor=call.actor)
    return {}


def delete_model_version_tag(call: Call) -> dict[str, Any]:
    name, number = call.text("name"), _version_number(call)
    call.require(Role.WRITER, name)
    key = check_public_tag_key(call.text("key"))
    try:
        call.registry.delete_tag(name, key, number, actor=call.actor)
    except RegistryError as exc:
        if not _missing(exc):
            raise
        call.registry.resolve(f"models:/{name}/{number}")  # no such tag is no error
    return {}


_RM = "/api/2.0/mlflow/registered-models"
_MV = "/api/2.0/mlflow/model-versions"
R, W, P = Role.READER, Role.WRITER, Role.PROMOTER

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", f"{_RM}/create", create_registered_model, "Create a registered model", W),
    Endpoint("GET", f"{_RM}/get", get_registered_model, "Get a registered model", R),
    Endpoint("PATCH", f"{_RM}/update", update_registered_model, "Update its description", W),
    Endpoint("POST", f"{_RM}/rename", rename_registered_model, "Not offered (501)", W),
    Endpoint("DELETE", f"{_RM}/delete", delete_registered_model, "Not offered (501)", W),
    Endpoint("GET", f"{_RM}/search", search_registered_models, "Search registered models", R),
    Endpoint("GET", f"{_RM}/get-latest-versions", get_latest_versions, "Latest per stage", R),
    Endpoint("POST", f"{_RM}/get-latest-versions", get_latest_versions, "Latest per stage", R),
    Endpoint("POST", f"{_RM}/set-tag", set_registered_model_tag, "Set a model tag", W),
    Endpoint("DELETE", f"{_RM}/delete-tag", delete_registered_model_tag, "Delete a model tag", W),
    Endpoint(
        "POST", f"{_RM}/alias", set_registered_model_alias, "Set an alias (gated: promoter)", W
    ),
    Endpoint(
        "DELETE",
        f"{_RM}/alias",
        delete_registered_model_alias,
        "Delete an alias (gated: promoter)",
        W,
    ),
    Endpoint("GET", f"{_RM}/alias", get_model_version_by_alias, "Version behind an alias", R),
    Endpoint("POST", f"{_MV}/create", create_model_version, "Register the next version", W),
    Endpoint("GET", f"{_MV}/get", get_model_version, "Get a model version", R),
    Endpoint("PATCH", f"{_MV}/update", update_model_version, "Update its description", W),
    Endpoint("DELETE", f"{_MV}/delete", delete_model_version, "Not offered (501)", W),
    Endpoint("POST", f"{_MV}/transition-stage", transition_model_version_stage, "Move a stage", P),
    Endpoint("GET", f"{_MV}/search", search_model_versions, "Search model versions", R),
    Endpoint("GET", f"{_MV}/get-download-uri", get_model_version_download_uri, "The source URI", R),
    Endpoint("POST", f"{_MV}/set-tag", set_model_version_tag, "Set a version tag", W),
    Endpoint("DELETE", f"{_MV}/delete-tag", delete_model_version_tag, "Delete a version tag", W),
)
