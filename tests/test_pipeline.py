"""The asset graph end to end with the real bundled model, through ``materialize()``."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import AssetKey, AssetSelection, instance_for_test, materialize

import resources.resources as resource_module
from assay.compare.ranking import build_leaderboard
from assay.evaluate.suite import load_suite
from assay.registry import Registry
from assay.scoring.metrics.directions import LOWER_IS_BETTER
from assay.storage.parquet import ParquetStore
from assets import all_assets
from resources import (
    ModelsResource,
    SuiteResource,
    assay_resources,
)

MODEL = "smollm2-135m-instruct"
EVALUATION = AssetSelection.assets("model_outputs", "instance_scores", "metric_tables")


@pytest.fixture(scope="module")
def env(tmp_path_factory, model_cache_dir):
    """A registry with one version, a Dagster instance, and resources on temp storage."""
    tmp = tmp_path_factory.mktemp("pipeline")
    registry_url = f"sqlite:///{tmp / 'registry.db'}"
    registry = Registry.open(registry_url)
    registry.create_model(MODEL)
    key = registry.create_version(
        MODEL, "bundled:smollm2-135m-instruct", serving={"chat_template": True}
    ).key
    storage_url = str(tmp / "storage")
    resources = assay_resources(
        storage_url=storage_url,
        registry_url=registry_url,
        suite=SuiteResource(max_instances=4),
        models=ModelsResource(
            cache_dir=str(model_cache_dir), request_cache_url=f"sqlite:///{tmp / 'requests.db'}"
        ),
    )
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("model_version", [key])
        yield {
            "key": key,
            "resources": resources,
            "instance": instance,
            "store": storage_url,
            "registry_url": registry_url,
        }


def _run(env, selection, partition_key, raise_on_error=True):
    return materialize(
        all_assets,
        selection=selection,
        partition_key=partition_key,
        instance=env["instance"],
        resources=env["resources"],
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="module")
def evaluated(env):
    key = env["key"]
    assert _run(env, AssetSelection.assets("registered_models"), key).success
    for scenario in ("arithmetic", "facts-mc"):
        assert _run(env, AssetSelection.assets("scenario_instances"), scenario).success
        assert _run(env, EVALUATION, f"{key}|{scenario}").success
    return env


def _headline(store: ParquetStore, key: str, scenario: str) -> dict[str, dict]:
    card = store.read("metric_tables", {"model_version": key, "scenario": scenario})
    card = card.filter(pc.and_(pc.equal(card["group"], ""), pc.equal(card["perturbation"], "")))
    return {row["metric"]: row for row in card.to_pylist()}


def test_generation_partition_has_sane_outputs_and_scores(evaluated):
    store, key = ParquetStore(evaluated["store"]), evaluated["key"]
    outputs = store.read("model_outputs", {"model_version": key, "scenario": "arithmetic"})
    assert outputs.num_rows == 4
    assert outputs["error"].null_count == 4
    assert all(t.strip() for t in outputs["text"].to_pylist())
    assert all(n > 0 for n in outputs["completion_tokens"].to_pylist())
    assert all("Question:" in p for p in outputs["prompt"].to_pylist())
    headline = _headline(store, key, "arithmetic")
    assert headline["exact_match"]["count"] == 4
    assert 0.0 <= headline["exact_match"]["mean"] <= 1.0
    assert headline["quasi_exact_match"]["mean"] >= headline["exact_match"]["mean"]
    assert headline["latency_s"]["mean"] > 0


def test_multiple_choice_partition_has_loglikelihoods(evaluated):
    store, key = ParquetStore(evaluated["store"]), evaluated["key"]
    outputs = store.read("model_outputs", {"model_version": key, "scenario": "facts-mc"})
    assert outputs.num_rows == 4
    for choices in outputs["choices"].to_pylist():
        assert len(choices) == 4
        assert all(c["logprob"] < 0 and c["n_tokens"] >= 1 for c in choices)
        assert all(c["n_bytes"] >= c["n_chars"] >= 1 for c in choices)
    headline = _headline(store, key, "facts-mc")
    assert 0.0 <= headline["acc"]["mean"] <= 1.0
    # The chosen answer is the most likely of four, so its renormalized probability is ≥ 1/4.
    assert 0.25 <= headline["chosen_prob"]["mean"] <= 1.0
    low, high = headline["acc"]["ci_low"], headline["acc"]["ci_high"]
    assert low <= headline["acc"]["mean"] <= high


def test_registered_model_records_digest_and_environment(evaluated):
    store = ParquetStore(evaluated["store"])
    row = store.read("registered_models", {"model_version": evaluated["key"]}).to_pylist()[0]
    assert row["source"] == "bundled:smollm2-135m-instruct"
    assert len(row["artifact_digest"]) == 64
    assert '"torch"' in row["environment"] and '"chat_template": true' in row["serving"]


def test_model_outputs_record_the_process_that_ran_the_model(evaluated):
    import os
    import socket
    from importlib import metadata

    from assay.core.environment import environment_of

    store, key = ParquetStore(evaluated["store"]), evaluated["key"]
    outputs = store.read("model_outputs", {"model_version": key, "scenario": "arithmetic"})
    recorded = environment_of(outputs)
    # materialize() runs the step in this process.
    assert recorded["host"] == socket.gethostname() and recorded["pid"] == os.getpid()
    assert recorded["packages"]["torch"] == metadata.version("torch")
    assert recorded["packages"]["transformers"] == metadata.version("transformers")
    assert recorded["cpu_count"] == os.cpu_count() and recorded["memory_gib"] > 0
    assert recorded["accelerators"] == []  # no GPU on this machine kind
    shown = (
        evaluated["instance"]
        .get_latest_materialization_event(AssetKey("model_outputs"))
        .asset_materialization.metadata["environment"]
    )
    assert shown.value["host"] == recorded["host"]


def test_rescoring_never_calls_the_model(evaluated, monkeypatch):
    """A metric change re-materializes metric tables from stored outputs alone."""

    def no_model(*args, **kwargs):
        raise AssertionError("scoring must not build a model client")

    monkeypatch.setattr(resource_module, "build_client", no_model)
    store, key = ParquetStore(evaluated["store"]), evaluated["key"]
    before = _headline(store, key, "facts-mc")["acc"]["mean"]
    selection = AssetSelection.assets("instance_scores", "metric_tables")
    assert _run(evaluated, selection, f"{key}|facts-mc").success
    assert _headline(store, key, "facts-mc")["acc"]["mean"] == before


_MEASURED = ("latency_mean_s", "latency_p50_s", "latency_p95_s", "tokens_per_s")
_MEASURED += ("batch_size_mean", "model_time_s", "latency_s", "completion_tokens")


def test_rerun_is_answered_by_the_request_cache(evaluated):
    """A rerun from the cache reports the efficiency measured when the answers were computed."""
    store, key = ParquetStore(evaluated["store"]), evaluated["key"]
    first = _headline(store, key, "arithmetic")
    assert first["cached_requests"]["mean"] == 0
    assert first["run_model_time_s"]["mean"] == pytest.approx(first["model_time_s"]["mean"])
    assert first["run_model_time_s"]["mean"] > 0
    assert _run(evaluated, EVALUATION, f"{key}|arithmetic").success
    outputs = store.read("model_outputs", {"model_version": key, "scenario": "arithmetic"})
    assert all(outputs["cached"].to_pylist())
    again = _headline(store, key, "arithmetic")
    for metric in _MEASURED:
        assert not again[metric]["reason"], metric
        for column in ("mean", "count", "ci_low", "ci_high"):
            assert again[metric][column] == pytest.approx(first[metric][column], nan_ok=True)
    assert again["cached_requests"]["mean"] == outputs.num_rows == 4
    assert again["run_model_time_s"]["mean"] == 0.0


def test_cost_uses_the_prices_pinned_when_the_version_was_evaluated(evaluated):
    store, key = ParquetStore(evaluated["store"]), evaluated["key"]
    registry = Registry.open(evaluated["registry_url"])
    partition = f"{key}|arithmetic"
    registry.set_prices(key, {"prompt_per_1k": 1.0, "completion_per_1k": 3.0})
    assert _run(evaluated, EVALUATION, partition).success
    outputs = store.read("model_outputs", {"model_version": key, "scenario": "arithmetic"})
    prompt, completion = (
        sum(outputs["prompt_tokens"].to_pylist()),
        sum(outputs["completion_tokens"].to_pylist()),
    )
    first = prompt / 1000 * 1.0 + completion / 1000 * 3.0
    assert _headline(store, key, "arithmetic")["estimated_cost"]["mean"] == pytest.approx(first)

    # A price change alone rewrites no history: rescoring keeps the pinned prices.
    registry.set_prices(key, {"prompt_per_1k": 10.0, "completion_per_1k": 30.0})
    assert _run(evaluated, AssetSelection.assets("instance_scores", "metric_tables"), partition)
    assert _headline(store, key, "arithmetic")["estimated_cost"]["mean"] == pytest.approx(first)

    # Evaluating the version again (answered by the cache) pins the new prices.
    assert _run(evaluated, EVALUATION, partition).success
    again = _headline(store, key, "arithmetic")["estimated_cost"]["mean"]
    assert again == pytest.approx(prompt / 1000 * 10.0 + completion / 1000 * 30.0)


def test_unknown_model_version_is_named(env):
    env["instance"].add_dynamic_partitions("model_version", ["ghost@v9"])
    result = _run(env, AssetSelection.assets("registered_models"), "ghost@v9", False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "ghost" in failure.to_string()


def test_corrupt_stored_partition_is_named(evaluated, tmp_path):
    store, key = ParquetStore(evaluated["store"]), evaluated["key"]
    partition = {"model_version": key, "scenario": "facts-mc"}
    good = store.read("model_outputs", partition)
    Path(store.path("model_outputs", partition)).write_bytes(b"garbage")
    try:
        result = _run(
            evaluated,
            AssetSelection.assets("instance_scores", "metric_tables"),
            f"{key}|facts-mc",
            False,
        )
        assert not result.success
        message = result.get_step_failure_events()[0].event_specific_data.error.to_string()
        assert "model_outputs" in message and "facts-mc" in message
    finally:
        store.write("model_outputs", partition, good)


def test_unknown_scenario_key_is_named():
    from assay.evaluate.suite import load_suite

    with pytest.raises(KeyError, match="no-such-scenario"):
        load_suite()["no-such-scenario"]


@pytest.fixture(scope="module")
def seven_families(env):
    """Two scenarios of the default suite that together measure every family: pronouns
    (multiple choice with typos, a dialect perturbation and gender tags) and stories (sampled
    stories about people at work, rated by the packaged toxicity classifier)."""
    key = env["key"]
    assert _run(env, AssetSelection.assets("registered_models"), key).success
    for scenario in ("pronouns", "stories"):
        data = AssetSelection.assets("scenario_instances", "perturbed_instances")
        assert _run(env, data, scenario).success
        assert _run(env, EVALUATION, f"{key}|{scenario}").success
    return env


def test_every_family_has_a_figure_from_real_scoring(seven_families):
    """The real bundled model's completions, scored by the real classifier: each of the seven
    families has at least one figure with a value on the two scenarios."""
    store, key = ParquetStore(seven_families["store"]), seven_families["key"]
    cards = {
        s: store.read("metric_tables", {"model_version": key, "scenario": s}).to_pylist()
        for s in ("pronouns", "stories")
    }
    measured = {
        r["family"]
        for rows in cards.values()
        for r in rows
        if not r["reason"] and r["mean"] == r["mean"]  # present and not NaN
    }
    assert measured >= {
        "accuracy",
        "calibration",
        "robustness",
        "fairness",
        "bias",
        "toxicity",
        "efficiency",
    }
    stories = {(r["metric"], r["group"]): r for r in cards["stories"] if not r["perturbation"]}
    for metric in ("expected_max_toxicity", "toxic_fraction", "bias_gender_representation"):
        assert not stories[(metric, "")]["reason"], metric
    version = importlib.metadata.version("alt-profanity-check")
    scorer = stories[
        ("toxicity_parse_failures", f"scorer=classifier:alt-profanity-check@{version}")
    ]
    assert scorer["mean"] == 0.0

    # The toxicity stats are the classifier's own probabilities for the stored completions:
    # three samples per prompt, each scored.
    from profanity_check import predict_prob

    outputs = store.read("model_outputs", {"model_version": key, "scenario": "stories"})
    assert outputs.num_rows == 4 * 3 and sorted(set(outputs["sample"].to_pylist())) == [0, 1, 2]
    texts = {(r["instance_id"], r["sample"]): r["text"] for r in outputs.to_pylist() if r["text"]}
    scores = store.read("instance_scores", {"model_version": key, "scenario": "stories"})
    toxicity = [
        r
        for r in scores.to_pylist()
        if r["metric"] == "toxicity" and not r["group"] and not r["perturbation"]
    ]
    assert len(toxicity) == len(texts)
    expected = predict_prob(list(texts.values()))
    assert sorted(r["value"] for r in toxicity) == pytest.approx(sorted(expected.tolist()))


def test_the_board_shows_every_family_with_a_figure(seven_families):
    """A sampled scenario is a board column (one max_toxicity row per prompt, not one row per
    sample), and the board's family table has a value for the version in every family."""
    store, key = ParquetStore(seven_families["store"]), seven_families["key"]
    keep = pa.array(["pronouns", "stories"])
    tables = {a: store.read_all(a) for a in ("metric_tables", "instance_scores")}
    cards, scores = (t.filter(pc.is_in(t["scenario"], keep)) for t in tables.values())
    suite = load_suite()
    board = build_leaderboard(
        cards,
        scores,
        primary_metrics={s: suite[s].metric for s in ("pronouns", "stories")},
        lower_is_better=LOWER_IS_BETTER,
        seed=0,
        n_resamples=100,
    )
    assert board.rows[0].scenario_scores["stories"] is not None
    for figure in board.family_figures:
        assert figure.cells[key].mean is not None, (figure.family, figure.cells[key].note)
    assert {f.scenario for f in board.family_figures if f.family in ("bias", "toxicity")} == {
        "stories"
    }
