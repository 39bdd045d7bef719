"""Promotion decisions that cannot be walked around.

The bypass matrix: every path that can move a gated target (the library, the CLI, the assay
API, the MLflow client's alias and stage calls, the MLflow alias sync, a prompt alias) in
every state (no verdict, a failed verdict, a passed one, one judged on an older suite or code,
no incumbent) gets the same answer from the one ruling. Verdict states are written with
``Registry.record_verdict``, the call the promotion sensor makes; the sensor's own flow
(pending → evaluation → verdict → move) runs after the matrix, in process, on real runs
against a loopback model server whose answers are known (``right`` / ``wrong``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from dagster import (
    AssetSelection,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from explorer_browser import rendered_pages
from live_deployment import GATED_SUITE, arithmetic_app

from assay.cli import main as cli_main
from assay.compare.decision import judge_promotion
from assay.core.http_server import asgi_in_background as serve_http
from assay.evaluate.prompt_trials import PROMPT_TRIAL_TAG, TRIAL_MODEL_TAG, PromptTrial, trial_store
from assay.evaluate.suite import load_suite
from assay.integrations.mlflow import AliasChange, MlflowVersion, mirror_changes, mirror_version
from assay.registry import EventKind, Registry, RegistryError
from assay.registry.gating import (
    GateTarget,
    PromotionPending,
    PromotionRefused,
    SuiteIdentity,
    TargetKind,
    current_suite_identity,
)
from assay.registry.tokens import TokenStore
from assay.server import create_app
from assay.serving import asgi_in_background
from assets import all_assets
from assets.checks import all_checks
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.gate import GATE_PENDING_TAG
from sensors.promotion import EVALUATION_ASSETS, model_promotion_sensor

# A hand-written refusal with numbers, as the sensor would record it.
REFUSAL = {
    "approved": False,
    "summary": "refused: arithmetic exact_match: fail, estimate 0.125 below 0.5",
    "criteria": [],
}
STATES = ("no_verdict", "failed", "passed", "stale", "no_incumbent")
EXPECTED = {
    "no_verdict": "pending",
    "failed": "refused",
    "passed": "moved",
    "stale": "pending",
    "no_incumbent": "pending",
}


@pytest.fixture
def gated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(GATED_SUITE)
    monkeypatch.setenv("ASSAY_SUITE", str(suite))
    monkeypatch.setenv("ASSAY_GATED_ALIASES", "champion")
    monkeypatch.setenv("ASSAY_GATED_STAGES", "Production")
    monkeypatch.setenv("ASSAY_GATED_PROMPT_ALIASES", "production")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return suite


def _arrange(reg: Registry, kind: TargetKind, state: str, owner: str = "m") -> tuple[str, int]:
    """Versions 1 (the incumbent, forced in) and 2 (the candidate) and the state's verdict.
    Returns the target's name and the candidate's number."""
    if kind is TargetKind.PROMPT_ALIAS:
        reg.create_prompt(owner)
        for text in ("Answer: {{input}}", "Reply: {{input}}"):
            reg.create_prompt_version(owner, text, ["input"])
        name = "production"
    else:
        reg.get_or_create_model(owner)
        for _ in range(2):
            reg.create_version(owner, "bundled:smollm2-135m-instruct")
        name = "champion" if kind is TargetKind.ALIAS else "Production"
    target = GateTarget(kind, owner, name)
    incumbent = None if state == "no_incumbent" else f"{owner}@v1"
    if incumbent is not None:
        _force(reg, target, 1)
    identity = reg.suite_identity()
    if state == "stale":  # judged on the same suite with older scoring code
        old = {**identity.code_versions, "metric_tables": "0ld"}
        identity = SuiteIdentity(identity.digest, old)
    if state in ("failed", "passed", "stale"):
        record = REFUSAL if state == "failed" else {"approved": True, "summary": "approved"}
        reg.record_verdict(
            target, f"{owner}@v2", incumbent, identity, record, approved=state != "failed"
        )
    return name, 2


def _force(reg: Registry, target: GateTarget, version: int) -> None:
    why = {"force": True, "reason": "initial holder", "actor": "setup"}
    if target.kind is TargetKind.ALIAS:
        reg.request_alias(target.owner, target.name, version, **why)
    elif target.kind is TargetKind.STAGE:
        reg.request_stage(target.owner, version, target.name, **why)
    else:
        reg.request_prompt_alias(target.owner, target.name, version, **why)


def _holder(reg: Registry, kind: TargetKind, owner: str = "m") -> int | None:
    if kind is TargetKind.ALIAS:
        return reg.get_model(owner).aliases.get("champion")
    if kind is TargetKind.STAGE:
        held = [v.version for v in reg.list_versions(owner) if v.stage.value == "Production"]
        return held[-1] if held else None
    try:
        return reg.get_prompt(f"prompts:/{owner}@production").version
    except RegistryError:
        return None


def _check_outcome(reg: Registry, kind: TargetKind, state: str, outcome: str, owner="m"):
    assert outcome == EXPECTED[state], (kind, state, outcome)
    holder = _holder(reg, kind, owner)
    if outcome == "moved":
        assert holder == 2
    else:
        assert holder == (None if state == "no_incumbent" else 1)
    kinds = [e.kind for e in reg.decisions(model=owner, prompt=owner)]
    if outcome == "pending":
        assert kinds[-1] is EventKind.GATE_PENDING
        (waiting,) = [e for e in reg.open_pending() if e.payload["candidate"] == f"{owner}@v2"]
        assert waiting.payload["suite"] == reg.suite_identity().to_json()
    if outcome == "refused":
        assert kinds[-1] is EventKind.GATE_REFUSED


# ------------------------------------------------------------------ the matrix, in process


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", [TargetKind.ALIAS, TargetKind.STAGE, TargetKind.PROMPT_ALIAS])
def test_library(gated_env, registry_url, kind, state):
    reg = Registry.open(registry_url)
    name, version = _arrange(reg, kind, state)
    if kind is TargetKind.ALIAS:
        result = reg.request_alias("m", name, version)
    elif kind is TargetKind.STAGE:
        result = reg.request_stage("m", version, name)
    else:
        result = reg.request_prompt_alias("m", name, version)
    _check_outcome(reg, kind, state, result.outcome.value)
    if state == "failed":
        assert REFUSAL["summary"] in result.reason
    reg.close()


@pytest.mark.parametrize("state", STATES)
def test_library_calls_that_promise_a_move_raise(gated_env, registry_url, state):
    reg = Registry.open(registry_url)
    _arrange(reg, TargetKind.ALIAS, state)
    expected = {"pending": PromotionPending, "refused": PromotionRefused}.get(EXPECTED[state])
    if expected is None:
        assert reg.set_alias("m", "champion", 2).aliases == ("champion",)
    else:
        with pytest.raises(expected) as raised:
            reg.set_alias("m", "champion", 2)
        assert EXPECTED[state] in raised.value.message
    reg.close()


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", [TargetKind.ALIAS, TargetKind.STAGE, TargetKind.PROMPT_ALIAS])
def test_cli(gated_env, registry_url, kind, state, capsys):
    reg = Registry.open(registry_url)
    name, version = _arrange(reg, kind, state)
    args = ["registry", "alias", "set", "m", name, str(version)]
    if kind is TargetKind.STAGE:
        args = ["registry", "stage", "m", str(version), name]
    elif kind is TargetKind.PROMPT_ALIAS:  # `assay prompts alias` asks the same ruling
        args = ["prompts", "alias", "m", name, str(version)]
    code = cli_main([*args, "--registry-url", registry_url])
    out = capsys.readouterr()
    outcome = (out.out or out.err).split(":", 1)[0]
    assert code == (1 if outcome == "refused" else 0)
    _check_outcome(reg, kind, state, outcome)
    reg.close()


def test_cli_force_needs_a_reason_and_records_it(gated_env, registry_url, capsys):
    reg = Registry.open(registry_url)
    _arrange(reg, TargetKind.ALIAS, "failed")
    base = ["registry", "alias", "set", "m", "champion", "2", "--registry-url", registry_url]
    assert cli_main([*base, "--force"]) == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert cli_main([*base, "--force", "--reason", "incident 42", "--actor", "ops"]) == 0
    forced = reg.decisions(model="m")[-1]
    assert forced.kind is EventKind.GATE_APPROVED and forced.actor == "ops"
    assert forced.payload["forced"] and forced.payload["reason"] == "incident 42"
    moved = reg.events(model="m", kind=EventKind.ALIAS_MOVED)[-1]
    assert moved.payload["forced"] == "incident 42" and moved.payload["decision"] == forced.id
    reg.close()


def _api(server, principal: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/assay/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {server.tokens[principal]}"},
        timeout=30,
    )


def _api_outcome(response: httpx.Response) -> str:
    if response.status_code == 200:
        return response.json()["status"]
    assert response.status_code == 400, response.text
    return response.json()["message"].split(" ", 1)[0].rstrip(":")


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", [TargetKind.ALIAS, TargetKind.STAGE, TargetKind.PROMPT_ALIAS])
def test_assay_api(gated_env, start_registry_server, kind, state):
    server = start_registry_server()
    reg = server.registry
    name, version = _arrange(reg, kind, state)
    if kind is TargetKind.ALIAS:
        response = _api(server, "pat", "/models/m/aliases", {"alias": name, "version": version})
    elif kind is TargetKind.STAGE:
        response = _api(server, "pat", f"/models/m/versions/{version}/stage", {"stage": name})
    else:
        response = _api(server, "pat", "/prompts/m/aliases", {"alias": name, "version": version})
    _check_outcome(reg, kind, state, _api_outcome(response))
    if EXPECTED[state] == "pending":
        assert response.json()["event"]["kind"] == "gate_pending"


def test_assay_api_force_is_for_admins_with_a_reason(gated_env, start_registry_server):
    server = start_registry_server()
    _arrange(server.registry, TargetKind.ALIAS, "failed")
    body = {"alias": "champion", "version": 2, "force": True}
    denied = _api(server, "pat", "/models/m/aliases", {**body, "reason": "x"})
    assert denied.status_code == 403 and "admin" in denied.json()["message"]
    assert _api(server, "ada", "/models/m/aliases", body).status_code == 400
    done = _api(server, "ada", "/models/m/aliases", {**body, "reason": "rollback drill"})
    assert done.json()["status"] == "moved"
    forced = server.registry.decisions(model="m")[-1]
    assert (forced.actor, forced.payload["role"], forced.payload["reason"]) == (
        "ada",
        "admin",
        "rollback drill",
    )


def _mlflow_outcome(call) -> tuple[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as exc:
        message = str(exc.message).split(": ", 1)[1]  # after MLflow's "ERROR_CODE: "
        return message.split(" ", 1)[0].rstrip(":"), message
    return "moved", ""


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", [TargetKind.ALIAS, TargetKind.STAGE])
def test_mlflow_client(gated_env, start_registry_server, monkeypatch, kind, state):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    server = start_registry_server()
    reg = server.registry
    name, version = _arrange(reg, kind, state)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.tokens["pat"])
    client = mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    if kind is TargetKind.ALIAS:
        outcome, message = _mlflow_outcome(
            lambda: client.set_registered_model_alias("m", name, str(version))
        )
    else:
        outcome, message = _mlflow_outcome(
            lambda: client.transition_model_version_stage("m", str(version), name)
        )
    _check_outcome(reg, kind, state, outcome)
    if outcome == "refused":
        assert REFUSAL["summary"] in message
    if outcome == "pending":
        assert "was not moved yet" in message


@pytest.mark.parametrize("state", STATES)
def test_mlflow_alias_sync(gated_env, registry_url, state):
    reg = Registry.open(registry_url)
    reg.create_model("m")
    target = MlflowVersion("m", "7", 1_700_000_000_000, "models:/m/7")
    mirrored, _ = mirror_version(reg, target, "mlflow-sync")  # m@v1: the candidate
    assert mirrored.key == "m@v1"
    reg.create_version("m", "bundled:smollm2-135m-instruct")  # m@v2: the incumbent
    gate = GateTarget(TargetKind.ALIAS, "m", "champion")
    incumbent = None if state == "no_incumbent" else "m@v2"
    if incumbent:
        _force(reg, gate, 2)
    identity = reg.suite_identity()
    if state == "stale":
        identity = SuiteIdentity("an older suite", identity.code_versions)
    if state in ("failed", "passed", "stale"):
        record = REFUSAL if state == "failed" else {"approved": True, "summary": "approved"}
        reg.record_verdict(gate, "m@v1", incumbent, identity, record, approved=state != "failed")
    change = AliasChange("m", "champion", None, "7", 1_700_000_000_000, target)
    (result,) = mirror_changes([change], reg, register_unservable=True, move_gated=True)
    outcome = {"alias_set": "moved"}.get(result.action, result.action)
    assert outcome == EXPECTED[state], (state, result)
    holder = reg.get_model("m").aliases.get("champion")
    assert holder == (1 if outcome == "moved" else (None if incumbent is None else 2))
    reg.close()


def test_a_stale_verdict_names_what_changed(gated_env, registry_url):
    reg = Registry.open(registry_url)
    _arrange(reg, TargetKind.ALIAS, "stale")
    result = reg.request_alias("m", "champion", 2)
    assert result.outcome.value == "pending"
    assert "metric_tables code 0ld" in result.reason
    # A changed suite file (a criterion added) makes every earlier verdict stale too.
    reg.request_alias("m", "champion", 1)  # already there: no event
    before = reg.suite_identity()
    gated_env.write_text(GATED_SUITE + "    - {family: toxicity, at_most: 0.5}\n")
    assert reg.suite_identity().digest != before.digest
    reg.close()


# ------------------------------------------------------------------ the sensor's flow


@pytest.fixture
def flow(gated_env, tmp_path, model_cache_dir):
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    with asgi_in_background(arithmetic_app()) as model_server:
        registry = Registry.open(registry_url)
        registry.create_model("n")
        for answer in ("right", "wrong", "right"):
            registry.create_version("n", f"openai:{model_server.base_url}#{answer}")
        resources = assay_resources(
            storage_url=str(tmp_path / "storage"),
            registry_url=registry_url,
            suite=SuiteResource(path=str(gated_env)),
            models=ModelsResource(
                cache_dir=str(model_cache_dir),
                request_cache_url=f"sqlite:///{tmp_path / 'requests.db'}",
            ),
        )
        with instance_for_test() as instance:
            assert materialize(
                all_assets,
                selection=AssetSelection.assets("scenario_instances"),
                partition_key="arithmetic",
                instance=instance,
                resources=resources,
            ).success
            yield {
                "registry": registry,
                "resources": resources,
                "instance": instance,
                "cursor": [None],
            }
        registry.close()


def _tick(flow, gate_only: bool = True) -> list[str]:
    """One sensor evaluation applied as the daemon applies it, its runs executed in process.
    Returns what each run it launched evaluated: the version, or ``trial <prompt version> on
    <version>`` for a prompt trial. ``gate_only``: every run answers a pending decision."""
    instance = flow["instance"]
    context = build_sensor_context(
        instance=instance, cursor=flow["cursor"][0], resources=flow["resources"]
    )
    result = model_promotion_sensor(context)
    if not isinstance(result, SensorResult):
        return []
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    flow["cursor"][0] = result.cursor
    launched = []
    for request in result.run_requests:
        selection = (
            AssetSelection.assets(*request.asset_selection)
            if request.asset_selection
            else EVALUATION_ASSETS
        )
        assert materialize(
            [*all_assets, *all_checks],
            selection=selection,
            instance=instance,
            resources=flow["resources"],
            tags=request.tags,
        ).success
        tags = request.tags
        if PROMPT_TRIAL_TAG in tags:
            launched.append(f"trial {tags[PROMPT_TRIAL_TAG]} on {tags[TRIAL_MODEL_TAG]}")
        else:
            launched.append(tags["assay/model_version"])
        assert GATE_PENDING_TAG in tags or not gate_only
    return launched


def test_pending_then_approved_then_refused_in_process(flow, monkeypatch):
    reg: Registry = flow["registry"]
    # The first holder: pending, evaluated, judged by the absolute criterion alone, moved.
    first = reg.request_alias("n", "champion", 1)
    assert first.outcome.value == "pending"
    assert _tick(flow) == ["n@v1"]
    assert reg.get_model("n").aliases.get("champion") is None  # nothing moves before a verdict
    assert _tick(flow) == []
    approved = reg.decisions(model="n")[-1]
    assert approved.kind is EventKind.GATE_APPROVED and approved.payload["incumbent"] is None
    assert approved.payload["pending"] == first.event.id
    outcomes = {(c["kind"], c["outcome"]) for c in approved.payload["criteria"]}
    assert outcomes == {("relative", "skipped"), ("absolute", "pass")}
    assert reg.get_model("n").aliases["champion"] == 1
    moved = reg.events(model="n", kind=EventKind.ALIAS_SET)[-1]
    assert moved.payload["decision"] == approved.id and moved.actor.startswith("dagster:")

    # A regressing candidate: pending, evaluated, refused with every criterion's numbers.
    assert reg.request_alias("n", "champion", 2).outcome.value == "pending"
    assert _tick(flow) == ["n@v2"]  # the incumbent's evaluation is current: not run again
    assert _tick(flow) == []
    refused = reg.decisions(model="n")[-1]
    assert refused.kind is EventKind.GATE_REFUSED
    by_kind = {c["kind"]: c for c in refused.payload["criteria"]}
    # Hand-computed: n@v2 answers none of the 8 questions, n@v1 all of them.
    assert by_kind["absolute"]["estimate"] == 0.0 and by_kind["absolute"]["outcome"] == "fail"
    assert by_kind["relative"]["estimate"] == -1.0 and by_kind["relative"]["outcome"] == "fail"
    assert by_kind["relative"]["threshold"] == -0.1
    assert refused.payload["suite"] == current_suite_identity(flow_suite(flow)).to_json()
    assert reg.get_model("n").aliases["champion"] == 1

    # The MLflow client user sees the failing criteria with their numbers.
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.exceptions import MlflowException

    _, token = TokenStore(reg).create("pat", "promoter", (), created_by="setup")
    with serve_http(create_app(reg)) as running:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        client = mlflow.MlflowClient(tracking_uri=running.url, registry_uri=running.url)
        with pytest.raises(MlflowException) as raised:
            client.set_registered_model_alias("n", "champion", "2")
    code, message = raised.value.message.split(": ", 1)
    assert code == "INVALID_PARAMETER_VALUE" and message.startswith("refused by verdict")
    assert "arithmetic exact_match" in message and "estimate -1" in message
    assert "estimate 0" in message and "+0.5" in message  # the threshold it missed

    # The explorer has a page for the verdict, linked from the version's leaderboard row.
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    for selection, key in (("rankings", day), ("dashboard", None)):
        assert materialize(
            all_assets,
            selection=AssetSelection.assets(selection),
            partition_key=key,
            instance=flow["instance"],
            resources=flow["resources"],
        ).success
    site = Path(flow["resources"]["storage"].base_url) / "explorer"
    page = (site / f"decision-{refused.id}.html").read_text()
    assert "refused" in page and "n@v2" in page and "n@v1" in page
    assert "exact_match" in page and "interval does not clear the threshold" in page
    # The MLflow client's request was refused again: the row links to that latest verdict.
    again = reg.decisions(model="n")[-1]
    assert again.kind is EventKind.GATE_REFUSED and again.payload["verdict_event"] == refused.id
    drawn = rendered_pages(site, ["index.html"])["index.html"]
    assert f'href="decision-{again.id}.html"' in drawn.html and drawn.errors == []
    assert f'href="decision-{refused.id}.html"' in (site / "history.html").read_text()

    # An equal candidate passes non-inferiority against the incumbent, and moves.
    assert reg.request_alias("n", "champion", 3).outcome.value == "pending"
    assert _tick(flow) == ["n@v3"]
    _tick(flow)
    assert reg.get_model("n").aliases["champion"] == 3


def flow_suite(flow) -> Path:
    return Path(flow["resources"]["suite"].path)


# ------------------------------------------------------------------ a prompt promotion's flow

# The arithmetic entry reads its input layout through the gated prompt alias.
PROMPTED_SUITE = GATED_SUITE.replace(
    'adapter: {method: generation, max_tokens: 4, stop: ["\\n"]}',
    'adapter: {method: generation, max_tokens: 4, stop: ["\\n"], '
    "input_template: prompts:/layout@production}",
)
# ``right`` answers the last question of its prompt: v2 appends one whose answer (2000) no
# arithmetic_qa instance has, so it answers none; v3 only adds a label, so it answers all.
LAYOUTS = ("{{ input }}", "{{ input }} What is 1000 + 1000?", "Q: {{ input }}")


@pytest.fixture
def prompted_suite(gated_env: Path) -> Path:
    assert PROMPTED_SUITE != GATED_SUITE
    gated_env.write_text(PROMPTED_SUITE)
    return gated_env


def _evaluation_files(flow) -> dict[str, bytes]:
    """The champion's stored evaluation of the entry, byte for byte."""
    from assay.storage.contract import EVALUATION_ASSETS, evaluation_partition

    store = flow["resources"]["storage"].store()
    where = evaluation_partition("n@v1", "arithmetic")
    return {asset: store.read_bytes(asset, where) for asset in EVALUATION_ASSETS}


