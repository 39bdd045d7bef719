"""MLflow's webhook API (``/api/2.0/mlflow/webhooks``) over assay's webhook store.

Shapes follow MLflow 3's ``webhooks.proto`` as its server writes them: a webhook is
``webhook_id``, ``name``, ``description``, ``url``, ``events`` (``{"entity": "MODEL_VERSION",
"action": "CREATED"}``), ``status`` (``ACTIVE``/``DISABLED``), ``creation_timestamp`` and
``last_updated_timestamp`` in milliseconds; the secret is never answered. Create, list (newest
first, ``max_results`` 1–1000, default 100), get, update (PATCH: what is given changes;
``secret: ""`` removes it), delete and test (one example delivery, now, answered as
``{"result": {"success", "response_status", "response_body", "error_message"}}``).

Differences from MLflow's server:
- Every webhook endpoint needs the ``admin`` role, reading too: a webhook URL is often a
  credential itself (Slack's and Teams' incoming webhooks carry their token in the path).
- A URL must be allowed by the host policy of ``assay.webhooks.targets`` (MLflow instead
  refuses non-public addresses unless ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS``).
- assay's own events (``evaluation.finished``, ``promotion.pending|approved|refused``) are
  given in ``events`` like MLflow's (``{"entity": "PROMOTION", "action": "REFUSED"}``) or in
  ``assay_events``, and answered in ``assay_events``: MLflow's client parses ``events`` with
  its own enums and would fail on entities it does not know, while it ignores fields it does
  not know. A webhook subscribed to assay's events alone has an empty ``events``, which
  MLflow's Python client refuses to represent: manage such webhooks over plain HTTP.
- A test delivery is attempted once (MLflow lets urllib3 retry it) and is logged with the
  other deliveries; it may name only an event the webhook subscribes to (MLflow sends any).
- ``GET /api/assay/v1/webhooks/{webhook_id}/deliveries`` (assay's own) lists a webhook's
  deliveries and every attempt.
"""

from __future__ import annotations

from typing import Any

from assay.registry.tokens import Role
from assay.server.http import Call, invalid, millis
from assay.server.mlflow_api import Endpoint
from assay.server.search import decode_page_token, encode_page_token
from assay.webhooks.delivery import DELIVERED, send_test
from assay.webhooks.events import MLFLOW_EVENTS, split_event
from assay.webhooks.store import UNSET, Attempt, Webhook, WebhookStore

LIST_MAX_RESULTS = 1000
# MLflow's enum numbers (webhooks.proto), which its JSON parser also accepts.
_ENTITIES = (
    "registered_model",
    "model_version",
    "model_version_tag",
    "model_version_alias",
    "prompt",
    "prompt_version",
    "prompt_tag",
    "prompt_version_tag",
    "prompt_alias",
    "budget_policy",
)
_ACTIONS = ("created", "updated", "deleted", "set", "exceeded")
_STATUSES = ("ACTIVE", "DISABLED")


def _event_json(name: str) -> dict[str, str]:
    entity, action = split_event(name)
    return {"entity": entity.upper(), "action": action.upper()}


def webhook_json(hook: Webhook) -> dict[str, Any]:
    out: dict[str, Any] = {
        "webhook_id": hook.id,
        "name": hook.name,
        "url": hook.url,
        "events": [_event_json(e) for e in hook.events if e in MLFLOW_EVENTS],
        "status": hook.status,
        "creation_timestamp": millis(hook.created_at),
        "last_updated_timestamp": millis(hook.updated_at),
    }
    if hook.description:  # as MLflow: an empty description is left out
        out["description"] = hook.description
    own = [_event_json(e) for e in hook.events if e not in MLFLOW_EVENTS]
    if own:
        out["assay_events"] = own
    return out


