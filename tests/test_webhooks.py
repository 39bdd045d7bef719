"""Webhooks end to end: MLflow's webhook API on ``assay server`` driven by MLflow's own client,
deliveries to a real HTTP receiver on 127.0.0.1, signatures checked with the scheme MLflow
documents (written here from the description, and compared with MLflow's own signer),
retries on 5xx, the host policy against server-side request forgery, and the secret kept out
of every answer, log line and record.

Every server and receiver is started and stopped by the test; every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import REGISTRY_PRINCIPALS

from assay.core.http_server import asgi_in_background
from assay.registry import Registry
from assay.registry.tokens import TokenStore
from assay.server import create_app
from assay.webhooks.delivery import RetryPolicy, WebhookWorker
from assay.webhooks.events import ASSAY_EVENTS, EXAMPLES, MLFLOW_EVENTS
from assay.webhooks.store import WebhookStore
from deploy.stack import free_port

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
from mlflow.exceptions import MlflowException  # noqa: E402

SECRET = "whsec-test-Zq81-unique-signing-secret"
FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.05, backoff_max_s=0.2, timeout_s=5)


# --------------------------------------------------------------------------- the receiver


@dataclass
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on loopback that records every POST and answers the statuses
    scripted for it, in order (200 once the script is used up)."""

    statuses: list[int] = field(default_factory=list)
    answer: bytes = b"ok"
    location: str = ""  # sent as Location (a redirect's target)
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver got {len(self.requests)} of {count} requests")
            time.sleep(0.02)
        return list(self.requests)


@contextlib.contextmanager
def receiving(
    statuses: list[int] | None = None, answer: bytes = b"ok", location: str = ""
) -> Iterator[Receiver]:
    receiver = Receiver(list(statuses or []), answer, location)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            data = self.rfile.read(length)
            with lock:
                receiver.requests.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, data)
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            self.send_response(status)
            if receiver.location:
                self.send_header("location", receiver.location)
            self.send_header("content-length", str(len(receiver.answer)))
            self.end_headers()
            self.wfile.write(receiver.answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def verify(secret: str, received: Received, tolerance_s: int = 300) -> bool:
    """A receiver's check, as MLflow documents it: ``X-MLflow-Signature`` is ``v1,`` and the
    base64 HMAC-SHA256, keyed by the secret, of ``"<delivery id>.<timestamp>.<raw body>"``;
    timestamps older than the tolerance are refused."""
    delivery = received.headers.get("x-mlflow-delivery-id", "")
    stamp = received.headers.get("x-mlflow-timestamp", "")
    version, _, sent = received.headers.get("x-mlflow-signature", "").partition(",")
    if version != "v1" or not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance_s:
        return False
    content = f"{delivery}.{stamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(secret.encode(), content, hashlib.sha256).digest())
    return hmac.compare_digest(expected.decode(), sent)


# --------------------------------------------------------------------------- the server


@dataclass
class HookServer:
    url: str
    registry: Registry
    tokens: dict[str, str]
    worker: WebhookWorker

    def client(self, monkeypatch: pytest.MonkeyPatch, principal: str):
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", self.tokens[principal])
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        return mlflow.MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def http(self, principal: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[principal]}"}
        )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., HookServer]]:
    """``assay server`` on loopback with its webhook worker started by the app's lifespan
    (``deliver=False``: no worker; the test steps one itself)."""
    with contextlib.ExitStack() as stack:

        def start(deliver: bool = True, policy: RetryPolicy = FAST) -> HookServer:
            registry = stack.enter_context(Registry.open(f"sqlite:///{tmp_path / 'r.db'}"))
            store = TokenStore(registry)
            tokens = {
                p: store.create(p, r, g, created_by="setup")[1] for p, r, g in REGISTRY_PRINCIPALS
            }
            worker = WebhookWorker(registry, policy, poll_s=0.05)
            app = create_app(registry, webhook_worker=worker if deliver else None)
            running = stack.enter_context(asgi_in_background(app))
            stack.callback(worker.stop)
            return HookServer(running.url, registry, tokens, worker)

        yield start


