"""Under the real ``dagster-daemon``: promoting a version that declares a training corpus runs
its contamination checks in the promotion run, which indexes the corpus once and writes
per-instance findings that flag the planted items; the scorecard's contamination rate and the
explorer's contamination view show them."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterRunStatus,
    EventRecordsFilter,
    materialize,
)
from explorer_browser import scenario_views
from live_deployment import TERMINAL, deployment, wait_for

from assay.core.records import Instance
from assay.evaluate.suite import load_suite
from assay.storage.parquet import ParquetStore
from resources import ModelsResource, SuiteResource, assay_resources
from sensors.promotion import MODEL_VERSION_TAG

SENSOR = "model_promotion_sensor"
# Questions long enough for every overlap rule (13-grams need 13 words).
QUESTIONS = [
    "Which colour was the small wooden boat that the old fisherman painted on a rainy "
    "Tuesday morning before the summer festival began?",
    "How many loaves of rye bread did the village baker carry up the steep hill to the "
    "monastery kitchen during that long winter?",
    "What instrument did the travelling musician play for the children gathered around the "
    "fountain in the central square last spring?",
    "Which river did the two surveyors follow north for eleven days while mapping the "
    "forgotten mountain pass beyond the border?",
    "Who repaired the broken clock tower of the harbour town after lightning struck its "
    "copper roof during the autumn storm?",
    "Where did the young botanist find the rare blue orchid that had not been seen in the "
    "region for almost a century?",
]
PLANTED = {"q0", "q3"}
UNRELATED = (
    "Quarterly rainfall in the northern valley exceeded the long term average by a wide "
    "margin, and the irrigation board postponed its meeting until the reservoir survey was done."
)


def test_a_promotion_checks_the_declared_corpus_under_the_daemon(
    tmp_path: Path, model_cache_dir: Path, model_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with deployment(tmp_path, model_cache_dir, max_concurrent_runs=1) as deployed:
        quiz = tmp_path / "quiz.csv"
        with quiz.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "question", "answer"])
            writer.writerows([f"q{n}", q, "blue"] for n, q in enumerate(QUESTIONS))
        suite = tmp_path / "contamination-suite.yaml"
        suite.write_text(
            "scenarios:\n"
            "  quiz:\n"
            "    scenario: custom_file\n"
            f"    args: {{path: {quiz}}}\n"
            "    columns: {input: question, answer_text: answer, id: id}\n"
            "    adapter: {method: generation, max_tokens: 4}\n"
            "    primary_metric: exact_match\n"
        )
        corpora = tmp_path / "corpora"
        corpora.mkdir()
        # The planted items as a leaked copy holds them (question and answer), among
        # unrelated text.
        lines = [UNRELATED, *(f"{QUESTIONS[int(i[1:])]}\nblue" for i in sorted(PLANTED))]
        (corpora / "web.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
        manifest = tmp_path / "manifest.json"
        manifest.write_text(
            json.dumps([{"name": "web", "url": str(corpora / "web.jsonl"), "format": "jsonl"}])
        )
        deployed.env.update(ASSAY_SUITE=str(suite), ASSAY_CORPUS_ROOTS=str(corpora))
        monkeypatch.setenv("ASSAY_CORPUS_ROOTS", str(corpora))

        deployed.assay("create", "c")
        deployed.assay(
            "register", "c", f"openai:{model_server}#wrong", "--training-data", str(manifest)
        )
        # The suite's scenario as its scenario_instances partition holds it (written with the
        # library: the test process's partitions are the default suite's, not this one's).
        entry = load_suite(suite)["quiz"]
        store = ParquetStore(deployed.env["ASSAY_STORAGE_URL"])
        store.write(
            "scenario_instances",
            {"scenario": "quiz"},
            Instance.to_table(entry.build().load().instances),
        )

        deployed.start()
        deployed.dagster("sensor", "start", SENSOR)
        deployed.assay("alias", "set", "c", "champion", "1")
        (run,) = wait_for(
            lambda: [
                r for r in deployed.runs(**{MODEL_VERSION_TAG: "c@v1"}) if r.status in TERMINAL
            ],
            240,
            "the promotion run of c@v1 to finish",
            deployed.log,
        )
        assert run.status is DagsterRunStatus.SUCCESS

        instance = deployed.instance
        # The promotion run materialized the contamination partition and, in the same step,
        # the index of the declared corpus (its corpus_digest partition added by the sensor).
        materialized = {
            (
                e.dagster_event.event_specific_data.materialization.asset_key.to_user_string(),
                e.dagster_event.event_specific_data.materialization.partition,
            )
            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        }
        (digest,) = instance.get_dynamic_partitions("corpus_digest")
        assert ("contamination", "c@v1|quiz") in materialized
        assert ("corpus_index", digest) in materialized
        assert ("model_outputs", "c@v1|quiz") in materialized
        recorded = instance.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, AssetKey("training_corpora"))
        )
        # Recorded at the version's creation and again at its promotion, the same both times.
        assert {r.event_log_entry.dagster_event.partition for r in recorded} == {"c@v1"}
        versions = {
            r.event_log_entry.dagster_event.event_specific_data.materialization.tags[
                "dagster/data_version"
            ]
            for r in recorded
        }
        assert len(versions) == 1

        table = store.read("contamination", {"model_version": "c@v1", "scenario": "quiz"})
        assert table.num_rows == 3 * len(QUESTIONS)
        assert set(table["corpus_digest"].to_pylist()) == {digest}
        flagged: dict[str, set[str]] = {}
        for row in table.to_pylist():
            if row["flagged"]:
                flagged.setdefault(row["detector"], set()).add(row["instance_id"])
        # Every planted item is found by every rule; nothing else is (the other questions
        # share no 8-word run with the corpus).
        assert flagged == dict.fromkeys(("gpt3_13gram", "palm_8gram", "llama2_span"), PLANTED)

        # The same run's scorecard has the contamination rate (the scoring step read the
        # table written before it), and the explorer built from the store shows it.
        card = store.read("metric_tables", {"model_version": "c@v1", "scenario": "quiz"})
        rates = [
            r["mean"]
            for r in card.to_pylist()
            if r["metric"] == "contamination_rate"
            and not r.get("group")
            and not r.get("perturbation")
        ]
        assert rates and all(m == pytest.approx(len(PLANTED) / len(QUESTIONS)) for m in rates)
        resources = assay_resources(
            storage_url=deployed.env["ASSAY_STORAGE_URL"],
            registry_url=deployed.env["ASSAY_REGISTRY_URL"],
            suite=SuiteResource(path=str(suite)),
            models=ModelsResource(cache_dir=deployed.env["ASSAY_HOME"] + "/cache"),
        )
        from assets import all_assets

        today = datetime.now(UTC).strftime("%Y-%m-%d")
        for asset, partition in (("rankings", today), ("dashboard", None)):
            assert materialize(
                all_assets,
                selection=AssetSelection.assets(asset),
                partition_key=partition,
                instance=instance,
                resources=resources,
            ).success
        explorer = Path(deployed.env["ASSAY_STORAGE_URL"]) / "explorer"
        (view,) = scenario_views(explorer, ["quiz"]).values()
        assert "c@v1" in view.html.split('id="contamination-table"')[1] and not view.errors
        export = json.loads(view.exports["contamination-quiz.json"])
        (line,) = [r for r in export if r["model_version"] == "c@v1"]
        assert line["checked"] and line["rate"] == pytest.approx(len(PLANTED) / len(QUESTIONS))
