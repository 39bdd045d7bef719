"""lm-eval's ``loglikelihood_rolling`` (perplexity) tasks in assay, on the bundled model.

- The rolling windows are lm-eval's (``get_rolling_token_windows`` with ``context_len=1``,
  then ``make_disjoint_window``): checked by hand on a small case and against lm-eval's own
  functions on many lengths.
- The transformers client's answer to a rolling request is the text's summed token
  log-likelihood, checked against plain forward passes of the Hugging Face model over the
  same windows (one window when the text fits, several when the context is cut short).
- ``wikitext`` on real prose (``tests/fixtures/lm_eval_rolling``) runs as a suite entry; its
  scorecard's word and byte perplexities and bits per byte are the corpus figures computed
  by hand from the stored log-likelihoods and the documents' word and byte counts, with
  document-bootstrap intervals; a rerun is answered by the request cache.
- Backends that do not compute rolling requests refuse them, naming the backend.

Parity with lm-eval run as itself is in ``test_lm_eval_rolling_parity.py`` (peers).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assay.core.records import InstanceStat, MetricSummary, Request, RequestKind
from assay.models.base import ModelSpec, ServingConfig
from assay.models.bundled import BUNDLED_SOURCE, bundled_gguf_path
from assay.models.cache import CachedClient, RequestCache
from assay.models.factory import build_client
from assay.models.rolling import rolling_windows
from assay.models.transformers_loading import converted_model_dir
from assay.scoring.summary import ratio_rows

REPO = Path(__file__).resolve().parent.parent
PROSE = REPO / "tests" / "fixtures" / "lm_eval_rolling" / "prose.jsonl"
TEXT = json.loads(PROSE.read_text().splitlines()[3])["page"]  # Apache-2.0 §3, ~200 tokens


def test_windows_by_hand() -> None:
    tokens = list(range(10))
    assert rolling_windows(tokens, 99, 4) == [
        ([99], [0, 1, 2, 3]),
        ([3], [4, 5, 6, 7]),  # one token of context before a full window
        ([5, 6, 7], [8, 9]),  # the last window fills its context with earlier tokens
    ]
    assert rolling_windows(tokens, 99, 10) == [([99], tokens)]
    assert rolling_windows(tokens, 99, 1) == [([99], [0])] + [([i], [i + 1]) for i in range(9)]
    assert rolling_windows([], 99, 4) == []
    with pytest.raises(ValueError, match="max_len >= 1"):
        rolling_windows(tokens, 99, 0)


def test_windows_are_lm_evals() -> None:
    utils = pytest.importorskip("lm_eval.utils")
    for n in (1, 2, 5, 17, 64, 65, 130):
        tokens = list(range(100, 100 + n))
        for max_len in (1, 2, 3, 8, 64, 200):
            expected = [
                utils.make_disjoint_window(w)
                for w in utils.get_rolling_token_windows(tokens, 7, max_len, 1)
            ]
            ours = rolling_windows(tokens, 7, max_len)
            assert ours == [tuple(w) for w in expected], (n, max_len)
            predicted = [t for _, pred in ours for t in pred]
            assert predicted == tokens  # every token predicted once, in order
            assert all(len(ctx) + len(pred) - 1 <= max_len for ctx, pred in ours)


@pytest.fixture(scope="module")
def hf_model(model_cache_dir: Path) -> tuple[Any, Any]:
    """The bundled model and tokenizer loaded by transformers directly (float32, CPU)."""
    import transformers

    folder = converted_model_dir(bundled_gguf_path(), model_cache_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
    return model.eval(), tokenizer


def _plain_loglikelihood(model: Any, windows: list[tuple[list[int], list[int]]]) -> float:
    """Σ over windows of log P(predicted tokens | context), one unbatched forward each."""
    import torch

    total = 0.0
    with torch.inference_mode():
        for context, predicted in windows:
            ids = torch.tensor([context + predicted[:-1]])
            logits = model(input_ids=ids).logits[0, -len(predicted) :].double()
            lps = logits.log_softmax(-1)[torch.arange(len(predicted)), torch.tensor(predicted)]
            total += float(lps.sum())
    return total


@pytest.mark.parametrize("max_context", [2048, 48])
def test_transformers_client_sums_the_windows(
    max_context: int, hf_model: tuple[Any, Any], model_cache_dir: Path
) -> None:
    model, tokenizer = hf_model
    prefix = (
        tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    )
    tokens = tokenizer(TEXT).input_ids
    if max_context >= len(tokens):
        windows = [([prefix], tokens)]  # the whole text after the prefix token
    else:
        utils = pytest.importorskip("lm_eval.utils")
        windows = [
            utils.make_disjoint_window(w)
            for w in utils.get_rolling_token_windows(tokens, prefix, max_context, 1)
        ]
        assert len(windows) >= 4
    expected = _plain_loglikelihood(model, windows)

    serving = ServingConfig(batch_size=3, max_context=max_context)
    client = build_client(ModelSpec("roll@v1", BUNDLED_SOURCE, serving), model_cache_dir)
    requests = [
        Request("0", RequestKind.LOGLIKELIHOOD_ROLLING, TEXT),
        Request("1", RequestKind.LOGLIKELIHOOD_ROLLING, ""),
        Request("2", RequestKind.LOGLIKELIHOOD, "The capital of France is", (" Paris",)),
    ]
    rolled, empty, plain = client.complete(requests)
    assert rolled.ok and len(rolled.choices) == 1
    (choice,) = rolled.choices
    assert math.isclose(choice.logprob, expected, rel_tol=1e-5, abs_tol=1e-3)
    assert choice.n_tokens == rolled.prompt_tokens == len(tokens)
    assert choice.n_bytes == len(TEXT.encode("utf-8"))
    assert empty.ok and empty.choices[0].logprob == 0.0 and empty.choices[0].n_tokens == 0
    assert plain.ok and plain.choices[0].text == " Paris"  # batched beside them, untouched


def test_other_backends_refuse_rolling_requests(tmp_path: Path) -> None:
    spec = ModelSpec("remote@v1", "openai:http://127.0.0.1:9/v1#m", ServingConfig())
    (completion,) = build_client(spec, tmp_path).complete(
        [Request("7", RequestKind.LOGLIKELIHOOD_ROLLING, "some text")]
    )
    assert not completion.ok
    assert "OpenAI-compatible backend does not compute loglikelihood_rolling" in completion.error
    assert "'7'" in completion.error


def test_transformed_ratio_rows_are_functions_of_the_plain_ratio() -> None:
    rng = np.random.default_rng(5)
    lls, words = -rng.uniform(50, 400, 12), rng.integers(20, 120, 12).astype(float)
    stats = [
        InstanceStat(str(i), metric, float(v), "accuracy")
        for i in range(12)
        for metric, v in (("x_ll", lls[i]), ("x_w", words[i]))
    ]
    ratios = {"ppl": ("x_ll", "x_w"), "bpb": ("x_ll", "x_w")}
    (plain_bpb, plain_ppl) = ratio_rows(stats, ratios, "k")
    (bpb, ppl) = ratio_rows(stats, ratios, "k", transforms={"ppl": "exp_neg", "bpb": "neg_bits"})
    r = lls.sum() / words.sum()
    assert math.isclose(ppl.mean, math.exp(-r)) and math.isclose(bpb.mean, -r / math.log(2))
    # The same resamples, mapped: exp(-r) decreases, so the ends swap.
    assert math.isclose(ppl.ci_low, math.exp(-plain_ppl.ci_high))
    assert math.isclose(ppl.ci_high, math.exp(-plain_ppl.ci_low))
    assert math.isclose(bpb.ci_low, -plain_bpb.ci_high / math.log(2))
    assert ppl.ci_low < ppl.mean < ppl.ci_high and ppl.count == 12
    with pytest.raises(ValueError, match="unknown ratio transform"):
        ratio_rows(stats, ratios, transforms={"ppl": "log"})


# ------------------------------------------------------------------------ wikitext in assay

N_DOCS = 6
WINDOW = 64


@pytest.fixture(scope="module")
def wikitext_run(model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``wikitext`` on the prose fixture, evaluated twice through the request cache."""
    pytest.importorskip("lm_eval")
    from assay.evaluate.run import evaluate, select_instances
    from assay.evaluate.suite import parse_suite
    from assay.scoring.lm_eval_scores import score_lm_eval
    from assay.scoring.scorecard import score_partition

    entry = {
        "scenario": "lm_eval",
        "args": {"task": "wikitext", "data_files": {"test": str(PROSE)}},
        "max_instances": N_DOCS,
    }
    suite = parse_suite({"scenarios": {"wikitext": entry}}, "rolling.yaml", REPO)
    (config,) = suite.scenarios.values()
    serving = ServingConfig(batch_size=8, max_context=WINDOW)
    model = build_client(ModelSpec("roll@v1", BUNDLED_SOURCE, serving), model_cache_dir)
    cache = RequestCache(f"sqlite:///{tmp_path_factory.mktemp('cache') / 'requests.db'}")
    client = CachedClient(model, cache, serving)
    instances, train = select_instances(config, config.build().load().instances)
    first = evaluate(client, config, instances, train).outputs
    again = evaluate(client, config, instances, train).outputs
    scored = score_lm_eval(config.lm_eval, instances, first)
    card = score_partition(instances, first, scored=scored)
    return {
        "instances": instances,
        "outputs": first,
        "again": again,
        "card": card,
        "primary": config.primary_metric,
        "spec": config.lm_eval,
    }


