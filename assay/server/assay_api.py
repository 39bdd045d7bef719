"""assay's own endpoints (``/api/assay/v1/...``) for what MLflow's API lacks: the event log
with "as of" questions, prompt templates and their aliases, gate verdicts and evaluations."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from assay.registry.aliases import GATE_TAG_PREFIX
from assay.registry.entities import Event, EventKind, PromptTemplate, PromptVersion
from assay.registry.gating import MoveResult, Outcome, PromotionRefused
from assay.registry.limits import RESERVED_TAG_PREFIXES
from assay.registry.tokens import Role, TokenInfo, TokenStore
from assay.registry.training_data import manifest_json
from assay.server.http import ApiError, Call, invalid, millis
from assay.server.mlflow_api import Endpoint, version_json

EVENTS_MAX = 1_000  # events per page; page on with `after`
_V1 = "/api/assay/v1"


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "timestamp": millis(event.ts),
        "time": event.ts.isoformat(),
        "kind": event.kind.value,
        "actor": event.actor,
        "model": event.model,
        "prompt": event.prompt,
        "version": event.version,
        "payload": event.payload,
    }


def list_events(call: Call) -> dict[str, Any]:
    """Events after ``after`` (an id), oldest first; ``as_of`` keeps those up to that time."""
    after = call.integer("after", default=0, minimum=0)
    limit = call.integer("limit", default=1000)
    if limit > EVENTS_MAX:
        raise invalid(f"limit must be at most {EVENTS_MAX}, got {limit}")
    as_of = call.moment("as_of")
    kind = call.optional_text("kind")
    kinds = {k.value: k for k in EventKind}
    if kind is not None and kind not in kinds:
        raise invalid(f"kind {kind!r} is not an event kind")
    events = call.registry.events(
        after,
        limit,
        model=call.optional_text("model"),
        prompt=call.optional_text("prompt"),
        kind=kinds[kind] if kind is not None else None,
        until=as_of,
    )
    out: dict[str, Any] = {"events": [event_json(e) for e in events]}
    if events:
        out["last_id"] = events[-1].id
    return out


def alias_as_of(call: Call) -> dict[str, Any]:
    """Which version an alias pointed at, at a given time (from the event log)."""
    name, alias = call.path["name"], call.path["alias"]
    as_of = call.moment("as_of")
    if as_of is None:
        raise invalid("missing value for required parameter 'as_of'")
    version = call.registry.alias_holder(name, alias, as_of)
    return {"model_version": None if version is None else version_json(version)}


def versions_as_of(call: Call) -> dict[str, Any]:
    """The versions of a model registered by ``as_of`` (all when absent)."""
    versions = call.registry.list_versions(call.path["name"], as_of=call.moment("as_of"))
    return {"model_versions": [version_json(v) for v in versions]}


def version_verdicts(call: Call) -> dict[str, Any]:
    """Per-partition gate verdicts (``gate.<scenario>`` tags), every recorded evaluation and
    every promotion decision about a version."""
    name = call.path["name"]
    number = _path_version(call)
    version = call.registry.resolve(f"models:/{name}/{number}")
    gates = {
        key[len(GATE_TAG_PREFIX) :]: value
        for key, value in sorted(version.tags.items())
        if key.startswith(GATE_TAG_PREFIX)
    }
    evaluations = [
        event_json(e)
        for e in call.registry.events(model=name)
        if e.kind is EventKind.EVALUATION_RECORDED and e.version == number
    ]
    decisions = [
        event_json(e)
        for e in call.registry.decisions(model=name)
        if e.payload.get("candidate") == version.key
    ]
    return {
        "version": version_json(version),
        "gates": gates,
        "evaluations": evaluations,
        "decisions": decisions,
    }


def _path_version_key(call: Call) -> str:
    return f"{call.path['name']}@v{_path_version(call)}"


def version_prices(call: Call) -> dict[str, Any]:
    """The version's token prices per 1k tokens (``null`` where unset)."""
    version = call.registry.get_version(_path_version_key(call))
    return {"model_version": version_json(version), "prices": asdict(version.prices)}


