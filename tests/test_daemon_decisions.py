"""Promotion decisions on a gated alias under the real ``dagster-daemon``: pending, then
approved or refused with the numbers, with and without an evaluation run."""

from __future__ import annotations

import time

from dagster import AssetSelection, materialize
from live_deployment import (
    GATE_VARIABLES,
    GATED_SUITE,
    deployment,
    finished,
    wait_for,
)
from live_deployment import PROMOTION_SENSOR as SENSOR

from assay.registry import EventKind
from resources import SuiteResource, assay_resources
from sensors.promotion import MODEL_VERSION_TAG


def test_promotion_decisions_under_the_daemon(tmp_path, model_cache_dir, model_server, monkeypatch):
    """pending → approved and pending → refused with the real daemon, sensor and runs; prints
    the time from a champion request to its decision (a figure, not an assertion)."""
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=2) as deployed:
        for variable in GATE_VARIABLES:
            deployed.env.pop(variable, None)  # the defaults: champion and Production gated
        (deployed.root / "suite.yaml").write_text(GATED_SUITE)
        deployed.assay("create", "g")
        for answer in ("right", "wrong", "right"):
            deployed.assay("register", "g", f"openai:{model_server}#{answer}")
        # The suite's data, as `make demo` or a backfill would have materialized it.
        monkeypatch.setenv("ASSAY_SUITE", deployed.env["ASSAY_SUITE"])
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
        deployed.dagster("sensor", "start", SENSOR)
        figures = {}

        # The first holder, not evaluated yet: pending at once, then evaluated and approved.
        started = time.monotonic()
        asked = deployed.assay("alias", "set", "g", "champion", "1")
        assert asked.stdout.startswith("pending:"), asked.stdout
        wait_for(lambda: deployed.champion("g") == 1 or None, 300, "g@v1 approved", deployed.log)
        figures["not yet evaluated, approved"] = time.monotonic() - started

        # A version evaluated beforehand (through an ungated alias): decided without a run.
        deployed.assay("alias", "set", "g", "challenger", "3")
        wait_for(
            lambda: finished(deployed.runs(**{MODEL_VERSION_TAG: "g@v3"})),
            300,
            "g@v3's evaluation",
            deployed.log,
        )
        runs_before = len(deployed.runs())
        started = time.monotonic()
        asked = deployed.assay("alias", "set", "g", "champion", "3")
        assert asked.stdout.startswith("pending:"), asked.stdout
        wait_for(lambda: deployed.champion("g") == 3 or None, 120, "g@v3 approved", deployed.log)
        figures["already evaluated, approved"] = time.monotonic() - started
        assert len(deployed.runs()) == runs_before  # judged on the stored evaluation

        # A regressing version: pending, evaluated, refused with its reasons; champion stays.
        started = time.monotonic()
        asked = deployed.assay("alias", "set", "g", "champion", "2")
        assert asked.stdout.startswith("pending:"), asked.stdout
        refused = wait_for(lambda: deployed.verdict("g@v2"), 300, "g@v2's verdict", deployed.log)
        figures["not yet evaluated, refused"] = time.monotonic() - started
        assert refused.kind is EventKind.GATE_REFUSED
        assert refused.payload["incumbent"] == "g@v3"
        assert deployed.champion("g") == 3
        failed = {c["kind"] for c in refused.payload["criteria"] if c["outcome"] == "fail"}
        assert failed == {"absolute", "relative"}

        # Asked again on the same suite and code: refused at once, with the numbers.
        again = deployed.assay("alias", "set", "g", "champion", "2", ok=False)
        assert again.returncode == 1 and again.stderr.startswith("refused:")
        assert "arithmetic exact_match" in again.stderr and "estimate -1" in again.stderr
        history = deployed.assay("history", "--model", "g").stdout
        assert "gate_pending" in history and "gate_refused" in history
        assert "arithmetic exact_match vs incumbent" in history

    print("\ntime from a champion request to its decision under the daemon (1 s sensor ticks):")
    for label, seconds in figures.items():
        print(f"  {label}: {seconds:.1f} s")
