"""MLflow's Model Registry REST API (``/api/2.0/mlflow/...``) over assay's registry.

Field names and shapes follow MLflow's ``model_registry.proto`` (JSON names in snake_case, as
MLflow's server writes them); versions are strings, timestamps milliseconds.

Decisions where the two registries differ:
- Deleting and renaming models and versions answer NOT_IMPLEMENTED (501). A version key
  ``name@vN`` is a Dagster partition key with stored outputs, and the event log names models:
  history that can be deleted or renamed away is not history. Archive a version with the
  ``Archived`` stage or remove its aliases instead.
- A version's ``last_updated_timestamp`` is its creation time (assay stores no update time per
  version; the event log has every change). ``run_id`` and ``run_link`` are accepted and not
  kept. ``user_id`` is filled in the answer to create (the authenticated principal); the
  event log (``/api/assay/v1/events``) says who did what to every version.
- Tags ``gate.*`` and ``eval.*`` are written only by the regression gate and the evaluation
  recorder; setting or deleting them here is refused whatever the caller's role.
- Moving a gated alias (``champion`` by default) needs the ``promoter`` role, as does any stage
  transition; other writes need ``writer``; reads ``reader``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assay.registry.entities import ModelVersion, RegisteredModel, Stage
from assay.registry.errors import RegistryError
from assay.registry.limits import check_public_tag_key, check_public_tags
from assay.registry.tokens import Role
from assay.server.http import ApiError, Call, Handler, invalid, millis
from assay.server.search import (
    decode_page_token,
    encode_page_token,
    matches,
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


def version_json(version: ModelVersion, user_id: str = "") -> dict[str, Any]:
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
        "aliases": list(version.aliases),
    }


def model_json(model: RegisteredModel, latest: list[ModelVersion]) -> dict[str, Any]:
    """``latest``: the newest version in each stage, as ``Registry.latest_versions`` gives."""
    return {
        "name": model.name,
        "creation_timestamp": millis(model.created_at),
        "last_updated_timestamp": millis(model.updated_at),
        "description": model.description,
        "latest_versions": [version_json(v) for v in latest],
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
    terms = parse_filter(call.optional_text("filter"), ["name"])
    order = parse_order_by(
        call.strings("order_by"), ["name", "creation_timestamp", "last_updated_timestamp"]
    )
    limit = call.integer("max_results", default=100)
    if limit > MODELS_MAX_RESULTS:
        raise invalid(f"max_results must be at most {MODELS_MAX_RESULTS}, got {limit}")
    offset = decode_page_token(call.optional_text("page_token"))
    models = [
        m
        for m in call.registry.list_models()
        if all(
            matches(t, m.tags.get(t.tag) if t.tag is not None else m.name, numeric=False)
            for t in terms
        )
    ]
    keys = {
        "name": lambda m: m.name,
        "creation_timestamp": lambda m: m.created_at,
        "last_updated_timestamp": lambda m: m.updated_at,
    }
    models.sort(key=lambda m: m.name)
    for key, descending in reversed(order):  # stable sorts, last clause first
        models.sort(key=keys[key], reverse=descending)
    page = models[offset : offset + limit]
    out: dict[str, Any] = {
        "registered_models": [model_json(m, call.registry.latest_versions(m.name)) for m in page]
    }
    if offset + limit < len(models):
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
    call.registry.delete_tag(name, key, actor=call.actor)
    return {}


def _alias_role(call: Call, alias: str) -> Role:
    return Role.PROMOTER if alias in call.registry.gated_aliases else Role.WRITER


def set_registered_model_alias(call: Call) -> dict[str, Any]:
    name, alias = call.text("name"), call.text("alias")
    call.require(_alias_role(call, alias), name)
    call.registry.set_alias(name, alias, _version_number(call), actor=call.actor)
    return {}


def delete_registered_model_alias(call: Call) -> dict[str, Any]:
    name, alias = call.text("name"), call.text("alias")
    call.require(_alias_role(call, alias), name)
    call.registry.delete_alias(name, alias, actor=call.actor)
    return {}


def get_model_version_by_alias(call: Call) -> dict[str, Any]:
    name, alias = call.text("name"), call.text("alias")
    version = call.registry.resolve(f"models:/{name}@{alias}")
    return {"model_version": version_json(version)}


# --------------------------------------------------------------------------- model versions


def create_model_version(call: Call) -> dict[str, Any]:
    name = call.text("name")
    call.require(Role.WRITER, name)
    tags = _public_tags(call.tags())
    version = call.registry.create_version(
        name,
        call.text("source"),
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


def search_model_versions(call: Call) -> dict[str, Any]:
    attributes = ["name", "version_number", "run_id", "source_path"]
    terms = parse_filter(call.optional_text("filter"), attributes)
    order = parse_order_by(
        call.strings("order_by"),
        ["name", "version_number", "creation_timestamp", "last_updated_timestamp"],
    )
    limit = call.integer("max_results", default=10_000)
    if limit > VERSIONS_MAX_RESULTS:
        raise invalid(f"max_results must be at most {VERSIONS_MAX_RESULTS}, got {limit}")
    offset = decode_page_token(call.optional_text("page_token"))
    by_number = all(key in ("version_number", "creation_timestamp") for key, _ in order)
    if len(terms) == 1 and terms[0].key == "name" and terms[0].op == "=" and by_number:
        # The common question, one model's versions by number (creation order is the same),
        # is answered a page at a time by the database.
        descending = order[0][1] if order else True
        try:
            page, total = call.registry.versions_page(
                str(terms[0].value), offset, limit, descending=descending
            )
        except RegistryError as exc:
            if exc.code.value != "RESOURCE_DOES_NOT_EXIST":
                raise
            page, total = [], 0
        answer: dict[str, Any] = {"model_versions": [version_json(v) for v in page]}
        if offset + limit < total:
            answer["next_page_token"] = encode_page_token(offset + limit)
        return answer
    # One model named exactly: read only its versions.
    named = [t.value for t in terms if t.key == "name" and t.op == "="]
    try:
        pool = call.registry.list_versions(named[0]) if named else call.registry.list_versions()
    except RegistryError as exc:
        if named and exc.code.value == "RESOURCE_DOES_NOT_EXIST":
            pool = []
        else:
            raise

    def value(version: ModelVersion, key: str) -> Any:
        return {
            "name": version.model,
            "version_number": version.version,
            "run_id": "",
            "source_path": version.source,
        }[key]

    versions = [
        v
        for v in pool
        if all(
            matches(
                t,
                v.tags.get(t.tag) if t.tag is not None else value(v, t.key),
                numeric=t.key == "version_number",
            )
            for t in terms
        )
    ]
    keys = {
        "name": lambda v: v.model,
        "version_number": lambda v: v.version,
        "creation_timestamp": lambda v: v.created_at,
        "last_updated_timestamp": lambda v: v.created_at,
    }
    versions.sort(key=lambda v: (v.model, -v.version))
    for key, descending in reversed(order):
        versions.sort(key=keys[key], reverse=descending)
    page = versions[offset : offset + limit]
    out: dict[str, Any] = {"model_versions": [version_json(v) for v in page]}
    if offset + limit < len(versions):
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
    call.registry.delete_tag(name, key, number, actor=call.actor)
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