def set_version_prices(call: Call) -> dict[str, Any]:
    """Replace the version's prices with the JSON body's ``prompt_per_1k`` and
    ``completion_per_1k`` (a missing one is unset). Evaluations already run keep the prices
    they pinned; the new ones apply from the next."""
    call.require(Role.WRITER, call.path["name"])
    version = call.registry.set_prices(_path_version_key(call), call.params, actor=call.actor)
    return {"model_version": version_json(version), "prices": asdict(version.prices)}


def version_training_data(call: Call) -> dict[str, Any]:
    """The corpora the version declares it was trained on (``[]`` when none)."""
    version = call.registry.get_version(_path_version_key(call))
    return {
        "model_version": version_json(version),
        "training_data": manifest_json(version.training_data),
    }


def set_version_training_data(call: Call) -> dict[str, Any]:
    """Replace the version's manifest with the JSON body's ``training_data`` (a list of
    ``{name, url, format, text_field}``; ``[]`` clears it). URLs obey the corpus policy
    (``assay.registry.training_data``); a refusal names the entry and the field."""
    call.require(Role.WRITER, call.path["name"])
    unknown = sorted(set(call.params) - {"training_data"})
    if unknown or "training_data" not in call.params:
        raise invalid('the body must be {"training_data": [...]}')
    version = call.registry.set_training_data(
        _path_version_key(call), call.params["training_data"], actor=call.actor
    )
    return {
        "model_version": version_json(version),
        "training_data": manifest_json(version.training_data),
    }


def _path_version(call: Call) -> int:
    raw = call.path["version"]
    if not raw.isdigit() or int(raw) < 1:
        raise invalid(f"version must be a positive integer, got {raw!r}")
    return int(raw)


# --------------------------------------------------------------------------- prompts


def prompt_json(prompt: PromptTemplate) -> dict[str, Any]:
    return {
        "name": prompt.name,
        "description": prompt.description,
        "creation_timestamp": millis(prompt.created_at),
        "last_updated_timestamp": millis(prompt.updated_at),
        "latest_version": prompt.latest_version,
        "aliases": prompt.aliases,
    }


def prompt_version_json(version: PromptVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "uri": version.uri,
        "template": version.template,
        "variables": list(version.variables),
        "description": version.description,
        "creation_timestamp": millis(version.created_at),
        "aliases": list(version.aliases),
    }


def list_prompts(call: Call) -> dict[str, Any]:
    return {"prompts": [prompt_json(p) for p in call.registry.list_prompts()]}


def create_prompt(call: Call) -> dict[str, Any]:
    name = call.text("name")
    call.require(Role.WRITER, name)
    prompt = call.registry.create_prompt(
        name, call.text("description", required=False), actor=call.actor
    )
    return {"prompt": prompt_json(prompt)}


def get_prompt_versions(call: Call) -> dict[str, Any]:
    name = call.path["name"]
    return {"versions": [prompt_version_json(v) for v in call.registry.list_prompt_versions(name)]}


def create_prompt_version(call: Call) -> dict[str, Any]:
    name = call.path["name"]
    call.require(Role.WRITER, name)
    version = call.registry.create_prompt_version(
        name,
        call.text("template"),
        call.strings("variables"),
        call.text("description", required=False),
        actor=call.actor,
    )
    return {"version": prompt_version_json(version)}


def resolve_prompt(call: Call) -> dict[str, Any]:
    """``uri`` is ``prompts:/name@alias``, ``prompts:/name/3`` or ``name@v3``."""
    return {"version": prompt_version_json(call.registry.get_prompt(call.text("uri")))}