def test_wikitext_scorecard_is_the_corpus_perplexity(wikitext_run: dict) -> None:
    outputs, card = wikitext_run["outputs"], wikitext_run["card"]
    pages = [json.loads(line)["page"] for line in PROSE.read_text().splitlines()][:N_DOCS]
    assert [o.request.kind for o in outputs] == [RequestKind.LOGLIKELIHOOD_ROLLING] * N_DOCS
    assert [i.input for i in wikitext_run["instances"]] == [o.request.prompt for o in outputs]
    lls = {o.request.instance_id: o.completion.choices[0].logprob for o in outputs}
    assert all(ll < 0 for ll in lls.values())
    # wikitext counts words and bytes of the page as stored (before detokenizing).
    words = {str(i): len(re.split(r"\s+", page)) for i, page in enumerate(pages)}
    nbytes = {str(i): len(page.encode("utf-8")) for i, page in enumerate(pages)}
    total_ll = sum(lls.values())
    expected = {
        "word_perplexity": math.exp(-total_ll / sum(words.values())),
        "byte_perplexity": math.exp(-total_ll / sum(nbytes.values())),
        "bits_per_byte": -total_ll / sum(nbytes.values()) / math.log(2),
    }
    assert wikitext_run["primary"] == "word_perplexity"  # the board's headline
    rows: dict[str, MetricSummary] = {r.metric: r for r in card.card if r.group == ""}
    for metric, value in expected.items():
        row = rows[metric]
        assert math.isclose(row.mean, value, rel_tol=1e-9), metric
        assert row.count == N_DOCS and row.lower_is_better
        assert row.ci_low < row.mean < row.ci_high, metric  # documents resampled
    stats = {(s.instance_id, s.metric): s.value for s in card.stats}
    for doc, ll in lls.items():
        assert stats[(doc, "word_perplexity_loglikelihood")] == pytest.approx(ll)
        assert stats[(doc, "word_perplexity_weight")] == words[doc]
        assert stats[(doc, "bits_per_byte_weight")] == nbytes[doc]


def test_the_stored_outputs_score_as_the_outputs_in_memory(wikitext_run: dict) -> None:
    """Scoring reads the outputs back from their Parquet table (as the ``scores`` asset
    does): each rolling request must be rebuilt as it was asked, with no continuation."""
    from assay.core.records import ModelOutput
    from assay.scoring.lm_eval_scores import score_lm_eval

    outputs = wikitext_run["outputs"]
    stored = ModelOutput.from_table(ModelOutput.to_table(outputs))
    assert [o.request for o in stored] == [o.request for o in outputs]
    in_memory = score_lm_eval(wikitext_run["spec"], wikitext_run["instances"], outputs)
    from_store = score_lm_eval(wikitext_run["spec"], wikitext_run["instances"], stored)
    assert not from_store.failures and from_store.stats == in_memory.stats
    assert len(from_store.stats) == 6 * N_DOCS  # three metrics, a log-likelihood and a weight


def test_a_rerun_is_answered_by_the_request_cache(wikitext_run: dict) -> None:
    first, again = wikitext_run["outputs"], wikitext_run["again"]
    assert not any(o.completion.cached for o in first)
    assert all(o.completion.cached for o in again)
    assert [o.completion.choices for o in again] == [o.completion.choices for o in first]