def test_a_prompt_promotion_is_judged_on_trials_in_process(prompted_suite, flow):
    from assay.storage.contract import MODEL_OUTPUTS, evaluation_partition

    reg: Registry = flow["registry"]
    reg.create_prompt("layout")
    for text in LAYOUTS:
        reg.create_prompt_version("layout", text, ["input"])
    setup = {"force": True, "reason": "initial holder", "actor": "setup"}
    reg.request_alias("n", "champion", 1, **setup)  # n@v1 answers every question
    reg.request_prompt_alias("layout", "production", 1, **setup)
    assert _tick(flow, gate_only=False) == ["n@v1"]  # the champion, evaluated with layout v1
    before = _evaluation_files(flow)
    assert all(before.values())

    # A regressing layout: both prompt versions tried on the champion, then refused.
    first = reg.request_prompt_alias("layout", "production", 2)
    assert first.outcome.value == "pending"
    assert sorted(_tick(flow)) == ["trial layout@v1 on n@v1", "trial layout@v2 on n@v1"]
    assert _tick(flow) == []
    refused = reg.decisions(prompt="layout")[-1]
    assert refused.kind is EventKind.GATE_REFUSED, refused.payload.get("summary")
    assert refused.payload["pending"] == first.event.id
    assert (refused.payload["candidate"], refused.payload["incumbent"]) == (
        "layout@v2",
        "layout@v1",
    )
    by_kind = {c["kind"]: c for c in refused.payload["criteria"]}
    # Hand-computed: with v2 the champion answers none of the 8 questions, with v1 all.
    assert by_kind["absolute"]["scenario"] == "arithmetic on n@v1"
    assert by_kind["absolute"]["estimate"] == 0.0 and by_kind["absolute"]["outcome"] == "fail"
    assert by_kind["relative"]["estimate"] == -1.0 and by_kind["relative"]["outcome"] == "fail"
    assert by_kind["relative"]["threshold"] == -0.1
    assert "arithmetic on n@v1 exact_match" in refused.payload["summary"]
    assert reg.get_prompt("prompts:/layout@production").version == 1
    # The trial is stored apart; the champion's evaluation is untouched.
    store = flow["resources"]["storage"].store()
    identity = current_suite_identity(prompted_suite)
    tried = trial_store(store, PromptTrial("layout", "production", 2), identity)
    prompts = tried.read(MODEL_OUTPUTS, evaluation_partition("n@v1", "arithmetic"))
    assert all("? What is 1000 + 1000?" in p for p in prompts.column("prompt").to_pylist())
    assert _evaluation_files(flow) == before

    # An equal layout: only the candidate is tried (the incumbent's trial is current),
    # approved, and the alias moves.
    assert reg.request_prompt_alias("layout", "production", 3).outcome.value == "pending"
    assert _tick(flow) == ["trial layout@v3 on n@v1"]
    assert _tick(flow) == []
    approved = reg.decisions(prompt="layout")[-1]
    assert approved.kind is EventKind.GATE_APPROVED, approved.payload.get("summary")
    assert {c["outcome"] for c in approved.payload["criteria"]} == {"pass"}
    assert reg.get_prompt("prompts:/layout@production").version == 3
    assert _evaluation_files(flow) == before
    # The move re-evaluates the champion with v3, answered by the request cache.
    assert _tick(flow, gate_only=False) == ["n@v1"]
    outputs = store.read(MODEL_OUTPUTS, evaluation_partition("n@v1", "arithmetic"))
    assert all(outputs.column("cached").to_pylist())
    assert all("Q: What is" in p for p in outputs.column("prompt").to_pylist())


