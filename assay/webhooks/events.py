"""Which registry events a webhook can subscribe to, and the body each one is sent as.

MLflow's events keep MLflow's names and payloads (``mlflow.webhooks.types``), so a receiver
written for MLflow's open-source server reads assay's deliveries unchanged. assay's own events
are named in the same ``entity.action`` style, on entities MLflow does not have:

| event | from the registry event | ``data`` |
|---|---|---|
| ``evaluation.finished`` | ``evaluation_recorded`` | name, version, scenario, metrics, run_id |
| ``promotion.pending`` | ``gate_pending`` | name, version, actor, details |
| ``promotion.approved`` | ``gate_approved`` | name, version, actor, details |
| ``promotion.refused`` | ``gate_refused`` | name, version, actor, details |

(``details``: the registry event's own payload, as recorded.) Registry events are matched by
their ``kind`` string, so kinds this module does not know are skipped, never an error.

MLflow events that never fire here, because assay's registry has no such change: tags on
prompts and prompt versions (``prompt_tag.*``, ``prompt_version_tag.*``), prompt alias
deletion and ``budget_policy.exceeded``. They are accepted in subscriptions, as MLflow
accepts them. Tags on a registered model and stage transitions have no MLflow event and are
not sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# MLflow 3's WebhookEntity × WebhookAction pairs (mlflow.entities.webhook.VALID_ENTITY_ACTIONS).
MLFLOW_EVENTS: tuple[str, ...] = (
    "registered_model.created",
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
    "prompt.created",
    "prompt_version.created",
    "prompt_tag.set",
    "prompt_tag.deleted",
    "prompt_version_tag.set",
    "prompt_version_tag.deleted",
    "prompt_alias.created",
    "prompt_alias.deleted",
    "budget_policy.exceeded",
)
ASSAY_EVENTS: tuple[str, ...] = (
    "evaluation.finished",
    "promotion.pending",
    "promotion.approved",
    "promotion.refused",
)
ALL_EVENTS: tuple[str, ...] = MLFLOW_EVENTS + ASSAY_EVENTS


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    """A row of the event log as the webhooks read it: the kind stays a plain string."""

    id: int
    ts: datetime
    kind: str
    actor: str
    model: str | None
    prompt: str | None
    version: int | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notification:
    """What one registry event is sent as: an event name and MLflow's ``data`` object."""

    event: str
    data: dict[str, Any]


def split_event(name: str) -> tuple[str, str]:
    """``"model_version.created"`` → ``("model_version", "created")``."""
    entity, _, action = name.partition(".")
    return entity, action


def body(notification: Notification, moment: datetime) -> str:
    """The request body, as MLflow builds it: ``entity``, ``action``, ``timestamp`` (ISO 8601,
    here the time of the registry event, so every attempt sends the same bytes) and ``data``."""
    entity, action = split_event(notification.event)
    return json.dumps(
        {
            "entity": entity,
            "action": action,
            "timestamp": moment.isoformat(),
            "data": notification.data,
        }
    )


def _version(event: RegistryEvent) -> str:
    return str(event.version)


def _model_created(event: RegistryEvent) -> Notification:
    return Notification(
        "registered_model.created",
        {
            "name": event.model,
            "tags": dict(event.payload.get("tags") or {}),
            "description": event.payload.get("description") or None,
        },
    )


def _version_created(event: RegistryEvent) -> Notification:
    return Notification(
        "model_version.created",
        {
            "name": event.model,
            "version": _version(event),
            "source": event.payload.get("source"),
            "run_id": None,
            "tags": dict(event.payload.get("tags") or {}),
            "description": event.payload.get("description") or None,
        },
    )


def _tag_set(event: RegistryEvent) -> Notification | None:
    if event.version is None:
        return None  # MLflow sends nothing for a registered model's tags
    data = {"name": event.model, "version": _version(event), "key": event.payload.get("key")}
    return Notification("model_version_tag.set", {**data, "value": event.payload.get("value")})


def _tag_deleted(event: RegistryEvent) -> Notification | None:
    if event.version is None:
        return None
    data = {"name": event.model, "version": _version(event), "key": event.payload.get("key")}
    return Notification("model_version_tag.deleted", data)


def _alias_set(event: RegistryEvent) -> Notification:
    # MLflow sends "created" whenever an alias is set, whether it was new or moved.
    return Notification(
        "model_version_alias.created",
        {"name": event.model, "alias": event.payload.get("alias"), "version": _version(event)},
    )


def _alias_removed(event: RegistryEvent) -> Notification:
    return Notification(
        "model_version_alias.deleted", {"name": event.model, "alias": event.payload.get("alias")}
    )


def _prompt_created(event: RegistryEvent) -> Notification:
    return Notification(
        "prompt.created",
        {
            "name": event.prompt,
            "tags": {},
            "description": event.payload.get("description") or None,
        },
    )


def _prompt_alias_set(event: RegistryEvent) -> Notification:
    return Notification(
        "prompt_alias.created",
        {"name": event.prompt, "alias": event.payload.get("alias"), "version": _version(event)},
    )


