"""Parity with lm-evaluation-harness run as itself on a perplexity task (``wikitext``).

lm-eval's own run (``simple_evaluate`` with its ``HFLM`` on the bundled model exported to a
Hugging Face directory, ``max_length`` set, ``log_samples=True``, the task's YAML included
and pointed at the real prose of ``tests/fixtures/lm_eval_rolling`` with lm-eval's ``json``
loader) is the reference. assay runs ``wikitext`` as a ``scenario: lm_eval`` suite entry
through its transformers client with ``serving.max_context`` equal to lm-eval's
``max_length`` and scores the stored outputs. Checked per document: the text sent, its summed
log-likelihood (float tolerance), each metric's (log-likelihood, weight) pair; and lm-eval's
three corpus aggregates (word and byte perplexity, bits per byte) against assay's scorecard.
Two context lengths: one that cuts every document into several rolling windows, one that
holds each document whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.core.records import ModelOutput
from assay.evaluate.run import evaluate, select_instances
from assay.evaluate.suite import parse_suite
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.factory import build_client
from assay.models.transformers_loading import converted_model_dir
from assay.scenarios.lm_eval_tasks import metric_name
from assay.scoring.lm_eval_scores import score_lm_eval
from assay.scoring.scorecard import score_partition

# Runs lm-evaluation-harness itself beside assay: `make test-peers` (CI runs it).
pytestmark = pytest.mark.peers

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parent.parent
PROSE = REPO / "tests" / "fixtures" / "lm_eval_rolling" / "prose.jsonl"
N_DOCS = 17  # the whole fixture
BATCH = 8
# As in test_lm_eval_parity: two numerically different float32 forward passes (HFLM's
# right-padded batches, assay's left-padded ones) agree to about 1e-5 relative.
LL_REL = 5e-5
LL_ABS = 5e-4
METRIC_TOL = 5e-5
WINDOWS = (48, 2048)  # several windows per document; every document whole


@pytest.fixture(scope="module")
def model_dir(model_cache_dir: Path) -> Path:
    return converted_model_dir(bundled_gguf_path(), model_cache_dir)


@pytest.fixture(scope="module", params=WINDOWS)
def window(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="module")
def lm_eval_run(model_dir: Path, window: int, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """lm-eval's own run of ``wikitext`` on the prose, with ``max_length=window``."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from assay.scenarios.lm_eval_tasks import task_index

    folder = tmp_path_factory.mktemp("lm_eval_rolling")
    config = {
        "include": str(task_index()["wikitext"].yaml_path),
        "task": "wikitext",
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {split: str(PROSE) for split in ("train", "validation", "test")}
        },
    }
    (folder / "wikitext.yaml").write_text(yaml.safe_dump(config))
    lm = HFLM(
        pretrained=str(model_dir),
        dtype="float32",
        batch_size=BATCH,
        device="cpu",
        max_length=window,
    )
    out = simple_evaluate(
        model=lm,
        tasks=["wikitext"],
        task_manager=TaskManager(include_path=str(folder)),
        limit=N_DOCS,
        log_samples=True,
        bootstrap_iters=0,
    )
    return {"results": out["results"]["wikitext"], "samples": out["samples"]["wikitext"]}


@pytest.fixture(scope="module")
def assay_run(model_cache_dir: Path, window: int) -> tuple[list[ModelOutput], Any]:
    """assay's run: a suite entry, the transformers client, lm-eval's scoring."""
    entry = {
        "scenario": "lm_eval",
        "args": {"task": "wikitext", "data_files": {"test": str(PROSE)}},
        "max_instances": N_DOCS,
    }
    suite = parse_suite({"scenarios": {"wikitext": entry}}, "parity.yaml", REPO)
    (config,) = suite.scenarios.values()
    serving = ServingConfig(batch_size=BATCH, max_context=window)
    client = build_client(ModelSpec("parity@v1", BUNDLED_SOURCE, serving), model_cache_dir)
    instances, train = select_instances(config, config.build().load().instances)
    outputs = evaluate(client, config, instances, train).outputs
    scored = score_lm_eval(config.lm_eval, instances, outputs)
    return outputs, score_partition(instances, outputs, scored=scored)


def _close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def test_same_texts_loglikelihoods_and_perplexities_as_lm_eval(
    window: int, lm_eval_run: dict, assay_run: tuple[list[ModelOutput], Any]
) -> None:
    outputs, scores = assay_run
    samples = lm_eval_run["samples"]
    assert sorted(s["doc_id"] for s in samples) == list(range(N_DOCS))
    by_doc = {o.request.instance_id: o for o in outputs}
    assert len(by_doc) == len(outputs) == N_DOCS
    stats = {(s.instance_id, s.metric): s.value for s in scores.stats}
    for sample in samples:
        doc = str(sample["doc_id"])
        ours = by_doc[doc]
        assert ours.request.prompt == sample["arguments"][0][0], doc
        ll = ours.completion.choices[0].logprob
        reference = float(sample["resps"][0][0])
        assert math.isclose(ll, reference, rel_tol=LL_REL, abs_tol=LL_ABS), (doc, ll, reference)
        if window < 2048:  # the context really was cut into several windows
            assert ours.completion.prompt_tokens > window, doc
        for metric in sample["metrics"]:
            name = metric_name(metric, sample["filter"])
            their_ll, their_weight = sample[metric]
            assert _close(stats[(doc, f"{name}_loglikelihood")], float(their_ll), LL_REL), doc
            assert stats[(doc, f"{name}_weight")] == float(their_weight), (doc, name)

    card = {r.metric: r for r in scores.card if r.group == "" and not r.perturbation}
    compared = 0
    for key, value in lm_eval_run["results"].items():
        if "," not in key or "_stderr" in key or key == "alias":
            continue
        metric, filter_key = key.split(",", 1)
        row = card[metric_name(metric, filter_key)]
        assert _close(row.mean, float(value), METRIC_TOL), (metric, row.mean, value)
        assert row.count == N_DOCS and row.ci_low < row.mean < row.ci_high
        compared += 1
    assert compared == 3  # word_perplexity, byte_perplexity, bits_per_byte