def test_suite_block_is_read_from_the_file(gated_env):
    suite = load_suite(gated_env)
    assert suite.promotion.mode == "require_non_inferiority"
    assert suite.promotion.margin == 0.1
    (criterion,) = suite.promotion.criteria
    assert (criterion.scenario, criterion.metric, criterion.at_least) == (
        "arithmetic",
        "exact_match",
        0.5,
    )


# ------------------------------------------------------------------ the criteria's arithmetic


def _stored(tmp_path: Path, tables: dict[tuple[str, str], list[float]]):
    """A store holding instance_scores and scorecards (``assay.scoring.summary``) of
    exact_match rows per (version, scenario)."""
    from assay.core.records import InstanceStat
    from assay.scoring.summary import scorecard, scorecard_table
    from assay.storage.contract import INSTANCE_SCORES, METRIC_TABLES, evaluation_partition
    from assay.storage.parquet import ParquetStore

    store = ParquetStore(str(tmp_path / "judged"))
    for (key, scenario), values in tables.items():
        stats = [InstanceStat(f"i{i}", "exact_match", float(v)) for i, v in enumerate(values)]
        where = evaluation_partition(key, scenario)
        store.write(INSTANCE_SCORES, where, InstanceStat.to_table(stats))
        store.write(METRIC_TABLES, where, scorecard_table(scorecard(stats, key)))
    return store