def _allow(monkeypatch: pytest.MonkeyPatch, *receivers: Receiver) -> None:
    hosts = ",".join(f"http://127.0.0.1:{r.port}" for r in receivers)
    monkeypatch.setenv("ASSAY_WEBHOOK_HOSTS", hosts)


def _settle(store: WebhookStore, count: int, timeout_s: float = 30.0) -> None:
    """Wait until there are ``count`` deliveries and none is pending."""
    deadline = time.monotonic() + timeout_s
    while True:
        deliveries = store.deliveries()
        if len(deliveries) >= count and all(d.state != "pending" for d in deliveries):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries not settled: {deliveries}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- tests


def _registry_changes(client, name: str) -> None:
    """Registry changes that each fire one MLflow webhook event."""
    client.create_registered_model(name, tags={"team": "eval"}, description="first")
    client.create_model_version(name, "hf:/w/1", tags={"k": "v"}, description="one")
    client.set_model_version_tag(name, "1", "owner", "walt")
    client.delete_model_version_tag(name, "1", "k")
    client.set_registered_model_alias(name, "challenger", "1")
    client.delete_registered_model_alias(name, "challenger")


def _webhook_view(hook) -> tuple:
    return (
        hook.name,
        hook.url.rsplit(":", 1)[0],  # the receivers differ by port
        [str(e) for e in hook.events],
        str(hook.status),
        hook.description,
        hook.secret,
    )


