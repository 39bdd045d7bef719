"""Sequential evaluation for promotion decisions (``promotion.sequential``): the instance order,
the settings' errors, the pipeline's partial evaluation judged and marked, completed later
from the request cache; and agreement with the full-sample decision on the bundled model."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import AssetKey, AssetRecordsFilter, AssetSelection, instance_for_test, materialize
from live_deployment import GATE_VARIABLES, arithmetic_app, deployment, wait_for
from live_deployment import PROMOTION_SENSOR as SENSOR
from test_promotion_gate import _tick

from assay.compare.decision import judge_promotion
from assay.compare.gate import GateConfig, gate_partition
from assay.compare.sequential import judge_sequential
from assay.evaluate.sequential import (
    INCUMBENT_TAG,
    SEQUENTIAL_TAG,
    chunk_ends,
    extent_of,
    instance_order,
    partial_versions,
)
from assay.evaluate.suite import load_suite, parse_suite
from assay.registry import EventKind, Registry
from assay.registry.gating import current_suite_identity
from assay.serving import asgi_in_background
from assay.storage.contract import METRIC_TABLES, MODEL_OUTPUTS, evaluation_partition
from assets import all_assets
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.gate import stale_reason
from sensors.promotion import EVALUATION_ASSETS, MODEL_VERSION_TAG

N = 40
SEQUENTIAL_SUITE = f"""
scenarios:
  arithmetic:
    scenario: arithmetic_qa
    args: {{n_test: {N}, n_train: 0}}
    adapter: {{method: generation, max_tokens: 4, stop: ["\\n"]}}
    max_instances: {N}
    primary_metric: exact_match
promotion:
  margin: 0.1
  sequential: {{chunk: 5, alpha_share: 0.5}}
  criteria:
    - {{scenario: arithmetic, metric: exact_match, at_least: 0.5}}