def _suite(promotion: dict, scenarios=("a", "b")):
    from assay.evaluate.suite import parse_suite

    entries = {s: {"scenario": "arithmetic_qa", "primary_metric": "exact_match"} for s in scenarios}
    return parse_suite({"scenarios": entries, "promotion": promotion}, "s.yaml")


def test_too_few_instances_pass_block_regressions_but_not_non_inferiority(tmp_path):
    # Six instances; the candidate misses one the incumbent answers: d = -1/6, and nothing
    # shows it is worse, nor that it is within 0.05 of the incumbent.
    incumbent, candidate = [1.0] * 6, [1.0] * 5 + [0.0]
    store = _stored(tmp_path, {("m@v1", "a"): incumbent, ("m@v2", "a"): candidate})
    for mode, approved in (("block_regressions", True), ("require_non_inferiority", False)):
        suite = _suite({"mode": mode}, scenarios=("a",))
        decision = judge_promotion(store, suite, "m@v2", "m@v1")
        (criterion,) = decision.criteria
        assert criterion.estimate == pytest.approx(-1 / 6)
        assert decision.approved is approved, (mode, criterion)


def test_holm_runs_over_every_tested_criterion_of_one_decision(tmp_path):
    good = [1.0] * 30
    store = _stored(
        tmp_path,
        {
            ("m@v1", "a"): good,
            ("m@v1", "b"): good,
            ("m@v2", "a"): good,
            ("m@v2", "b"): [1.0] * 27 + [0.0] * 3,
        },
    )
    criteria = [
        {"scenario": "a", "metric": "exact_match", "at_least": 0.5, "on": "lower"},
        {"scenario": "b", "metric": "exact_match", "at_least": 0.95},  # on the estimate
    ]
    decision = judge_promotion(store, _suite({"criteria": criteria}), "m@v2", "m@v1")
    tested = [c for c in decision.criteria if c.p_value is not None]
    untested = [c for c in decision.criteria if c.p_value is None]
    assert len(tested) == 3 and len(untested) == 1  # two relative, one on a bound
    # Holm by hand: sort the raw p-values, scale the i-th smallest by (m - i), keep it
    # monotone, cap at 1.
    raw = sorted(c.p_value for c in tested)
    expected, running = [], 0.0
    for i, p in enumerate(raw):
        running = max(running, min(1.0, (len(raw) - i) * p))
        expected.append(running)
    assert sorted(c.p_adjusted for c in tested) == pytest.approx(expected)
    (estimate,) = untested
    assert estimate.estimate == pytest.approx(0.9) and estimate.outcome == "fail"
    assert not decision.approved
    assert "b exact_match: fail, estimate 0.9" in decision.summary