def _force(call: Call, owner: str) -> tuple[bool, str | None]:
    """``force`` skips a gated move's verdict: the admin role and a ``reason`` only."""
    force = call.boolean("force")
    reason = call.optional_text("reason")
    if force:
        call.require(Role.ADMIN, owner)
        if not (reason or "").strip():
            raise invalid("force needs a reason")
    return force, reason


def move_json(result: MoveResult) -> dict[str, Any]:
    """A requested move's answer: ``status`` moved, unchanged or pending (refusals are
    errors), why, and the event recording it."""
    if result.outcome is Outcome.REFUSED:
        raise ApiError.from_registry(PromotionRefused(result))
    return {
        "status": result.outcome.value,
        "reason": result.reason,
        "candidate": result.candidate,
        "target": result.target.to_json(),
        "event": None if result.event is None else event_json(result.event),
        "verdict": None if result.verdict is None else event_json(result.verdict),
    }


def set_prompt_alias(call: Call) -> dict[str, Any]:
    name = call.path["name"]
    alias = call.text("alias")
    role = Role.PROMOTER if alias in call.registry.gated_prompt_aliases else Role.WRITER
    call.require(role, name)
    force, reason = _force(call, name)
    result = call.registry.request_prompt_alias(
        name,
        alias,
        call.integer("version"),
        actor=call.actor,
        force=force,
        reason=reason,
        role=call.principal.role.label,
    )
    out = move_json(result)
    if result.record is not None:
        out["version"] = prompt_version_json(result.record)
    return out


def set_model_alias(call: Call) -> dict[str, Any]:
    """Ask for a model alias to move: through the promotion decision when it is gated."""
    name = call.path["name"]
    alias = call.text("alias")
    role = Role.PROMOTER if alias in call.registry.gated_aliases else Role.WRITER
    call.require(role, name)
    force, reason = _force(call, name)
    result = call.registry.request_alias(
        name,
        alias,
        call.integer("version"),
        actor=call.actor,
        force=force,
        reason=reason,
        role=call.principal.role.label,
    )
    return move_json(result)


def set_model_stage(call: Call) -> dict[str, Any]:
    """Ask for a version to enter a stage: through the promotion decision when it is gated."""
    name = call.path["name"]
    call.require(Role.PROMOTER, name)
    force, reason = _force(call, name)
    result = call.registry.request_stage(
        name,
        _path_version(call),
        call.text("stage"),
        call.boolean("archive_existing_versions"),
        actor=call.actor,
        force=force,
        reason=reason,
        role=call.principal.role.label,
    )
    return move_json(result)


def model_decisions(call: Call) -> dict[str, Any]:
    """A model's promotion decisions: pending requests and verdicts with every criterion."""
    name = call.path["name"]
    call.registry.get_model(name)
    return {"decisions": [event_json(e) for e in call.registry.decisions(model=name)]}


def whoami(call: Call) -> dict[str, Any]:
    return {
        "principal": call.principal.name,
        "role": call.principal.role.label,
        "grants": sorted(call.principal.grants),
        "reserved_tag_prefixes": list(RESERVED_TAG_PREFIXES),
    }


# --------------------------------------------------------------------------- tokens (admin)


def token_json(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "prefix": info.prefix,
        "principal": info.principal,
        "role": info.role.label,
        "grants": list(info.grants),
        "creation_timestamp": millis(info.created_at),
        "created_by": info.created_by,
        "revoked": info.revoked_at is not None,
        "revoked_by": info.revoked_by,
        "last_used_timestamp": None if info.last_used_at is None else millis(info.last_used_at),
    }


def list_tokens(call: Call) -> dict[str, Any]:
    call.require(Role.ADMIN)
    tokens = TokenStore(call.registry).list(include_revoked=call.boolean("all"))
    return {"tokens": [token_json(t) for t in tokens]}


