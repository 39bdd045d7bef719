"""Prompt promotions under the real ``dagster-daemon``: an alias moved with the CLI
re-evaluates the entries that use it, and a gated prompt alias is decided by trials on the
champion."""

from __future__ import annotations

from dagster import AssetSelection, DagsterRunStatus, materialize
from live_deployment import (
    BIN,
    GATED_SUITE,
    TERMINAL,
    TINY_SUITE,
    deployment,
    finished,
    wait_for,
)
from live_deployment import PROMOTION_SENSOR as SENSOR

from assay.registry import EventKind
from assay.storage.parquet import ParquetStore
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import MODEL_VERSION_TAG


def test_a_prompt_alias_moved_with_the_cli_reevaluates_its_entries(
    tmp_path, model_cache_dir, model_server, monkeypatch
):
    """A prompt promotion under the daemon: the run it launches resolves the moved alias."""
    first, second = "Answer with digits only.", "Reply with the number alone."
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=1) as deployed:
        suite = tmp_path / "suite.yaml"
        suite.write_text(
            TINY_SUITE.replace(
                "adapter: {method: generation,",
                'adapter: {method: generation, instructions: "prompts:/terse@production",',
            )
        )

        def prompts(*args: str) -> None:
            done = deployed.run(str(BIN / "assay"), "prompts", *args)
            assert done.returncode == 0, done.stderr

        prompts("create", "terse")
        prompts("register", "terse", "--template", first)
        prompts("register", "terse", "--template", second)
        prompts("alias", "terse", "production", "1")
        deployed.assay("create", "p")
        deployed.assay("register", "p", f"openai:{model_server}#right")
        deployed.assay("alias", "set", "p", "champion", "1")

        # The suite's instances, in process on the same instance (as the nightly test does).
        monkeypatch.setenv("ASSAY_SUITE", str(suite))
        from assets import all_assets

        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=str(suite)),
            models=ModelsResource(cache_dir=deployed.env["ASSAY_HOME"] + "/cache"),
        )
        assert materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key="arithmetic",
            instance=deployed.instance,
            resources=resources,
        ).success

        # The events so far stand for what was evaluated before: the sensor starts after them.
        registry = deployed.registry()
        last = registry.events()[-1].id
        registry.close()
        deployed.start()
        deployed.dagster("sensor", "cursor", SENSOR, "--set", str(last))
        deployed.dagster("sensor", "start", SENSOR)
        prompts("alias", "terse", "production", "2")

        def finished():
            runs = deployed.runs(**{MODEL_VERSION_TAG: "p@v1"})
            return runs if runs and {r.status for r in runs} <= TERMINAL else None

        (run,) = wait_for(finished, 420, "the prompt promotion's run to finish", deployed.log)
        assert run.status is DagsterRunStatus.SUCCESS
        assert "prompt alias terse@production" in run.tags["assay/reason"]
        outputs = ParquetStore(deployed.env["ASSAY_STORAGE_URL"]).read(
            "model_outputs", {"model_version": "p@v1", "scenario": "arithmetic"}
        )
        assert outputs.num_rows == 8
        assert all(p.startswith(second) for p in outputs["prompt"].to_pylist())
        recorded = {
            (t["name"], t["version"]) for ts in outputs["prompt_templates"].to_pylist() for t in ts
        }
        assert recorded == {("terse", 2)}