def test_a_declared_criterion_nothing_reports_fails(tmp_path):
    store = _stored(tmp_path, {("m@v1", "a"): [1.0] * 10})
    suite = _suite({"criteria": [{"family": "toxicity", "at_most": 0.2}]}, scenarios=("a",))
    decision = judge_promotion(store, suite, "m@v1", None)
    failed = [c for c in decision.criteria if c.outcome == "fail"]
    assert [c.metric for c in failed] == ["family toxicity"]
    assert not decision.approved


def test_an_approved_stage_move_archives_as_requested(gated_env, registry_url):
    reg = Registry.open(registry_url)
    _arrange(reg, TargetKind.STAGE, "no_verdict")
    asked = reg.request_stage("m", 2, "Production", archive_existing_versions=True)
    assert asked.outcome.value == "pending"
    assert asked.event.payload["archive_existing_versions"] is True
    target = GateTarget(TargetKind.STAGE, "m", "Production")
    verdict = reg.record_verdict(
        target,
        "m@v2",
        "m@v1",
        reg.suite_identity(),
        {"summary": "approved"},
        approved=True,
        pending=asked.event,
        actor="dagster:test",
    )
    assert reg.open_pending() == []  # answered
    moved = reg.apply_verdict(verdict, actor="dagster:test")
    assert moved.outcome.value == "moved"
    stages = {v.version: v.stage.value for v in reg.list_versions("m")}
    assert stages == {1: "Archived", 2: "Production"}
    reg.close()