def create_token(call: Call) -> dict[str, Any]:
    """The answer carries the secret: the only time it is shown."""
    call.require(Role.ADMIN)
    info, secret = TokenStore(call.registry).create(
        call.text("principal"),
        call.text("role"),
        call.strings("grants"),
        created_by=call.actor,
    )
    return {"token": token_json(info), "secret": secret}


def revoke_token(call: Call) -> dict[str, Any]:
    call.require(Role.ADMIN)
    raw = call.path["id"]
    if not raw.isdigit():
        raise invalid(f"token id must be a number, got {raw!r}")
    info = TokenStore(call.registry).revoke(int(raw), revoked_by=call.actor)
    return {"token": token_json(info)}


R, W, A = Role.READER, Role.WRITER, Role.ADMIN
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", f"{_V1}/whoami", whoami, "The calling principal and its role", R),
    Endpoint("GET", f"{_V1}/events", list_events, "The event log (after, limit, as_of, ...)", R),
    Endpoint("GET", f"{_V1}/models/{{name}}/versions", versions_as_of, "Versions as of a time", R),
    Endpoint(
        "GET",
        f"{_V1}/models/{{name}}/versions/{{version}}/verdicts",
        version_verdicts,
        "Gate verdicts and recorded evaluations of a version",
        R,
    ),
    Endpoint(
        "GET", f"{_V1}/models/{{name}}/aliases/{{alias}}", alias_as_of, "Alias holder as of", R
    ),
    Endpoint(
        "GET",
        f"{_V1}/models/{{name}}/versions/{{version}}/prices",
        version_prices,
        "A version's token prices",
        R,
    ),
    Endpoint(
        "POST",
        f"{_V1}/models/{{name}}/versions/{{version}}/prices",
        set_version_prices,
        "Replace a version's token prices (from its next evaluation)",
        W,
    ),
    Endpoint(
        "GET",
        f"{_V1}/models/{{name}}/versions/{{version}}/training-data",
        version_training_data,
        "The corpora a version declares it was trained on",
        R,
    ),
    Endpoint(
        "POST",
        f"{_V1}/models/{{name}}/versions/{{version}}/training-data",
        set_version_training_data,
        "Replace a version's training-data manifest",
        W,
    ),
    Endpoint(
        "POST",
        f"{_V1}/models/{{name}}/aliases",
        set_model_alias,
        "Ask for an alias to move (gated: promoter; a pending move answers status pending)",
        W,
    ),
    Endpoint(
        "POST",
        f"{_V1}/models/{{name}}/versions/{{version}}/stage",
        set_model_stage,
        "Ask for a version to enter a stage (promoter; Production is gated)",
        W,
    ),
    Endpoint(
        "GET",
        f"{_V1}/models/{{name}}/decisions",
        model_decisions,
        "Promotion decisions: pending requests and verdicts with every criterion",
        R,
    ),
    Endpoint("GET", f"{_V1}/prompts", list_prompts, "Prompt templates", R),
    Endpoint("POST", f"{_V1}/prompts", create_prompt, "Register a prompt name", W),
    Endpoint("GET", f"{_V1}/prompts/resolve", resolve_prompt, "Resolve a prompt URI", R),
    Endpoint("GET", f"{_V1}/prompts/{{name}}/versions", get_prompt_versions, "Prompt versions", R),
    Endpoint("POST", f"{_V1}/prompts/{{name}}/versions", create_prompt_version, "New template", W),
    Endpoint(
        "POST",
        f"{_V1}/prompts/{{name}}/aliases",
        set_prompt_alias,
        "Point a prompt alias at a version (gated: promoter)",
        W,
    ),
    Endpoint("GET", f"{_V1}/tokens", list_tokens, "API tokens (never their secrets)", A),
    Endpoint("POST", f"{_V1}/tokens", create_token, "Create a token; the secret once", A),
    Endpoint("POST", f"{_V1}/tokens/{{id}}/revoke", revoke_token, "Revoke a token", A),
)