def _evaluation(event: RegistryEvent) -> Notification:
    return Notification(
        "evaluation.finished",
        {
            "name": event.model,
            "version": _version(event),
            "scenario": event.payload.get("scenario"),
            "metrics": dict(event.payload.get("metrics") or {}),
            "run_id": event.payload.get("run_id"),
        },
    )


def _promotion(action: str) -> Callable[[RegistryEvent], Notification]:
    def notify(event: RegistryEvent) -> Notification:
        data: dict[str, Any] = {
            "name": event.model if event.model is not None else event.prompt,
            "version": None if event.version is None else _version(event),
            "actor": event.actor,
            "details": event.payload,
        }
        if event.prompt is not None:
            data["prompt"] = True
        return Notification(f"promotion.{action}", data)

    return notify


Converter = Callable[[RegistryEvent], Notification | None]

# Registry event kind → its notification. ``prompt_version_created`` needs the template, which
# the event does not carry: ``notification_for`` takes a lookup for it.
CONVERTERS: Mapping[str, Converter] = {
    "model_created": _model_created,
    "version_created": _version_created,
    "tag_set": _tag_set,
    "tag_deleted": _tag_deleted,
    "alias_set": _alias_set,
    "alias_moved": _alias_set,
    "alias_removed": _alias_removed,
    "prompt_created": _prompt_created,
    "prompt_alias_set": _prompt_alias_set,
    "evaluation_recorded": _evaluation,
    "gate_pending": _promotion("pending"),
    "gate_approved": _promotion("approved"),
    "gate_refused": _promotion("refused"),
}
PROMPT_VERSION_CREATED = "prompt_version_created"


def notification_for(
    event: RegistryEvent, template_of: Callable[[str, int], str | None]
) -> Notification | None:
    """The notification ``event`` is sent as, or None when no webhook event stands for it.

    ``template_of(prompt, version)`` gives a prompt version's template text (prompt versions
    never change, so reading it later reads what was created)."""
    if event.kind == PROMPT_VERSION_CREATED:
        if event.prompt is None or event.version is None:
            return None
        return Notification(
            "prompt_version.created",
            {
                "name": event.prompt,
                "version": _version(event),
                "template": template_of(event.prompt, event.version),
                "tags": {},
                "description": event.payload.get("description") or None,
            },
        )
    convert = CONVERTERS.get(event.kind)
    return None if convert is None else convert(event)


# Example bodies for ``test``: MLflow's own examples (``mlflow.webhooks.types``) for its events.
EXAMPLES: Mapping[str, dict[str, Any]] = {
    "registered_model.created": {
        "name": "example_model",
        "tags": {"example_key": "example_value"},
        "description": "An example registered model",
    },
    "model_version.created": {
        "name": "example_model",
        "version": "1",
        "source": "models:/123",
        "run_id": "abcd1234abcd5678",
        "tags": {"example_key": "example_value"},
        "description": "An example model version",
    },
    "model_version_tag.set": {
        "name": "example_model",
        "version": "1",
        "key": "example_key",
        "value": "example_value",
    },
    "model_version_tag.deleted": {"name": "example_model", "version": "1", "key": "example_key"},
    "model_version_alias.created": {
        "name": "example_model",
        "alias": "example_alias",
        "version": "1",
    },
    "model_version_alias.deleted": {"name": "example_model", "alias": "example_alias"},
    "prompt.created": {
        "name": "example_prompt",
        "tags": {"example_key": "example_value"},
        "description": "An example prompt",
    },
    "prompt_version.created": {
        "name": "example_prompt",
        "version": "1",
        "template": "Hello {{name}}!",
        "tags": {"example_key": "example_value"},
        "description": "An example prompt version",
    },
    "prompt_tag.set": {"name": "example_prompt", "key": "example_key", "value": "example_value"},
    "prompt_tag.deleted": {"name": "example_prompt", "key": "example_key"},
    "prompt_version_tag.set": {
        "name": "example_prompt",
        "version": "1",
        "key": "example_key",
        "value": "example_value",
    },
    "prompt_version_tag.deleted": {"name": "example_prompt", "version": "1", "key": "example_key"},
    "prompt_alias.created": {"name": "example_prompt", "alias": "example_alias", "version": "1"},
    "prompt_alias.deleted": {"name": "example_prompt", "alias": "example_alias"},
    "budget_policy.exceeded": {
        "budget_policy_id": "bp-abc123",
        "budget_unit": "USD",
        "budget_amount": 100.0,
        "current_spend": 105.5,
        "duration_unit": "MONTHS",
        "duration_value": 1,
        "target_scope": "ENDPOINT",
        "workspace": "default",
        "target_value": "ep-abc123",
        "window_start": 1704067200000,
    },
    "evaluation.finished": {
        "name": "example_model",
        "version": "1",
        "scenario": "example_scenario",
        "metrics": {"exact_match": 0.5},
        "run_id": "example_run",
    },
    **{
        f"promotion.{action}": {
            "name": "example_model",
            "version": "1",
            "actor": "example_user",
            "details": {"alias": "champion"},
        }
        for action in ("pending", "approved", "refused")
    },
}