def test_removing_the_holder_does_not_make_a_first_holder(gated_env, registry_url):
    # Otherwise: remove champion, then ask for it, and only absolute criteria would judge.
    reg = Registry.open(registry_url)
    _arrange(reg, TargetKind.ALIAS, "no_verdict")
    reg.delete_alias("m", "champion")
    asked = reg.request_alias("m", "champion", 2)
    assert asked.outcome.value == "pending" and asked.event.payload["incumbent"] == "m@v1"
    assert reg.incumbent_of(GateTarget(TargetKind.ALIAS, "m", "champion"), "m@v2") == "m@v1"
    # The same for a stage: the version that left Production is still the one to beat.
    stage = GateTarget(TargetKind.STAGE, "m", "Production")
    _force(reg, stage, 1)
    reg.request_stage("m", 1, "Archived")
    assert reg.request_stage("m", 2, "Production").event.payload["incumbent"] == "m@v1"
    reg.close()


def test_a_refusal_that_judged_nothing_does_not_answer_the_next_request(gated_env, registry_url):
    # The sensor refuses a request whose evaluation run failed (a model server down): that
    # says nothing about the version, so asking again waits for a verdict again.
    reg = Registry.open(registry_url)
    _arrange(reg, TargetKind.ALIAS, "no_verdict")
    target = GateTarget(TargetKind.ALIAS, "m", "champion")
    pending = reg.request_alias("m", "champion", 2).event
    record = {"approved": False, "judged": False, "summary": "refused: run failed"}
    reg.record_verdict(
        target, "m@v2", "m@v1", reg.suite_identity(), record, approved=False, pending=pending
    )
    assert reg.request_alias("m", "champion", 2).outcome.value == "pending"
    reg.close()