def test_a_prompt_promotion_decided_under_the_daemon(
    tmp_path, model_cache_dir, model_server, monkeypatch
):
    """A gated prompt alias under the daemon: the candidate layout and the one the alias held
    are tried on the champion (prompt_trials runs), a regressing layout is refused with its
    numbers and an equal one approved, moved and re-evaluated from the request cache."""
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed:
        for env in (deployed.env, None):
            if env is None:
                monkeypatch.setenv("ASSAY_GATED_PROMPT_ALIASES", "production")
            else:
                env["ASSAY_GATED_PROMPT_ALIASES"] = "production"
        (deployed.root / "suite.yaml").write_text(
            GATED_SUITE.replace(
                "adapter: {method: generation,",
                "adapter: {method: generation, input_template: prompts:/layout@production,",
            )
        )
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
        registry = deployed.registry()
        registry.create_prompt("layout")
        # ``right`` answers the last question of its prompt: v2 adds one whose answer (2000)
        # no instance has; v3 only a label.
        for text in ("{{ input }}", "{{ input }} What is 1000 + 1000?", "Q: {{ input }}"):
            registry.create_prompt_version("layout", text, ["input"])
        registry.request_prompt_alias("layout", "production", 1, force=True, reason="setup")
        registry.create_model("p")
        registry.create_version("p", f"openai:{model_server}#right")
        registry.set_alias("p", "champion", 1)
        last = registry.events()[-1].id
        from assets import all_assets

        assert materialize(
            all_assets,
            selection=AssetSelection.assets("scenario_instances"),
            partition_key="arithmetic",
            instance=deployed.instance,
            resources=assay_resources(
                storage_url=deployed.env["ASSAY_STORAGE_URL"],
                registry_url=deployed.env["ASSAY_REGISTRY_URL"],
                suite=SuiteResource(path=deployed.env["ASSAY_SUITE"]),
            ),
        ).success
        deployed.start()
        deployed.dagster("sensor", "cursor", SENSOR, "--set", str(last))
        deployed.dagster("sensor", "start", SENSOR)
        store = ParquetStore(deployed.env["ASSAY_STORAGE_URL"])
        champion = {"model_version": "p@v1", "scenario": "arithmetic"}

        def verdict(candidate: str):
            found = [
                e
                for e in registry.decisions(prompt="layout")
                if e.kind in (EventKind.GATE_APPROVED, EventKind.GATE_REFUSED)
                and e.payload.get("candidate") == candidate
            ]
            return found[-1] if found else None

        assert registry.request_prompt_alias("layout", "production", 2).outcome.value == "pending"
        refused = wait_for(lambda: verdict("layout@v2"), 300, "layout@v2's verdict", deployed.log)
        assert refused.kind is EventKind.GATE_REFUSED, refused.payload["summary"]
        by_kind = {c["kind"]: c for c in refused.payload["criteria"]}
        assert by_kind["relative"]["estimate"] == -1.0  # 0 of 8 answered against 8 of 8
        assert by_kind["absolute"]["estimate"] == 0.0
        trials = deployed.runs(**{"assay/prompt_trial": "layout@v2"})
        assert [r.status for r in trials] == [DagsterRunStatus.SUCCESS]
        assert trials[0].tags["assay/trial_model_version"] == "p@v1"
        assert registry.get_prompt("prompts:/layout@production").version == 1
        assert not store.exists("model_outputs", champion)  # trials never write there

        assert registry.request_prompt_alias("layout", "production", 3).outcome.value == "pending"
        approved = wait_for(lambda: verdict("layout@v3"), 300, "layout@v3's verdict", deployed.log)
        assert approved.kind is EventKind.GATE_APPROVED, approved.payload["summary"]
        # The verdict is recorded first, then the alias moves (the same tick, or the next one
        # if that tick is cut short): waited for.
        wait_for(
            lambda: registry.get_prompt("prompts:/layout@production").version == 3,
            60,
            "the approved move of layout's production alias",
            deployed.log,
        )
        # The move re-evaluates the champion; the candidate's trial cached its answers.
        (run,) = wait_for(
            lambda: finished(deployed.runs(**{MODEL_VERSION_TAG: "p@v1"})),
            300,
            "the champion's re-evaluation",
            deployed.log,
        )
        assert run.status is DagsterRunStatus.SUCCESS
        outputs = store.read("model_outputs", champion)
        assert outputs.num_rows == 8 and all(outputs["cached"].to_pylist())
        assert all("Q: What is" in p for p in outputs["prompt"].to_pylist())
        registry.close()