def _enum(value: object, names: tuple[str, ...], what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(names):
        return names[value - 1]
    if isinstance(value, str) and value:
        return value.lower()
    raise invalid(f"webhook event {what} must be a name like 'MODEL_VERSION', got {value!r}")


def _event_name(item: object) -> str:
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        raise invalid(f"each webhook event must be {{'entity': ..., 'action': ...}}, got {item!r}")
    entity = _enum(item.get("entity"), _ENTITIES, "entity")
    action = _enum(item.get("action"), _ACTIONS, "action")
    return f"{entity}.{action}"


def _events(call: Call) -> list[str] | None:
    """The events named in ``events`` and ``assay_events``; None when neither names any."""
    names: list[str] = []
    for field in ("events", "assay_events"):
        value = call.params.get(field)
        if value is None:
            continue
        if not isinstance(value, list):
            raise invalid(f"parameter {field!r} must be a list of events")
        names += [_event_name(item) for item in value]
    return names or None


def _status(call: Call) -> str | None:
    value = call.params.get("status")
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2:
        return _STATUSES[value - 1]
    if not isinstance(value, str):
        raise invalid(f"parameter 'status' must be ACTIVE or DISABLED, got {value!r}")
    return value


def _secret(call: Call) -> str | None:
    value = call.params.get("secret")
    if value is not None and not isinstance(value, str):
        raise invalid("parameter 'secret' must be a string")
    return value


def _store(call: Call) -> WebhookStore:
    call.require(Role.ADMIN)
    return WebhookStore(call.registry)


def _webhook_id(call: Call) -> str:
    return call.path.get("webhook_id", "")


def create_webhook(call: Call) -> dict[str, Any]:
    store = _store(call)
    events = _events(call)
    if not events:
        raise invalid("missing value for required parameter 'events'")
    hook = store.create(
        call.text("name"),
        call.text("url"),
        events,
        description=call.text("description", required=False),
        secret=_secret(call) or None,
        status=_status(call) or "ACTIVE",
        actor=call.actor,
    )
    return {"webhook": webhook_json(hook)}


def list_webhooks(call: Call) -> dict[str, Any]:
    store = _store(call)
    limit = call.integer("max_results", default=100)
    if limit > LIST_MAX_RESULTS:
        raise invalid(f"max_results must be between 1 and {LIST_MAX_RESULTS}.")
    offset = decode_page_token(call.optional_text("page_token"))
    hooks, total = store.page(offset, limit)
    out: dict[str, Any] = {"webhooks": [webhook_json(h) for h in hooks]}
    if offset + limit < total:
        out["next_page_token"] = encode_page_token(offset + limit)
    return out


def get_webhook(call: Call) -> dict[str, Any]:
    return {"webhook": webhook_json(_store(call).get(_webhook_id(call)))}


def update_webhook(call: Call) -> dict[str, Any]:
    store = _store(call)
    hook = store.update(
        _webhook_id(call),
        name=call.optional_text("name") or None,
        url=call.optional_text("url") or None,
        events=_events(call),
        description=call.optional_text("description"),
        secret=_secret(call) if "secret" in call.params else UNSET,
        status=_status(call),
    )
    return {"webhook": webhook_json(hook)}


def delete_webhook(call: Call) -> dict[str, Any]:
    _store(call).delete(_webhook_id(call))
    return {}


def test_webhook(call: Call) -> dict[str, Any]:
    store = _store(call)
    webhook_id = _webhook_id(call)
    event = call.params.get("event")
    name = _event_name(event) if event not in (None, {}) else None
    hook = store.get(webhook_id)
    if name is not None and name not in hook.events:
        # MLflow sends any event's example; only events the webhook could receive are sent here.
        raise invalid(f"webhook {webhook_id} is not subscribed to {name!r}")
    outcome = send_test(store, webhook_id, name)
    result: dict[str, Any] = {"success": outcome.result == DELIVERED}
    if outcome.response_status is not None:
        result["response_status"] = outcome.response_status
    if outcome.response_body:
        result["response_body"] = outcome.response_body
    if outcome.error:
        result["error_message"] = outcome.error
    return {"result": result}


def list_deliveries(call: Call) -> dict[str, Any]:
    """assay's own: a webhook's deliveries, oldest first, each with every attempt (time,
    duration, the receiver's status or the error, the outcome). Deleted webhooks keep theirs."""
    call.require(Role.ADMIN)
    store = WebhookStore(call.registry)
    webhook_id = _webhook_id(call)
    deliveries = store.deliveries(webhook_id)
    if not deliveries:
        store.get(webhook_id)  # RESOURCE_DOES_NOT_EXIST for an unknown webhook
    attempts: dict[str, list[Attempt]] = {}
    for attempt in store.attempts([d.id for d in deliveries]):
        attempts.setdefault(attempt.delivery_id, []).append(attempt)
    return {
        "deliveries": [
            {
                "delivery_id": d.id,
                "event_id": d.event_id,
                "event": d.event_name,
                "state": d.state,
                "created_at": millis(d.created_at),
                "finished_at": None if d.finished_at is None else millis(d.finished_at),
                "attempts": [
                    {
                        "number": a.number,
                        "started_at": millis(a.started_at),
                        "duration_ms": a.duration_ms,
                        "response_status": a.response_status,
                        "error": a.error,
                        "outcome": a.outcome,
                    }
                    for a in attempts.get(d.id, [])
                ],
            }
            for d in deliveries
        ]
    }


_WH = "/api/2.0/mlflow/webhooks"
A = Role.ADMIN

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", _WH, create_webhook, "Create a webhook", A),
    Endpoint("GET", _WH, list_webhooks, "List webhooks (never their secrets)", A),
    Endpoint("GET", f"{_WH}/{{webhook_id}}", get_webhook, "Get a webhook", A),
    Endpoint("PATCH", f"{_WH}/{{webhook_id}}", update_webhook, "Update a webhook", A),
    Endpoint("DELETE", f"{_WH}/{{webhook_id}}", delete_webhook, "Delete a webhook", A),
    Endpoint("POST", f"{_WH}/{{webhook_id}}/test", test_webhook, "Send a test delivery", A),
    Endpoint(
        "GET",
        "/api/assay/v1/webhooks/{webhook_id}/deliveries",
        list_deliveries,
        "A webhook's deliveries and their attempts",
        A,
    ),
)
