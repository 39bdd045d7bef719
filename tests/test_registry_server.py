"""``assay server`` driven by the real MLflow client (and plain HTTP) on loopback.

The server runs in a thread under uvicorn on a free port over a fresh SQLite registry
(``registry_server`` in conftest.py); MLflow's client reads its token from
``MLFLOW_TRACKING_TOKEN`` and sends it as a Bearer token.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from assay.registry.tokens import TokenStore

if TYPE_CHECKING:
    from conftest import RegistryServer as Server

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
from mlflow.exceptions import MlflowException  # noqa: E402


@pytest.fixture
def server(start_registry_server, monkeypatch: pytest.MonkeyPatch) -> Server:
    # champion gated (for models and prompts), as a deployment's default; stages are not, so
    # the stage calls below move at once (tests/test_promotion_gate.py gates them).
    monkeypatch.setenv("ASSAY_GATED_ALIASES", "champion")
    monkeypatch.setenv("ASSAY_GATED_PROMPT_ALIASES", "champion")
    return start_registry_server()


def _client(server: Server, monkeypatch: pytest.MonkeyPatch, principal: str | None):
    """A client acting as ``principal``, until the next call of this function."""
    if principal is None:
        monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.tokens[principal])
    # Refused calls must fail at once, not after MLflow's retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def _code(exc: pytest.ExceptionInfo[MlflowException]) -> str:
    return exc.value.error_code


def test_mlflow_client_drives_the_registry(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _client(server, monkeypatch, "walt")
    created = client.create_registered_model("m", tags={"team": "eval"}, description="first")
    assert (created.name, created.description, created.tags) == ("m", "first", {"team": "eval"})
    client.create_registered_model("other")
    client.update_registered_model("m", description="second")
    for i in range(3):
        mv = client.create_model_version("m", f"hf:/weights/{i}", tags={"i": str(i)})
        assert mv.version == str(i + 1) and mv.source == f"hf:/weights/{i}"
        assert mv.status == "READY" and mv.tags == {"i": str(i)}
    client.update_model_version("m", "2", description="v2 notes")
    client.set_model_version_tag("m", "2", "k", "v")
    client.delete_model_version_tag("m", "2", "i")
    client.set_registered_model_tag("m", "owner", "walt")
    client.delete_registered_model_tag("m", "team")
    client.set_registered_model_alias("m", "challenger", "2")

    got = client.get_model_version("m", "2")
    assert (got.description, got.tags, got.aliases) == ("v2 notes", {"k": "v"}, ["challenger"])
    assert client.get_model_version_by_alias("m", "challenger").version == "2"
    model = client.get_registered_model("m")
    assert (model.description, model.tags) == ("second", {"owner": "walt"})
    assert model.aliases == {"challenger": "2"}
    assert client.get_model_version_download_uri("m", "3") == "hf:/weights/2"

    pat = _client(server, monkeypatch, "pat")
    moved = pat.transition_model_version_stage("m", "1", "Production")
    assert moved.current_stage == "Production"
    pat.transition_model_version_stage("m", "3", "Production", archive_existing_versions=True)
    latest = {v.current_stage: v.version for v in pat.get_latest_versions("m")}
    assert latest == {"None": "2", "Production": "3", "Archived": "1"}
    assert [v.version for v in pat.get_latest_versions("m", stages=["Archived"])] == ["1"]
    pat.delete_registered_model_alias("m", "challenger")
    with pytest.raises(MlflowException) as exc:
        pat.get_model_version_by_alias("m", "challenger")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"  # as MLflow answers a missing alias

    # Search: filter, order, pagination.
    names = [m.name for m in pat.search_registered_models(order_by=["name DESC"])]
    assert names == ["other", "m"]
    assert [m.name for m in pat.search_registered_models("name LIKE 'o%'")] == ["other"]
    assert [m.name for m in pat.search_registered_models("tags.owner = 'walt'")] == ["m"]
    page = pat.search_registered_models(max_results=1)
    assert [m.name for m in page] == ["m"] and page.token
    rest = pat.search_registered_models(max_results=1, page_token=page.token)
    assert [m.name for m in rest] == ["other"] and not rest.token
    found = pat.search_model_versions("name = 'm' AND version_number >= 2")
    assert sorted(v.version for v in found) == ["2", "3"]
    by_version = pat.search_model_versions("name='m'", order_by=["version_number ASC"])
    assert [v.version for v in by_version] == ["1", "2", "3"]
    first = pat.search_model_versions("name='m'", max_results=2)
    assert [v.version for v in first] == ["3", "2"] and first.token
    second = pat.search_model_versions("name='m'", max_results=2, page_token=first.token)
    assert [v.version for v in second] == ["1"] and not second.token
    assert list(pat.search_model_versions("name='absent'")) == []
    with pytest.raises(MlflowException) as exc:
        pat.search_model_versions("name = 'm' OR name = 'other'")
    assert _code(exc) == "INVALID_PARAMETER_VALUE"

    # Every change is in the log under the principal who made it, never a caller's string.
    actors = {(e.kind.value, e.actor) for e in server.registry.events(model="m")}
    assert ("model_created", "walt") in actors and ("alias_removed", "pat") in actors
    assert ("stage_changed", "pat") in actors and ("tag_deleted", "walt") in actors
    assert {a for _, a in actors} == {"walt", "pat"}


def test_authentication_roles_and_grants(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    walt = _client(server, monkeypatch, "walt")
    walt.create_registered_model("granted")
    walt.create_registered_model("elsewhere")
    walt.create_model_version("granted", "hf:/a")

    anonymous = _client(server, monkeypatch, None)
    with pytest.raises(MlflowException) as exc:
        anonymous.get_registered_model("granted")
    assert _code(exc) == "UNAUTHENTICATED"
    response = httpx.get(f"{server.url}/api/2.0/mlflow/registered-models/get?name=granted")
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHENTICATED"
    bogus = httpx.get(
        f"{server.url}/api/2.0/mlflow/registered-models/get?name=granted",
        headers={"Authorization": "Bearer assay_not-a-real-token"},
    )
    assert bogus.status_code == 401

    rita = _client(server, monkeypatch, "rita")
    assert rita.get_registered_model("granted").name == "granted"
    with pytest.raises(MlflowException) as exc:
        rita.create_model_version("granted", "hf:/b")
    assert _code(exc) == "PERMISSION_DENIED"
    forbidden = httpx.post(
        f"{server.url}/api/2.0/mlflow/registered-models/create",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {server.tokens['rita']}"},
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["error_code"] == "PERMISSION_DENIED"

    gina = _client(server, monkeypatch, "gina")
    assert gina.create_model_version("granted", "hf:/c").version == "2"
    with pytest.raises(MlflowException) as exc:
        gina.create_model_version("elsewhere", "hf:/c")
    assert _code(exc) == "PERMISSION_DENIED"

    # A writer moves ordinary aliases; champion (gated) needs a promoter. (MLflow reads the
    # token from the environment on every call, so each principal's client is made afresh.)
    walt = _client(server, monkeypatch, "walt")
    walt.set_registered_model_alias("granted", "challenger", "1")
    with pytest.raises(MlflowException) as exc:
        walt.set_registered_model_alias("granted", "champion", "1")
    assert _code(exc) == "PERMISSION_DENIED"
    with pytest.raises(MlflowException) as exc:
        walt.transition_model_version_stage("granted", "1", "Production")
    assert _code(exc) == "PERMISSION_DENIED"

    pat = _client(server, monkeypatch, "pat")
    with pytest.raises(MlflowException, match="pending") as exc:  # no verdict yet
        pat.set_registered_model_alias("granted", "champion", "1")
    assert _code(exc) == "INVALID_STATE"
    pending = server.registry.events(model="granted")[-1]
    assert (pending.kind.value, pending.actor) == ("gate_pending", "pat")

    # Revocation takes effect on the next request.
    walt = _client(server, monkeypatch, "walt")
    info = next(t for t in TokenStore(server.registry).list() if t.principal == "walt")
    TokenStore(server.registry).revoke(info.id, revoked_by="setup")
    with pytest.raises(MlflowException) as exc:
        walt.get_registered_model("granted")
    assert _code(exc) == "UNAUTHENTICATED"


def test_reserved_tags_the_gate_and_refusals(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    pat = _client(server, monkeypatch, "pat")
    pat.create_registered_model("m")
    pat.create_model_version("m", "hf:/a")
    for call in (
        lambda: pat.set_model_version_tag("m", "1", "gate.mmlu", "passed"),
        lambda: pat.set_registered_model_tag("m", "eval.boolq.acc", "1.0"),
        lambda: pat.create_model_version("m", "hf:/b", tags={"gate.boolq": "passed"}),
        lambda: pat.create_registered_model("n", tags={"eval.x.y": "1"}),
    ):
        with pytest.raises(MlflowException, match="reserved") as exc:
            call()
        assert _code(exc) == "INVALID_PARAMETER_VALUE"
    assert server.registry.resolve("m@v1").tags == {}
    assert [v.version for v in server.registry.list_versions("m")] == [1]

    # A per-partition gate tag (written in process) is no verdict: even with "passed" the
    # promoter's move waits for a promotion decision.
    server.registry.set_tag("m", "gate.mmlu", "passed", version=1, actor="gate")
    with pytest.raises(MlflowException, match="pending") as exc:
        pat.set_registered_model_alias("m", "champion", "1")
    assert _code(exc) == "INVALID_STATE"
    waiting = server.registry.events(model="m")[-1]
    assert (waiting.kind.value, waiting.actor) == ("gate_pending", "pat")

    with pytest.raises(MlflowException) as exc:
        pat.create_registered_model("m")
    assert _code(exc) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as exc:
        pat.get_model_version("m", "9")
    assert _code(exc) == "RESOURCE_DOES_NOT_EXIST"
    for call in (
        lambda: pat.rename_registered_model("m", "n"),
        lambda: pat.delete_model_version("m", "1"),
        lambda: pat.delete_registered_model("m"),
    ):
        with pytest.raises(MlflowException, match="permanent") as exc:
            call()
        assert _code(exc) == "NOT_IMPLEMENTED"
    assert server.registry.get_model("m").latest_version == 1

    # Hostile text: control characters, oversize fields and bodies.
    headers = {"Authorization": f"Bearer {server.tokens['pat']}"}
    base = f"{server.url}/api/2.0/mlflow"
    for body in (
        {"name": "m", "key": "note", "value": "ok\n1999-01-01 forged line"},
        {"name": "m", "key": "note", "value": "\x1b[2J"},
        {"name": "m", "key": "n\u202eote", "value": "x"},
    ):
        response = httpx.post(f"{base}/registered-models/set-tag", json=body, headers=headers)
        assert response.status_code == 400, body
        assert "control characters" in response.json()["message"]
    big = httpx.patch(
        f"{base}/registered-models/update",
        json={"name": "m", "description": "x" * (64 * 1024 + 1)},
        headers=headers,
    )
    assert big.status_code == 400 and "at most 65536 bytes" in big.json()["message"]
    huge = httpx.post(
        f"{base}/registered-models/create",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert huge.status_code == 400 and huge.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert server.registry.get_model("m").tags == {}


def test_assay_endpoints_history_prompts_verdicts_and_openapi(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime, timedelta

    walt = _client(server, monkeypatch, "walt")
    walt.create_registered_model("m")
    walt.create_model_version("m", "hf:/a")
    walt.create_model_version("m", "hf:/b")
    walt.set_registered_model_alias("m", "challenger", "1")
    between = datetime.now().astimezone() + timedelta(milliseconds=5)
    time.sleep(0.02)
    walt.set_registered_model_alias("m", "challenger", "2")
    server.registry.record_evaluation("m@v2", "boolq", {"exact_match": 0.5}, actor="recorder")
    server.registry.set_tag("m", "gate.boolq", "passed", version=2, actor="gate")

    http = httpx.Client(
        base_url=f"{server.url}/api/assay/v1",
        headers={"Authorization": f"Bearer {server.tokens['walt']}"},
    )
    events = http.get("/events", params={"model": "m"}).json()["events"]
    assert [e["kind"] for e in events][:4] == [
        "model_created",
        "version_created",
        "version_created",
        "alias_set",
    ]
    early = http.get("/events", params={"model": "m", "as_of": between.isoformat()}).json()
    assert [e["kind"] for e in early["events"]][-1] == "alias_set"
    after = http.get("/events", params={"after": events[-2]["id"]}).json()["events"]
    assert [e["id"] for e in after] == [events[-1]["id"]]
    held = http.get("/models/m/aliases/challenger", params={"as_of": between.isoformat()})
    assert held.json()["model_version"]["version"] == "1"
    now = http.get("/models/m/aliases/challenger", params={"as_of": "2999-01-01T00:00:00"})
    assert now.json()["model_version"]["version"] == "2"
    verdicts = http.get("/models/m/versions/2/verdicts").json()
    assert verdicts["gates"] == {"boolq": "passed"}
    assert verdicts["evaluations"][0]["payload"]["metrics"] == {"exact_match": 0.5}
    assert http.get("/whoami").json() == {
        "principal": "walt",
        "role": "writer",
        "grants": [],
        "reserved_tag_prefixes": ["gate.", "eval."],
    }

    assert http.post("/prompts", json={"name": "qa", "description": "d"}).status_code == 200
    created = http.post(
        "/prompts/qa/versions",
        json={"template": "Q: {{question}}\nA:", "variables": ["question"]},
    ).json()
    assert created["version"]["uri"] == "prompts:/qa/1"
    bad = http.post("/prompts/qa/versions", json={"template": "{{x}}", "variables": []})
    assert bad.status_code == 400 and "not declared" in bad.json()["message"]
    assert http.post("/prompts/qa/aliases", json={"alias": "prod", "version": 1}).is_success
    resolved = http.get("/prompts/resolve", params={"uri": "prompts:/qa@prod"}).json()
    assert resolved["version"]["template"] == "Q: {{question}}\nA:"
    gated = http.post("/prompts/qa/aliases", json={"alias": "champion", "version": 1})
    assert gated.status_code == 403
    assert server.registry.events(prompt="qa")[-1].actor == "walt"

    # Tokens over HTTP: admin only; the secret comes back once and works at once.
    assert http.get("/tokens").status_code == 403
    admin = {"Authorization": f"Bearer {server.tokens['ada']}"}
    made = httpx.post(
        f"{server.url}/api/assay/v1/tokens",
        json={"principal": "newbie", "role": "reader"},
        headers=admin,
    ).json()
    assert made["token"]["created_by"] == "ada" and "secret" not in made["token"]
    newbie = {"Authorization": f"Bearer {made['secret']}"}
    assert httpx.get(f"{server.url}/api/assay/v1/whoami", headers=newbie).json()["role"] == (
        "reader"
    )
    listed = httpx.get(f"{server.url}/api/assay/v1/tokens", headers=admin)
    assert made["secret"] not in listed.text and "newbie" in listed.text
    # Tokens that made requests show when; gina's has not been used in this test.
    used = {t["principal"]: t["last_used_timestamp"] for t in listed.json()["tokens"]}
    assert used["gina"] is None
    assert used["newbie"] is not None and used["ada"] >= used["newbie"] - 60_000
    revoke = f"{server.url}/api/assay/v1/tokens/{made['token']['id']}/revoke"
    assert httpx.post(revoke, headers=admin).json()["token"]["revoked_by"] == "ada"
    assert httpx.get(f"{server.url}/api/assay/v1/whoami", headers=newbie).status_code == 401

    document = httpx.get(f"{server.url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/api/2.0/mlflow/registered-models/alias" in document["paths"]
    assert set(document["paths"]["/api/2.0/mlflow/registered-models/alias"]) == {
        "get",
        "post",
        "delete",
    }
    assert "/api/assay/v1/events" in document["paths"]
    missing = http.get("/no-such-endpoint")
    assert missing.status_code == 404 and missing.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_prices_over_http_need_a_writer_and_valid_numbers(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    walt = _client(server, monkeypatch, "walt")
    walt.create_registered_model("m")
    walt.create_model_version("m", "hf:/a")

    def as_(principal: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{server.url}/api/assay/v1/models/m/versions",
            headers={"Authorization": f"Bearer {server.tokens[principal]}"},
        )

    price = {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}
    assert as_("rita").post("/1/prices", json=price).status_code == 403
    assert as_("gina").post("/1/prices", json=price).status_code == 403  # writer elsewhere only
    done = as_("walt").post("/1/prices", json=price)
    assert done.status_code == 200 and done.json()["prices"] == price
    assert as_("rita").get("/1/prices").json()["prices"] == price
    assert server.registry.get_version("m@v1").prices.token_prices().prompt_per_1k == 0.5
    (event,) = [e for e in server.registry.events(model="m") if e.kind.value == "prices_set"]
    assert event.actor == "walt" and event.payload["after"] == price

    for body, why in (
        ({"prompt_per_1k": -1}, "finite non-negative"),
        ({"prompt_per_1k": "cheap"}, "must be a number"),
        ({"prompt_per_1k": 1, "discount": 0.1}, "unknown price key(s): discount"),
    ):
        refused = as_("walt").post("/1/prices", json=body)
        assert refused.status_code == 400 and why in refused.json()["message"], refused.text
    assert as_("walt").get("/1/prices").json()["prices"] == price  # nothing half-changed
    assert as_("walt").post("/9/prices", json=price).status_code == 404
    cleared = as_("walt").post("/1/prices", json={}).json()["prices"]
    assert cleared == {"prompt_per_1k": None, "completion_per_1k": None}
    kinds = [e.kind.value for e in server.registry.events(model="m")]
    assert kinds.count("prices_set") == 2


def test_alias_moved_over_http_is_a_promotion(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_cache_dir: Path
) -> None:
    """MlflowClient → server → registry → the promotion sensor's run request (one sensor
    evaluation against a test instance); the same path under the real daemon is
    tests/test_daemon.py::test_an_alias_moved_over_http_launches_an_evaluation_run."""
    from dagster import SensorResult, build_sensor_context, instance_for_test

    from resources import ModelsResource, SuiteResource, assay_resources
    from sensors.promotion import RANGE_START, model_promotion_sensor

    walt = _client(server, monkeypatch, "walt")
    walt.create_registered_model("smol")
    walt.create_model_version("smol", "bundled:smollm2-135m-instruct")
    pat = _client(server, monkeypatch, "pat")
    pat.set_registered_model_alias("smol", "canary", "1")  # ungated: moves at once

    resources = assay_resources(
        storage_url=str(tmp_path / "storage"),
        registry_url=server.registry.url,
        suite=SuiteResource(max_instances=1),
        models=ModelsResource(
            cache_dir=str(model_cache_dir),
            request_cache_url=f"sqlite:///{tmp_path / 'requests.db'}",
        ),
    )
    with instance_for_test() as instance:
        context = build_sensor_context(instance=instance, resources=resources)
        result = model_promotion_sensor(context)
    assert isinstance(result, SensorResult)
    [request] = result.run_requests
    assert request.tags[RANGE_START].startswith("smol@v1|")
    assert "canary" in request.tags["assay/reason"]
    moved = [e for e in server.registry.events(model="smol") if e.kind.value == "alias_set"]
    assert [(e.actor, e.payload["after"]) for e in moved] == [("pat", 1)]