def test_a_gated_prompt_alias_no_entry_reads_is_refused(flow):
    reg: Registry = flow["registry"]
    reg.create_prompt("unread")
    for text in LAYOUTS[:2]:
        reg.create_prompt_version("unread", text, ["input"])
    reg.request_prompt_alias("unread", "production", 1, force=True, reason="setup")
    assert reg.request_prompt_alias("unread", "production", 2).outcome.value == "pending"
    assert _tick(flow, gate_only=False) == []  # nothing to try: no run
    refused = reg.decisions(prompt="unread")[-1]
    assert refused.kind is EventKind.GATE_REFUSED
    assert "no suite entry reads prompts:/unread@production" in refused.payload["summary"]
    assert reg.get_prompt("prompts:/unread@production").version == 1


def test_a_trial_pins_only_the_alias_on_trial():
    from assay.evaluate.prompt_trials import pin_prompt_alias
    from assay.evaluate.suite import parse_suite

    adapter = {
        "method": "generation",
        "instructions": "prompts:/terse@production",
        "input_template": "prompts:/layout@production",
    }
    variant = {"variant": "staged", "input_template": "prompts:/layout@staging"}
    entry = {"scenario": "arithmetic_qa", "adapter": adapter, "variants": [variant]}
    suite = parse_suite({"scenarios": {"a": entry}}, "s.yaml")
    pinned = pin_prompt_alias(suite, PromptTrial("layout", "production", 7))["a"]
    assert pinned.adapter.input_template == "prompts:/layout/7"
    assert pinned.adapter.instructions == "prompts:/terse@production"
    assert pinned.variants[0].input_template == "prompts:/layout@staging"
    assert suite["a"].adapter.input_template == "prompts:/layout@production"  # a copy
