"""A perplexity entry (an lm-eval corpus figure) on the explorer: the neighbours' comparison
pages and the browser's comparison data pair each document's log-likelihood, as the board
does (``assay.compare.ranking.ranked_column``), instead of leaving the scenario out.

The perplexity partitions are scored by lm-eval's own ``wikitext`` task on the prose
fixture, from outputs whose log-likelihoods are set here; the rest of the store is the
explorer's sample (``assay.report.sample``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from sample_clock import SampleClock, held_explorer_data

from assay.core.records import ChoiceScore, Completion, Instance, InstanceStat, ModelOutput
from assay.registry import Registry
from assay.report import build_site, directory_writer
from assay.report.comparison import values_file
from assay.report.links import compare_page
from assay.report.sample import write_sample
from assay.scoring.scorecard import score_partition
from assay.scoring.summary import scorecard_table
from assay.storage.parquet import ParquetStore

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
PROSE = REPO / "tests" / "fixtures" / "lm_eval_rolling" / "prose.jsonl"
N_DOCS = 6
PART = "word_perplexity_loglikelihood"


def _scored_perplexity(store: ParquetStore, versions: list[str]) -> dict[str, np.ndarray]:
    """Each version's ``prose`` partition: log-likelihoods of -(2.0 - 0.3 k) nats per word for
    the k-th version (later versions better), scored by lm-eval's task; returns them."""
    from assay.evaluate.run import select_instances
    from assay.evaluate.suite import parse_suite
    from assay.scoring.lm_eval_scores import score_lm_eval

    entry = {
        "scenario": "lm_eval",
        "args": {"task": "wikitext", "data_files": {"test": str(PROSE)}},
        "max_instances": N_DOCS,
    }
    config = parse_suite({"scenarios": {"prose": entry}}, "s.yaml", REPO).scenarios["prose"]
    instances, train = select_instances(config, config.build().load().instances)
    requests = config.build_requests(instances, train)
    store.write("scenario_instances", {"scenario": "prose"}, Instance.to_table(instances))
    lls = {}
    for k, version in enumerate(versions):
        ll = np.array([-(2.0 - 0.3 * k) * len(r.prompt.split()) for r in requests])
        outputs = [
            ModelOutput(
                r,
                Completion(
                    choices=(ChoiceScore("", float(v), 100, len(r.prompt), len(r.prompt)),),
                ),
            )
            for r, v in zip(requests, ll, strict=True)
        ]
        scored = score_partition(
            instances,
            outputs,
            scored=score_lm_eval(config.lm_eval, instances, outputs),
            seed_key=f"{version}|prose",
        )
        where = {"model_version": version, "scenario": "prose"}
        store.write("model_outputs", where, ModelOutput.to_table(outputs))
        store.write("instance_scores", where, InstanceStat.to_table(scored.stats))
        store.write("metric_tables", where, scorecard_table(scored.card))
        lls[version] = ll
    return lls


def test_a_perplexity_entry_is_compared_on_its_documents(tmp_path: Path) -> None:
    clock = SampleClock()
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", clock=clock)
    store = ParquetStore(str(tmp_path / "storage"))
    sample = write_sample(store, registry, clock=clock.set, n_instances=12, hostile=False)
    registered = list(reversed(sample.versions))  # oldest first
    lls = _scored_perplexity(store, registered)
    data = held_explorer_data(
        store, registry, sample, {**sample.primary_metrics, "prose": "word_perplexity"}
    )
    board = data.board
    site = tmp_path / "site"
    build_site(
        data,
        directory_writer(site),
        generated_at=datetime(2026, 11, 4, tzinfo=UTC),
        n_resamples=200,
    )
    registry.close()

    # The board's perplexity comparisons are of the documents' log-likelihoods ...
    ranked = [r.model_version for r in board.rows]
    on_board = [c for c in board.comparisons if c.scenario == "prose"]
    assert {c.metric for c in on_board} == {PART} and len(on_board) == len(ranked) - 1
    # ... and so are the neighbours' pages, with the difference computed by hand.
    for a, b in pairwise(ranked):
        name = compare_page(a, b)[: -len(".html")]
        rows = json.loads((site / "export" / f"{name}.json").read_text())
        (prose,) = [r for r in rows if r["scenario"] == "prose"]
        assert prose["metric"] == PART and prose["n"] == N_DOCS
        assert prose["mean_diff"] == pytest.approx(float(np.mean(lls[a] - lls[b])))
        assert PART in (site / compare_page(a, b)).read_text()
    # The browser's comparisons (compare.html) get the same rows per version.
    for version, ll in lls.items():
        script = (site / values_file(version)).read_text()
        payload = json.loads(script.split("] = ", 1)[1].rstrip().rstrip(";"))
        values = payload["scenarios"]["prose"]
        assert values["metric"] == PART
        by_instance = {row[0]: row[4] for row in values["rows"]}
        assert sorted(by_instance.values()) == pytest.approx(sorted(ll.tolist()))