def test_webhooks_answer_and_deliver_as_mlflows_own_server(
    mlflow_uri: str, start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same client calls against a real ``mlflow server`` and ``assay server``: the same
    answers, and the same deliveries to a receiver (the envelope's timestamps aside)."""
    server = start_server()
    name = f"wh{uuid.uuid4().hex[:8]}"
    events = [
        "registered_model.created",
        "model_version.created",
        "model_version_tag.set",
        "model_version_tag.deleted",
        "model_version_alias.created",
        "model_version_alias.deleted",
    ]
    seen: dict[str, tuple] = {}
    with receiving() as theirs, receiving() as ours:
        _allow(monkeypatch, ours)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        reference = mlflow.MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
        for label, receiver in (("mlflow", theirs), ("assay", ours)):
            client = reference if label == "mlflow" else server.client(monkeypatch, "ada")
            hook = client.create_webhook(
                name, receiver.url, events, description="both", secret=SECRET
            )
            try:
                got = client.get_webhook(hook.webhook_id)
                updated = client.update_webhook(hook.webhook_id, description="changed")
                tested = client.test_webhook(hook.webhook_id)
                receiver.wait_for(1)
                _registry_changes(client, name)
                received = receiver.wait_for(1 + len(events))
            finally:
                client.delete_webhook(hook.webhook_id)
                if label == "mlflow":  # the session's server: leave nothing behind
                    client.delete_registered_model(name)
            assert all(verify(SECRET, r) for r in received), label
            bodies = sorted(
                (r.json["entity"], r.json["action"], json.dumps(r.json["data"], sort_keys=True))
                for r in received
            )
            seen[label] = (
                _webhook_view(hook),
                _webhook_view(got),
                _webhook_view(updated),
                (tested.success, tested.response_status, tested.response_body),
                bodies,
                sorted(set(received[0].json)),
            )
    assert seen["assay"] == seen["mlflow"]


def test_mlflow_client_manages_webhooks(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(deliver=False)
    with receiving() as receiver:
        _allow(monkeypatch, receiver)
        ada = server.client(monkeypatch, "ada")
        created = ada.create_webhook(
            name="deploys",
            url=receiver.url,
            events=["model_version.created", "model_version_alias.created"],
            description="tell the deploy bot",
            secret=SECRET,
        )
        assert created.name == "deploys" and created.url == receiver.url
        assert [str(e) for e in created.events] == [
            "model_version.created",
            "model_version_alias.created",
        ]
        assert str(created.status) == "ACTIVE" and created.description == "tell the deploy bot"
        assert created.secret is None  # the answer does not carry it
        got = ada.get_webhook(created.webhook_id)
        assert (got.webhook_id, got.creation_timestamp) == (
            created.webhook_id,
            created.creation_timestamp,
        )
        second = ada.create_webhook("audit", receiver.url, ["registered_model.created"])
        listed = ada.list_webhooks()
        assert [w.webhook_id for w in listed] == [second.webhook_id, created.webhook_id]
        page = ada.list_webhooks(max_results=1)
        assert len(page) == 1 and page.token
        assert [w.name for w in ada.list_webhooks(max_results=1, page_token=page.token)] == [
            "deploys"
        ]

        updated = ada.update_webhook(
            created.webhook_id, events=["model_version_tag.set"], status="DISABLED"
        )
        assert [str(e) for e in updated.events] == ["model_version_tag.set"]
        assert str(updated.status) == "DISABLED" and updated.name == "deploys"
        assert updated.last_updated_timestamp >= created.last_updated_timestamp

        result = ada.test_webhook(created.webhook_id)
        assert result.success and result.response_status == 200
        (test,) = receiver.wait_for(1)
        assert test.json["entity"] == "model_version_tag" and test.json["action"] == "set"
        assert verify(SECRET, test)

        ada.delete_webhook(second.webhook_id)
        with pytest.raises(MlflowException) as missing:
            ada.get_webhook(second.webhook_id)
        assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"

        # Plain HTTP sees the same shapes, and never the secret.
        with server.http("ada") as http:
            raw = http.get(f"/api/2.0/mlflow/webhooks/{created.webhook_id}").json()
        assert raw["webhook"]["events"] == [{"entity": "MODEL_VERSION_TAG", "action": "SET"}]
        assert "secret" not in raw["webhook"]

        # Webhooks are an administrator's: a writer (even a promoter) may neither read nor
        # create them.
        for principal in ("walt", "pat"):
            other = server.client(monkeypatch, principal)
            with pytest.raises(MlflowException) as refused:
                other.create_webhook("x", receiver.url, ["model_version.created"])
            assert refused.value.error_code == "PERMISSION_DENIED"
            with pytest.raises(MlflowException) as refused:
                other.list_webhooks()
            assert refused.value.error_code == "PERMISSION_DENIED"


def test_registry_events_arrive_signed_in_mlflows_shapes(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    server = start_server()
    with receiving() as receiver:
        _allow(monkeypatch, receiver)
        ada = server.client(monkeypatch, "ada")
        events = [
            "registered_model.created",
            "model_version.created",
            "model_version_tag.set",
            "model_version_tag.deleted",
            "model_version_alias.created",
            "model_version_alias.deleted",
        ]
        ada.create_webhook("all", receiver.url, events, secret=SECRET)

        walt = server.client(monkeypatch, "walt")
        walt.create_registered_model("m", tags={"team": "eval"}, description="first")
        walt.create_model_version("m", "hf:/weights/1", tags={"k": "v"})
        walt.set_model_version_tag("m", "1", "owner", "walt")
        walt.delete_model_version_tag("m", "1", "k")
        walt.set_registered_model_tag("m", "ignored", "no MLflow event")
        walt.set_registered_model_alias("m", "challenger", "1")
        walt.delete_registered_model_alias("m", "challenger")

        got = receiver.wait_for(6)
        _settle(server.worker.store, 6)
        assert len(receiver.requests) == 6
        bodies = [r.json for r in got]
        assert [f"{b['entity']}.{b['action']}" for b in bodies] == events
        assert [b["data"] for b in bodies] == [
            {"name": "m", "tags": {"team": "eval"}, "description": "first"},
            {
                "name": "m",
                "version": "1",
                "source": "hf:/weights/1",
                "run_id": None,
                "tags": {"k": "v"},
                "description": None,
            },
            {"name": "m", "version": "1", "key": "owner", "value": "walt"},
            {"name": "m", "version": "1", "key": "k"},
            {"name": "m", "alias": "challenger", "version": "1"},
            {"name": "m", "alias": "challenger"},
        ]
        # Each data object has exactly the fields of MLflow's payload type for its event.
        types = mlflow.webhooks.types
        payload_types = [
            types.RegisteredModelCreatedPayload,
            types.ModelVersionCreatedPayload,
            types.ModelVersionTagSetPayload,
            types.ModelVersionTagDeletedPayload,
            types.ModelVersionAliasCreatedPayload,
            types.ModelVersionAliasDeletedPayload,
        ]
        for data, kind in zip((b["data"] for b in bodies), payload_types, strict=True):
            assert set(data) == set(typing.get_type_hints(kind))

        ids = [r.headers["x-mlflow-delivery-id"] for r in got]
        assert len(set(ids)) == 6
        for received in got:
            assert verify(SECRET, received)
            # MLflow's own signer agrees, byte for byte.
            assert received.headers["x-mlflow-signature"] == _generate_hmac_signature(
                SECRET,
                received.headers["x-mlflow-delivery-id"],
                received.headers["x-mlflow-timestamp"],
                received.body.decode(),
            )
            # A wrong secret, a changed body or a changed delivery id fail verification.
            assert not verify(SECRET + "x", received)
            assert not verify("", received)
            tampered = Received(dict(received.headers), received.body.replace(b'"m"', b'"n"'))
            assert not verify(SECRET, tampered)
            other_id = Received(
                {**received.headers, "x-mlflow-delivery-id": "other"}, received.body
            )
            assert not verify(SECRET, other_id)
        assert all(a.outcome == "delivered" for a in server.worker.store.attempts())


def test_a_receiver_answering_500_is_retried_until_it_takes_the_delivery(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server()
    with receiving(statuses=[500, 503]) as receiver:
        _allow(monkeypatch, receiver)
        ada = server.client(monkeypatch, "ada")
        hook = ada.create_webhook(
            "flaky", receiver.url, ["registered_model.created"], secret=SECRET
        )
        server.registry.create_model("m", actor="walt")
        got = receiver.wait_for(3)
        _settle(server.worker.store, 1)
        assert len(receiver.requests) == 3
        # One delivery: the same id, the same bytes, freshly signed each time.
        assert len({r.headers["x-mlflow-delivery-id"] for r in got}) == 1
        assert len({r.body for r in got}) == 1
        assert all(verify(SECRET, r) for r in got)
        store = server.worker.store
        (delivery,) = store.deliveries()
        assert (delivery.state, delivery.attempts) == ("delivered", 3)
        attempts = store.attempts(delivery.id)
        assert [(a.number, a.response_status, a.outcome) for a in attempts] == [
            (1, 500, "retry"),
            (2, 503, "retry"),
            (3, 200, "delivered"),
        ]
        # Backed off: the later attempts started after the earlier ones.
        assert attempts[0].started_at <= attempts[1].started_at <= attempts[2].started_at
        # The log, over HTTP, for administrators only.
        path = f"/api/assay/v1/webhooks/{hook.webhook_id}/deliveries"
        with server.http("ada") as http:
            (logged,) = http.get(path).json()["deliveries"]
        assert (logged["delivery_id"], logged["event"], logged["state"]) == (
            delivery.id,
            "registered_model.created",
            "delivered",
        )
        assert [(a["number"], a["response_status"], a["outcome"]) for a in logged["attempts"]] == [
            (1, 500, "retry"),
            (2, 503, "retry"),
            (3, 200, "delivered"),
        ]
        with server.http("walt") as http:
            assert http.get(path).status_code == 403


def test_retries_are_bounded_and_a_4xx_is_not_retried(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server()
    with (
        receiving(statuses=[500] * 10) as down,
        receiving(statuses=[404]) as wrong,
        receiving() as internal,
        receiving(statuses=[307]) as redirecting,
    ):
        redirecting.location = internal.url  # a redirect is not followed, even to an allowed host
        _allow(monkeypatch, down, wrong, redirecting, internal)
        ada = server.client(monkeypatch, "ada")
        ada.create_webhook("down", down.url, ["registered_model.created"])
        ada.create_webhook("wrong", wrong.url, ["registered_model.created"])
        ada.create_webhook("redirecting", redirecting.url, ["registered_model.created"])
        server.registry.create_model("m", actor="walt")
        _settle(server.worker.store, 3)
        states = {d.webhook_id: d for d in server.worker.store.deliveries()}
        by_name = {w.name: w.webhook_id for w in ada.list_webhooks()}
        assert (states[by_name["down"]].state, states[by_name["down"]].attempts) == (
            "gave_up",
            FAST.max_attempts,
        )
        assert (states[by_name["wrong"]].state, states[by_name["wrong"]].attempts) == (
            "failed",
            1,
        )
        assert len(down.requests) == FAST.max_attempts and len(wrong.requests) == 1
        assert states[by_name["redirecting"]].state == "failed"
        assert len(redirecting.requests) == 1 and internal.requests == []


def test_deliveries_come_from_the_event_log_and_survive_a_restart(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(deliver=False)
    registry = server.registry
    with receiving() as receiver:
        _allow(monkeypatch, receiver)
        registry.create_model("old")  # before the webhook: history is not replayed
        registry.create_version("old", "hf:/old")
        store = WebhookStore(registry)
        hook = store.create(
            "evals", receiver.url, ["evaluation.finished", "model_version.created"], actor="ada"
        )
        paused = store.create(
            "paused", receiver.url, ["model_version.created"], status="DISABLED", actor="ada"
        )
        # Written by the library (as the Dagster daemon writes), with no worker running.
        registry.create_model("m")
        registry.create_version("m", "hf:/w")
        registry.record_evaluation("m@v1", "boolq", {"exact_match": 0.75}, run_id="r1")
        assert receiver.requests == []
        # Two workers on one database (two replicas) deliver each event once.
        first = WebhookWorker(registry, FAST, environ=None)
        second = WebhookWorker(registry, FAST, environ=None)
        try:
            first.store.fan_out()
            assert second.store.fan_out() == 0
            second.run_once()
            first.run_once()
        finally:
            first.stop()
            second.stop()
        got = receiver.wait_for(2)
        assert len(receiver.requests) == 2
        assert [(r.json["entity"], r.json["action"]) for r in got] == [
            ("model_version", "created"),
            ("evaluation", "finished"),
        ]
        assert got[1].json["data"] == {
            "name": "m",
            "version": "1",
            "scenario": "boolq",
            "metrics": {"exact_match": 0.75},
            "run_id": "r1",
        }
        assert "x-mlflow-signature" not in got[0].headers  # no secret, no signature
        assert {d.webhook_id for d in store.deliveries()} == {hook.id}  # none to `paused`
        # Enabled again, it gets what happens from then on, not what it missed.
        store.update(paused.id, status="ACTIVE")
        registry.create_version("m", "hf:/w2")
        store.fan_out()
        assert [(d.webhook_id, d.event_name) for d in store.deliveries()][-1] == (
            paused.id,
            "model_version.created",
        )
        assert sum(d.webhook_id == paused.id for d in store.deliveries()) == 1


class GateKind(StrEnum):
    """The gate's event kinds, by their strings in the events table."""

    GATE_PENDING = "gate_pending"
    GATE_APPROVED = "gate_approved"
    GATE_REFUSED = "gate_refused"


def test_promotion_decisions_are_sent_as_assays_own_events(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(deliver=False)
    registry = server.registry
    with receiving() as receiver:
        _allow(monkeypatch, receiver)
        with server.http("ada") as http:
            answer = http.post(
                "/api/2.0/mlflow/webhooks",
                json={
                    "name": "gate",
                    "url": receiver.url,
                    "events": [
                        {"entity": "PROMOTION", "action": "PENDING"},
                        {"entity": "PROMOTION", "action": "REFUSED"},
                    ],
                    "assay_events": [{"entity": "PROMOTION", "action": "APPROVED"}],
                },
            )
        assert answer.status_code == 200, answer.text
        shown = answer.json()["webhook"]
        assert shown["events"] == []
        assert shown["assay_events"] == [
            {"entity": "PROMOTION", "action": action}
            for action in ("APPROVED", "PENDING", "REFUSED")
        ]
        registry.create_model("m")
        registry.create_version("m", "hf:/w")
        # Decisions appended through the registry's own event writer, by their kind strings.
        for kind, details in (
            (GateKind.GATE_PENDING, {"alias": "champion", "requested_by": "pat"}),
            (GateKind.GATE_REFUSED, {"alias": "champion", "reasons": ["boolq regressed"]}),
        ):
            registry._write(
                lambda s, kind=kind, details=details: registry._emit(
                    s, kind, "sensor", registry._now(), model="m", version=1, payload=details
                )
            )
        worker = WebhookWorker(registry, FAST)
        try:
            worker.run_once()
        finally:
            worker.stop()
        got = receiver.wait_for(2)
        assert [(r.json["entity"], r.json["action"]) for r in got] == [
            ("promotion", "pending"),
            ("promotion", "refused"),
        ]
        assert got[1].json["data"] == {
            "name": "m",
            "version": "1",
            "actor": "sensor",
            "details": {"alias": "champion", "reasons": ["boolq regressed"]},
        }


def test_prompt_events_follow_mlflows_prompt_payloads(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(deliver=False)
    registry = server.registry
    with receiving() as receiver:
        _allow(monkeypatch, receiver)
        WebhookStore(registry).create(
            "prompts",
            receiver.url,
            ["prompt.created", "prompt_version.created", "prompt_alias.created"],
            actor="ada",
        )
        registry.create_prompt("greet", description="hello")
        registry.create_prompt_version("greet", "Hello {{ name }}!", variables=["name"])
        registry.set_prompt_alias("greet", "production", 1)
        worker = WebhookWorker(registry, FAST)
        try:
            worker.run_once()
        finally:
            worker.stop()
        got = receiver.wait_for(3)
        assert [r.json["data"] for r in got] == [
            {"name": "greet", "tags": {}, "description": "hello"},
            {
                "name": "greet",
                "version": "1",
                "template": "Hello {{ name }}!",
                "tags": {},
                "description": None,
            },
            {"name": "greet", "alias": "production", "version": "1"},
        ]


def test_ssrf_targets_are_refused(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server()
    with receiving() as receiver, receiving() as internal:
        # Listed: the receiver, and (wrongly) the metadata address over https.
        monkeypatch.setenv(
            "ASSAY_WEBHOOK_HOSTS", f"http://127.0.0.1:{receiver.port},https://169.254.169.254"
        )
        ada = server.client(monkeypatch, "ada")
        refused = {
            "http://169.254.169.254/latest/meta-data/": "link-local",
            "https://169.254.169.254/latest/meta-data/": "link-local",
            "http://metadata.google.internal/computeMetadata/v1/": "metadata",
            "https://[::ffff:169.254.169.254]/": "link-local",
            internal.url: "not an allowed target",  # another port on the same host
            f"http://user:pw@127.0.0.1:{receiver.port}/": "credentials",
            f"ftp://127.0.0.1:{receiver.port}/": "not http or https",
            "http://10.0.0.5:8080/admin": "not an allowed target",
        }
        for url, reason in refused.items():
            with pytest.raises(MlflowException) as exc:
                ada.create_webhook("x", url, ["registered_model.created"])
            assert exc.value.error_code == "INVALID_PARAMETER_VALUE", url
            assert reason in str(exc.value), (url, str(exc.value))
        assert ada.list_webhooks() == []

        # Allowed when created; taken off the list later: the next attempt is refused
        # before any connection, and logged.
        hook = ada.create_webhook("ok", receiver.url, ["registered_model.created"])
        with pytest.raises(MlflowException):
            ada.update_webhook(hook.webhook_id, url=internal.url)
        monkeypatch.setenv("ASSAY_WEBHOOK_HOSTS", "https://example.org")
        server.registry.create_model("m")
        _settle(server.worker.store, 1)
        (delivery,) = server.worker.store.deliveries()
        (attempt,) = server.worker.store.attempts(delivery.id)
        assert delivery.state == "failed"
        assert "refused by the host policy" in attempt.error
        assert receiver.requests == [] and internal.requests == []


def test_the_secret_never_leaks(
    start_server: Callable[..., HookServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("ASSAY_WEBHOOK_SECRET_KEY", Fernet.generate_key().decode())
    caplog.set_level(logging.DEBUG)
    server = start_server()
    answers: list[str] = []
    # A hostile receiver echoes the secret back, and fails twice.
    with receiving(statuses=[500, 500], answer=f"bad {SECRET}".encode()) as receiver:
        _allow(monkeypatch, receiver)
        with server.http("ada") as http:
            made = http.post(
                "/api/2.0/mlflow/webhooks",
                json={
                    "name": "s",
                    "url": receiver.url,
                    "events": [{"entity": "REGISTERED_MODEL", "action": "CREATED"}],
                    "secret": SECRET,
                },
            )
            hook_id = made.json()["webhook"]["webhook_id"]
            answers.append(made.text)
            for call in (
                http.get("/api/2.0/mlflow/webhooks"),
                http.get(f"/api/2.0/mlflow/webhooks/{hook_id}"),
                http.patch(f"/api/2.0/mlflow/webhooks/{hook_id}", json={"description": "d"}),
                http.post(f"/api/2.0/mlflow/webhooks/{hook_id}/test", json={}),
                # Refused requests that carry the secret do not repeat it.
                http.post(
                    "/api/2.0/mlflow/webhooks",
                    json={"name": "s", "url": "http://10.1.1.1/", "events": [], "secret": SECRET},
                ),
                http.patch(
                    f"/api/2.0/mlflow/webhooks/{hook_id}",
                    json={"secret": SECRET + "\x00", "url": "http://10.1.1.1/"},
                ),
                http.get("/api/assay/v1/events"),
            ):
                answers.append(call.text)
        server.registry.create_model("m")
        received = receiver.wait_for(3)  # the test, then 500 and the retry
        _settle(server.worker.store, 2)
    assert all(verify(SECRET, r) for r in received)
    test_result = json.loads(answers[4])["result"]
    assert test_result == {
        "success": False,
        "response_status": 500,
        "response_body": "bad ***",
        "error_message": f"http://127.0.0.1:{receiver.port} answered 500",
    }
    server.worker.stop()

    assert all(SECRET not in text for text in answers)
    assert SECRET not in caplog.text
    # Nowhere in the database: encrypted at rest under the operator's key, absent from
    # every other table (events, deliveries, attempts).
    db = sqlite3.connect(server.registry.url.removeprefix("sqlite:///"))
    try:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in db.execute(f'SELECT * FROM "{table}"'):
                assert SECRET not in repr(row), table
    finally:
        db.close()
    attempts = server.worker.store.attempts()
    assert [a.outcome for a in attempts] == ["failed", "retry", "delivered"]


def test_event_names_and_examples_are_mlflows() -> None:
    from mlflow.entities.webhook import WebhookEvent, WebhookEventStr
    from mlflow.webhooks.types import get_example_payload_for_event

    assert set(MLFLOW_EVENTS) == set(typing.get_args(WebhookEventStr))
    for name in MLFLOW_EVENTS:
        assert EXAMPLES[name] == get_example_payload_for_event(WebhookEvent.from_str(name))
    # assay's own events use entities MLflow does not have, so they can never collide.
    mlflow_entities = {name.split(".")[0] for name in MLFLOW_EVENTS}
    assert not {name.split(".")[0] for name in ASSAY_EVENTS} & mlflow_entities


def test_a_secret_sealed_under_another_key_signs_nothing(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    server = start_server(deliver=False)
    with receiving() as receiver:
        _allow(monkeypatch, receiver)
        monkeypatch.setenv("ASSAY_WEBHOOK_SECRET_KEY", Fernet.generate_key().decode())
        store = WebhookStore(server.registry)
        store.create("k", receiver.url, ["registered_model.created"], secret=SECRET, actor="ada")
        monkeypatch.setenv("ASSAY_WEBHOOK_SECRET_KEY", Fernet.generate_key().decode())
        server.registry.create_model("m")
        worker = WebhookWorker(server.registry, FAST)
        try:
            worker.run_once()
        finally:
            worker.stop()
        (delivery,) = store.deliveries()
        (attempt,) = store.attempts(delivery.id)
        assert delivery.state == "failed" and receiver.requests == []
        assert "ASSAY_WEBHOOK_SECRET_KEY" in attempt.error and SECRET not in attempt.error


def test_a_database_error_does_not_carry_the_secret(
    start_server: Callable[..., HookServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import IntegrityError

    import assay.webhooks.store as store_module

    server = start_server(deliver=False)
    with receiving() as receiver:
        _allow(monkeypatch, receiver)
        fixed = uuid.UUID("00000000-0000-4000-8000-000000000001")
        monkeypatch.setattr(store_module.uuid, "uuid4", lambda: fixed)  # ids clash
        store = WebhookStore(server.registry)
        store.create("a", receiver.url, ["prompt.created"], secret=SECRET, actor="ada")
        with pytest.raises(IntegrityError) as clash:
            store.create("b", receiver.url, ["prompt.created"], secret=SECRET, actor="ada")
        assert "webhooks" in str(clash.value) and SECRET not in str(clash.value)


@contextlib.contextmanager
def _server_process(url: str, env: dict[str, str]) -> Iterator[str]:
    """``assay server`` as the command runs it (its webhook worker included), in a process
    of its own."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from assay.cli import main; sys.exit(main(sys.argv[1:]))",
            "server",
            "--registry-url",
            url,
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("assay server did not start")
            time.sleep(0.1)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_server_command_delivers_what_other_processes_wrote_across_a_restart(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.open(url) as registry:
        secret = TokenStore(registry).create("ada", "admin", (), created_by="setup")[1]
        registry.create_model("m")
        registry.create_version("m", "hf:/w")
    with receiving() as receiver, Registry.open(url) as registry:
        env = {
            **os.environ,
            "ASSAY_WEBHOOK_HOSTS": f"http://127.0.0.1:{receiver.port}",
            "ASSAY_WEBHOOK_POLL_S": "0.1",
            "ASSAY_WEBHOOK_BACKOFF_S": "0.05",
        }
        with _server_process(url, env) as base:
            made = httpx.post(
                f"{base}/api/2.0/mlflow/webhooks",
                headers={"Authorization": f"Bearer {secret}"},
                json={
                    "name": "evals",
                    "url": receiver.url,
                    "events": [{"entity": "EVALUATION", "action": "FINISHED"}],
                    "secret": SECRET,
                },
            )
            assert made.status_code == 200, made.text
            # Written by this process, as the daemon's sensor records evaluations.
            registry.record_evaluation("m@v1", "boolq", {"exact_match": 0.5})
            receiver.wait_for(1)
        # While the server is down: nothing is sent, nothing is lost.
        registry.record_evaluation("m@v1", "arithmetic", {"exact_match": 1.0})
        time.sleep(0.3)
        assert len(receiver.requests) == 1
        with _server_process(url, env):
            got = receiver.wait_for(2)
        assert [r.json["data"]["scenario"] for r in got] == ["boolq", "arithmetic"]
        assert all(verify(SECRET, r) for r in got)
        assert len(receiver.requests) == 2


def test_deliveries_on_postgres(postgres_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same store on Postgres (the shared deployment's database): two workers, each
    event delivered once, a 500 retried."""
    with Registry.open(postgres_database) as registry, receiving(statuses=[500]) as receiver:
        _allow(monkeypatch, receiver)
        store = WebhookStore(registry)
        store.create("pg", receiver.url, ["registered_model.created"], secret=SECRET, actor="ada")
        registry.create_model("a")
        registry.create_model("b")
        workers = [WebhookWorker(registry, FAST) for _ in range(2)]
        try:
            deadline = time.monotonic() + 30
            while len(receiver.requests) < 3 and time.monotonic() < deadline:
                for worker in workers:
                    worker.run_once()
                time.sleep(0.05)
        finally:
            for worker in workers:
                worker.stop()
        got = receiver.wait_for(3)
        assert sorted(r.json["data"]["name"] for r in got) == ["a", "a", "b"]
        assert all(verify(SECRET, r) for r in got)
        assert sorted((d.state, d.attempts) for d in store.deliveries()) == [
            ("delivered", 1),
            ("delivered", 2),
        ]