"""


# ------------------------------------------------------------------ the order and the settings


def test_the_order_is_a_fixed_permutation_seeded_by_the_scenario_key():
    ids = [f"i{k:03d}" for k in range(200)]
    order = instance_order("arithmetic", ids)
    assert sorted(order) == ids and order != ids  # a permutation, not the stored order
    assert instance_order("arithmetic", list(reversed(ids))) == order  # input order is moot
    assert instance_order("other", ids) != order  # another scenario, another order
    # Any subset comes in the order of the whole: the stored part of a partial evaluation is
    # the prefix of the full order whatever else the scenario holds.
    subset = ids[::3]
    assert instance_order("arithmetic", subset) == [i for i in order if i in set(subset)]
    # The same in another interpreter (no per-process hash seed, no clock).
    code = (
        "from assay.evaluate.sequential import instance_order;"
        f"print(','.join(instance_order('arithmetic', {ids!r})))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert other.stdout.strip().split(",") == order
    # Roughly uniform: over many scenario keys, where one id lands is spread over the order
    # (a shuffle puts it in the first half half of the time; 400 keys: 5 sigma is ±50).
    firsts = sum(instance_order(f"s{k}", ids).index("i000") < 100 for k in range(400))
    assert 150 < firsts < 250
    with pytest.raises(ValueError, match="instance ids repeat"):
        instance_order("arithmetic", ["a", "a"])


def test_chunks_end_at_the_full_set():
    assert chunk_ends(12, 5) == [5, 10, 12]
    assert chunk_ends(10, 5) == [5, 10]
    assert chunk_ends(3, 5) == [3]
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        chunk_ends(3, 0)


@pytest.mark.parametrize(
    ("sequential", "message"),
    [
        ({"alpha_share": 0.5}, "promotion.sequential.chunk: Field required"),
        ({"chunk": 0}, "promotion.sequential.chunk: Input should be greater than or equal to 1"),
        ({"chunk": 2.5}, "promotion.sequential.chunk: Input should be a valid integer"),
        ({"chunk": 5, "alpha_share": 1.0}, "promotion.sequential.alpha_share: Input should be"),
        ({"chunk": 5, "alpha_share": 0}, "promotion.sequential.alpha_share: Input should be"),
        ({"chunk": 5, "stop": True}, "promotion.sequential: unknown field(s): stop"),
        ({"chunk": 5, "bounds": {"bleurt": [1, 0]}}, "bounds of 'bleurt' must be two finite"),
        ({"chunk": 5, "bounds": {"bleurt": [0]}}, "bounds of 'bleurt' must be two finite"),
    ],
)
def test_bad_sequential_settings_name_the_key(sequential, message):
    data = {
        "scenarios": {"a": {"scenario": "arithmetic_qa"}},
        "promotion": {"sequential": sequential},
    }
    with pytest.raises(ValueError) as raised:
        parse_suite(data, "suite.yaml")
    assert str(raised.value).startswith("suite.yaml: promotion.sequential")
    assert message in str(raised.value)


def test_sequential_settings_are_read():
    data = {
        "scenarios": {"a": {"scenario": "arithmetic_qa"}},
        "promotion": {"sequential": {"chunk": 25, "bounds": {"bleurt": [-1, 1]}}},
    }
    spec = parse_suite(data, "suite.yaml").promotion.sequential
    assert (spec.chunk, spec.alpha_share, spec.bounds) == (25, 0.5, {"bleurt": [-1.0, 1.0]})
    assert load_suite().promotion.sequential is None  # opt-in


# ------------------------------------------------------------------ the pipeline, in process


@pytest.fixture
def flow(tmp_path, model_cache_dir, monkeypatch):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SEQUENTIAL_SUITE)
    monkeypatch.setenv("ASSAY_SUITE", str(suite))
    monkeypatch.setenv("ASSAY_GATED_ALIASES", "champion")
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    calls: list[str] = []
    with asgi_in_background(arithmetic_app(calls)) as model_server:
        registry = Registry.open(registry_url)
        registry.create_model("n")
        for answer in ("right", "wrong"):
            registry.create_version("n", f"openai:{model_server.base_url}#{answer}")
        resources = assay_resources(
            storage_url=str(tmp_path / "storage"),
            registry_url=registry_url,
            suite=SuiteResource(path=str(suite)),
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
                "calls": calls,
                "suite": suite,
            }
        registry.close()


def _stored(flow, asset: str, key: str) -> pa.Table:
    store = flow["resources"]["storage"].store()
    return store.read(asset, evaluation_partition(key, "arithmetic"))


def test_a_regressing_candidate_is_refused_early_and_completed_later_from_the_cache(flow):
    reg: Registry = flow["registry"]
    calls: list[str] = flow["calls"]
    # The incumbent holds champion (forced) and is evaluated in full by its promotion.
    reg.request_alias("n", "champion", 1, force=True, reason="the first holder", actor="setup")
    assert _tick(flow, gate_only=False) == ["n@v1"]
    assert calls.count("right") == N and extent_of(_stored(flow, METRIC_TABLES, "n@v1")) is None

    asked = reg.request_alias("n", "champion", 2)
    assert asked.outcome.value == "pending"
    assert _tick(flow) == ["n@v2"]
    assert _tick(flow) == []
    refused = reg.decisions(model="n")[-1]
    assert refused.kind is EventKind.GATE_REFUSED, refused.payload.get("summary")
    assert reg.get_model("n").aliases["champion"] == 1

    # Stopped early: ``wrong`` answers none, ``right`` all, so every paired difference is −1
    # against a margin of 0.1; a whole chunk or two of them is decisive. Every request the
    # run made is one instance of the order's prefix.
    outputs = _stored(flow, MODEL_OUTPUTS, "n@v2")
    evaluated = outputs.column("instance_id").to_pylist()
    n = len(set(evaluated))
    assert n < N and n % 5 == 0 and calls.count("wrong") == n == len(evaluated)
    full_order = instance_order("arithmetic", sorted(_eval_ids(flow)))
    assert set(evaluated) == set(full_order[:n])

    # The verdict carries the sequential figures and says why it stopped.
    sequential = refused.payload["sequential"]
    assert (sequential["instances_evaluated"], sequential["instances_total"]) == (n, N)
    (scenario,) = sequential["scenarios"]
    assert (scenario["evaluated"], scenario["total"]) == (n, N)
    assert (
        "refused" in scenario["reason"] and "exact_match vs incumbent failed" in scenario["reason"]
    )
    relative = next(c for c in sequential["criteria"] if c["kind"] == "relative")
    assert relative["verdict"] == "fail" and relative["n_used"] == n == relative["stopped_at"]
    assert relative["threshold"] == pytest.approx(-0.1)
    assert [p[0] for p in relative["path"]] == list(range(5, n + 1, 5))
    low, high = relative["path"][-1][2:]
    assert -1.0 <= low <= -1.0 + 0.1 and high < -0.1  # it ends below −margin, around −1
    by_kind = {c["kind"]: c for c in refused.payload["criteria"]}
    assert by_kind["relative"]["outcome"] == "fail" and by_kind["relative"]["estimate"] == -1.0
    assert f"{n} of {N} instances" in refused.payload["summary"]

    # The partition says it is partial: the scorecard's rows, the Dagster metadata, and
    # every full-evaluation reader (here stale_reason without a decision) wants it completed.
    card = _stored(flow, METRIC_TABLES, "n@v2")
    extent = extent_of(card)
    assert extent is not None and (extent.evaluated, extent.total) == (n, N)
    assert "refused" in extent.stop_reason
    store = flow["resources"]["storage"].store()
    assert partial_versions(store.read_all(METRIC_TABLES)) == {("n@v2", "arithmetic")}
    suite = load_suite(flow["suite"])
    identity = current_suite_identity(flow["suite"])
    why = stale_reason(flow["instance"], store, "n@v2", suite, identity)
    assert why is not None and f"partial evaluation ({n} of {N} instances" in why
    assert (
        stale_reason(flow["instance"], store, "n@v2", suite, identity, refused.payload["pending"])
        is None
    )
    assert stale_reason(flow["instance"], store, "n@v1", suite, identity) is None
    # The per-partition regression check does not judge a partial evaluation, nor tag it.
    gated = gate_partition(
        store, reg, GateConfig.from_suite(suite), candidate="n@v2", scenario="arithmetic"
    )
    assert gated.passed and gated.reason.startswith(f"not judged: partial: {n} of {N} instances")
    assert "gate.arithmetic" not in reg.get_version("n@v2").tags

    # A full evaluation (a run without the sequential tag, as the nightly or a backfill
    # launches) completes the partition and pays only the instances not yet evaluated.
    before = calls.count("wrong")
    assert materialize(
        all_assets,
        selection=EVALUATION_ASSETS,
        partition_key="n@v2|arithmetic",
        instance=flow["instance"],
        resources=flow["resources"],
    ).success
    full = _stored(flow, MODEL_OUTPUTS, "n@v2")
    assert full.num_rows == N and calls.count("wrong") - before == N - n
    rows = full.select(["instance_id", "cached"]).to_pylist()
    assert {r["instance_id"] for r in rows if r["cached"]} == set(evaluated)
    assert extent_of(_stored(flow, METRIC_TABLES, "n@v2")) is None
    assert stale_reason(flow["instance"], store, "n@v2", suite, identity) is None


def _eval_ids(flow) -> set[str]:
    from assay.core.records import Instance
    from assay.evaluate.run import select_instances

    store = flow["resources"]["storage"].store()
    every = Instance.from_table(store.read("scenario_instances", {"scenario": "arithmetic"}))
    config = load_suite(flow["suite"])["arithmetic"]
    return {i.id for i in select_instances(config, every)[0]}


# ------------------------------------------------------------------ under the daemon


def test_a_sequential_promotion_stops_a_regressing_candidate_under_the_daemon(
    tmp_path, model_cache_dir, monkeypatch
):
    """``promotion.sequential`` with the real daemon, sensor and runs: the candidate's run
    stops early, the verdict says where and why, and the history, the explorer's decision
    page and the partition say it is partial."""
    calls: list[str] = []
    with (
        asgi_in_background(arithmetic_app(calls)) as server,
        deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed,
    ):
        for variable in GATE_VARIABLES:
            deployed.env.pop(variable, None)  # the defaults: champion gated
        # Moving champion launches no re-evaluation here: the incumbent's evaluation below is
        # the setup, the candidate's sequential run is what is under test.
        deployed.env["ASSAY_PROMOTION_ALIASES"] = "challenger"
        (deployed.root / "suite.yaml").write_text(SEQUENTIAL_SUITE)
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        registry = Registry.open(deployed.env["ASSAY_REGISTRY_URL"], gated_aliases=["champion"])
        registry.create_model("g")
        keys = [
            registry.create_version("g", f"openai:{server.base_url}#{answer}").key
            for answer in ("right", "wrong")
        ]
        registry.request_alias("g", "champion", 1, force=True, reason="setup", actor="setup")
        registry.close()
        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            models=ModelsResource(cache_dir=str(deployed.root / "assay-home" / "cache")),
        )
        # The suite's data and the incumbent's full evaluation, as `make demo` or an earlier
        # promotion would have left them.
        deployed.instance.add_dynamic_partitions("model_version", keys)
        for selection, key in (
            (AssetSelection.assets("scenario_instances"), "arithmetic"),
            (AssetSelection.assets("registered_models"), "g@v1"),
            (EVALUATION_ASSETS, "g@v1|arithmetic"),
        ):
            assert materialize(
                all_assets,
                selection=selection,
                partition_key=key,
                instance=deployed.instance,
                resources=resources,
            ).success
        assert calls.count("right") == N
        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)

        asked = deployed.assay("alias", "set", "g", "champion", "2")
        assert asked.stdout.startswith("pending:"), asked.stdout
        refused = wait_for(lambda: deployed.verdict("g@v2"), 120, "g@v2's verdict", deployed.log)
        assert refused.kind is EventKind.GATE_REFUSED, refused.payload.get("summary")
        assert deployed.champion("g") == 1

        # One sequential run evaluated the candidate, and stopped early.
        assert deployed.runs(**{MODEL_VERSION_TAG: "g@v1"}) == []  # its evaluation was current
        (run,) = deployed.runs(**{MODEL_VERSION_TAG: "g@v2"})
        assert run.tags[SEQUENTIAL_TAG] == str(refused.payload["pending"])
        assert run.tags[INCUMBENT_TAG] == "g@v1"
        n = calls.count("wrong")
        assert 0 < n < N and calls.count("right") == N
        figures = refused.payload["sequential"]
        assert (figures["instances_evaluated"], figures["instances_total"]) == (n, N)
        (scenario,) = figures["scenarios"]
        assert (
            scenario["evaluated"] == n and "exact_match vs incumbent failed" in scenario["reason"]
        )

        # The registry's history says it stopped, where and why.
        history = deployed.assay("history", "--model", "g").stdout
        assert f"sequential: {n} of {N} instances evaluated" in history
        assert f"arithmetic: {n} of {N} instances evaluated, stopped: the decision was refused" in (
            history
        )
        assert "confidence sequence by instances evaluated: 5: [" in history

        # The partition is marked partial: its Dagster metadata and its stored scorecard.
        (record,) = deployed.instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=AssetKey(METRIC_TABLES), asset_partitions=["g@v2|arithmetic"]
            ),
            limit=1,
        ).records
        metadata = record.asset_materialization.metadata
        assert metadata["partial"].value is True
        assert (metadata["instances_evaluated"].value, metadata["instances_total"].value) == (n, N)
        store = resources["storage"].store()
        card = store.read(METRIC_TABLES, evaluation_partition("g@v2", "arithmetic"))
        assert (extent_of(card).evaluated, extent_of(card).total) == (n, N)
    deployed_resources = resources

    # The explorer's decision page shows the sequence and where it stopped; the board leaves
    # the partial partition off and says so.
    with instance_for_test() as instance:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        for selection, key in (("rankings", day), ("dashboard", None)):
            assert materialize(
                all_assets,
                selection=AssetSelection.assets(selection),
                partition_key=key,
                instance=instance,
                resources=deployed_resources,
            ).success
    site = Path(deployed_resources["storage"].base_url) / "explorer"
    page = (site / f"decision-{refused.id}.html").read_text()
    assert 'id="sequential"' in page and f"{n} of {N} instances evaluated" in page
    assert '<svg class="confidence-sequence"' in page and f"stopped at {n} of {N}" in page
    index = (site / "index.html").read_text()
    assert "g@v2 × arithmetic: a partial evaluation" in index


# ------------------------------------------------------------------ agreement on real results

AGREEMENT_SUITE = """
scenarios:
  arithmetic:
    scenario: arithmetic_qa
    args: {n_test: 60, n_train: 20}
    adapter: {method: generation, variant: 3-shot, num_train: 3, max_tokens: 6, stop: ["\\n"]}
    max_instances: 60
    primary_metric: exact_match
promotion:
  margin: 0.05
  sequential: {chunk: 10}
"""


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, model_cache_dir):
    """The bundled model's stored results on 60 arithmetic questions for three versions:
    the raw prompt (v1), the chat template (v2, as the demo's versions differ) and the raw
    prompt again (v3, identical to v1)."""
    tmp = tmp_path_factory.mktemp("agreement")
    suite = tmp / "suite.yaml"
    suite.write_text(AGREEMENT_SUITE)
    url = f"sqlite:///{tmp / 'registry.db'}"
    registry = Registry.open(url)
    registry.create_model("m")
    keys = [
        registry.create_version(
            "m", "bundled:smollm2-135m-instruct", serving={"chat_template": chat}
        ).key
        for chat in (False, True, False)
    ]
    registry.close()
    resources = assay_resources(
        storage_url=str(tmp / "storage"),
        registry_url=url,
        suite=SuiteResource(path=str(suite)),
        models=ModelsResource(
            cache_dir=str(model_cache_dir), request_cache_url=f"sqlite:///{tmp / 'requests.db'}"
        ),
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_version", keys)
        runs = [(AssetSelection.assets("scenario_instances"), "arithmetic")]
        for key in keys:
            runs += [
                (AssetSelection.assets("registered_models"), key),
                (EVALUATION_ASSETS, f"{key}|arithmetic"),
            ]
        for selection, key in runs:
            assert materialize(
                all_assets,
                selection=selection,
                partition_key=key,
                instance=instance,
                resources=resources,
            ).success
    return resources["storage"].store(), load_suite(suite), keys


def _decided(criterion) -> bool:
    """Whether the full-sample verdict on a relative criterion is clear: its interval lies
    wholly above −margin (non-inferior) or wholly below it (worse by more than the margin)."""
    return criterion.ci_low > criterion.threshold or criterion.ci_high < criterion.threshold


@pytest.mark.parametrize(
    ("candidate", "incumbent", "full_approved"),
    [(1, 0, False), (0, 1, True), (2, 0, True)],
    ids=["chat-vs-raw", "raw-vs-chat", "identical"],
)
def test_the_sequential_verdict_agrees_with_the_full_sample_one(
    bundled, candidate, incumbent, full_approved
):
    store, suite, keys = bundled
    cand, inc = keys[candidate], keys[incumbent]
    full = judge_promotion(store, suite, cand, inc)
    replayed = judge_sequential(store, suite, cand, inc)
    assert replayed.complete and replayed.decision is not None
    sequential = replayed.decision
    # The full-sample verdicts these versions give (an independent reading of the stored
    # scores: the per-instance means and their paired difference).
    scores = {
        k: {
            r["instance_id"]: r["value"]
            for r in store.read(
                "instance_scores", evaluation_partition(k, "arithmetic")
            ).to_pylist()
            if r["metric"] == "exact_match" and r["perturbation"] == ""
        }
        for k in (cand, inc)
    }
    diff = sum(scores[cand][i] - scores[inc][i] for i in scores[inc]) / len(scores[inc])
    assert full.approved is full_approved, (diff, full.summary)
    (f,) = full.criteria
    (s,) = sequential.criteria
    assert f.estimate == pytest.approx(diff)
    assert _decided(f) or candidate == 2  # these pairs differ clearly, or not at all
    assert s.outcome == f.outcome and sequential.approved is full.approved
    figures = sequential.sequential
    assert figures["instances_total"] == 60
    if s.note.startswith(
        "decided sequentially"
    ):  # stopped early: the stop is where the data says so
        assert s.n < 60 and figures["instances_evaluated"] == s.n


# ------------------------------------------------------------------ the replay's rules, by hand


def test_a_criterion_on_the_estimate_stops_exactly_when_the_rest_cannot_change_it(tmp_path):
    from test_promotion_gate import _stored, _suite

    # First holders (no incumbent), 40 instances, at_least 0.5 on the mean, chunks of 5.
    store = _stored(tmp_path, {("m@v1", "a"): [0.0] * 40, ("m@v2", "a"): [1.0] * 40})
    criteria = [{"scenario": "a", "metric": "exact_match", "at_least": 0.5}]
    suite = _suite(
        {"primary_metrics": False, "criteria": criteria, "sequential": {"chunk": 5}},
        scenarios=("a",),
    )
    # All wrong: after 20 the best the other 20 can give is 20/40 = 0.5, which still clears;
    # after 25 it is 15/40 < 0.5. All right: after 20, the worst is 20/40 = 0.5.
    for key, approved, stop in (("m@v1", False, 25), ("m@v2", True, 20)):
        replayed = judge_sequential(store, suite, key, None)
        assert replayed.complete and replayed.decision.approved is approved
        assert replayed.scenarios["a"].evaluated == stop and replayed.rounds == stop // 5
        (criterion,) = replayed.decision.criteria
        assert criterion.n == stop and criterion.note.startswith(f"decided at {stop} of 40")


def test_scenarios_stop_on_their_own_and_a_failure_stops_the_decision(tmp_path):
    from test_promotion_gate import _stored, _suite

    ones, zeros = [1.0] * 60, [0.0] * 60
    store = _stored(
        tmp_path,
        {
            ("m@v1", "a"): ones,
            ("m@v1", "b"): ones,
            ("m@v2", "a"): ones,  # equal on a
            ("m@v2", "b"): ones[:30] + zeros[:30],  # worse on b: half its instances
            ("m@v3", "a"): zeros,  # clearly worse on a
            ("m@v3", "b"): ones,
        },
    )
    suite = _suite({"margin": 0.1, "sequential": {"chunk": 10}})
    # m@v3 is refused at the first round whose sequence excludes −0.1; b stops there too.
    refused = judge_sequential(store, suite, "m@v3", "m@v1")
    assert not refused.decision.approved
    a, b = refused.scenarios["a"], refused.scenarios["b"]
    assert a.evaluated == b.evaluated < 60 and "a exact_match vs incumbent failed" in b.reason
    (failing,) = refused.decision.failed
    assert failing.scenario == "a" and failing.estimate == -1.0
    # m@v2 is worse on b by 0.5 (the wrong half spread over b's order): refused on b, as the
    # full-sample rule refuses it; a (equal) is never the reason.
    worse = judge_sequential(store, suite, "m@v2", "m@v1")
    assert not worse.decision.approved
    assert {c.scenario for c in worse.decision.failed} == {"b"}
    assert judge_promotion(store, suite, "m@v2", "m@v1").approved is False
