"""IFEval parity: lm-evaluation-harness's own ``ifeval`` task run on the bundled model over the
real IFEval prompts of tests/fixtures, then the exact answers it generated scored by assay's
``ifeval`` scenario and scorer. Every prompt's strict and loose verdicts (per instruction and
per prompt) and the four aggregates must be lm-eval's, except where lm-eval's verdict is a
random draw (two instructions of IFEval, both in the fixture: see ``drawn``).

The task is lm-eval's ``ifeval.yaml`` itself, included by a local task that reads the fixture
instead of the hub dataset; only ``max_gen_toks`` is lowered (to 32, from 1,280) to keep the
run short on CPU. The answers are the bundled model's, with its chat template, greedy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assay.core.records import Completion, ModelOutput, Request, RequestKind
from assay.models.bundled import bundled_gguf_path
from assay.models.transformers_loading import converted_model_dir
from assay.scenarios import get_scenario
from assay.scoring.ifeval import follows
from assay.scoring.scorecard import score_partition
from assay.scoring.scorer_runs import EntryScorer

# Runs lm-evaluation-harness itself beside assay: `make test-peers` (CI runs it).
pytestmark = pytest.mark.peers

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is assay's lmeval extra")

FIXTURE = (
    Path(__file__).parent / "fixtures" / "datasets" / "google__IFEval" / "default" / "train.jsonl"
)
TASK = "assay_ifeval_fixture"
METRICS = (
    "prompt_level_strict_acc",
    "inst_level_strict_acc",
    "prompt_level_loose_acc",
    "inst_level_loose_acc",
)


@pytest.fixture(scope="module")
def lm_eval_run(model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # assay's checks first: they put the shipped nltk tables on nltk's path (lm-eval would try
    # a download) and seed langdetect, which lm-eval's run then shares in this process.
    warm = get_scenario("ifeval", data_files={"test": str(FIXTURE)}).load()
    follows(warm.instances[0], "warm-up")
    tasks = tmp_path_factory.mktemp("lm-eval-tasks")
    included = Path(lm_eval.__file__).parent / "tasks" / "ifeval" / "ifeval.yaml"
    (tasks / f"{TASK}.yaml").write_text(
        f"include: {included}\n"
        f"task: {TASK}\n"
        "dataset_path: json\n"
        "dataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {FIXTURE.resolve()}\n"
    )
    model_dir = converted_model_dir(bundled_gguf_path(), model_cache_dir)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    lm = HFLM(pretrained=str(model_dir), dtype="float32", batch_size=16, device="cpu")
    return simple_evaluate(
        model=lm,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(tasks)),
        log_samples=True,
        apply_chat_template=True,
        gen_kwargs="max_gen_toks=32",
    )


def drawn(document: dict) -> set[int]:
    """Indices of the instructions whose check lm-eval draws at random: letter_frequency with
    a "letter" outside a-z, for which lm-eval counts a random ASCII letter instead (see
    ``assay.scoring.ifeval``). Its verdict there depends on its run's random state."""
    return {
        index
        for index, (name, kwargs) in enumerate(
            zip(document["instruction_id_list"], document["kwargs"], strict=True)
        )
        if name == "keywords:letter_frequency"
        and not ("a" <= str((kwargs or {}).get("letter") or "").lower() <= "z")
    }


def test_every_prompt_and_the_aggregates_match_lm_eval(lm_eval_run: dict) -> None:
    from lm_eval.api.metrics import mean
    from lm_eval.tasks.ifeval.utils import agg_inst_level_acc

    samples = lm_eval_run["samples"][TASK]
    data = get_scenario("ifeval", data_files={"test": str(FIXTURE)}).load()
    by_key = {i.id: i for i in data.instances}
    assert sorted(str(s["doc"]["key"]) for s in samples) == sorted(by_key)  # all 69 prompts
    # lm-eval's reported aggregates are its aggregation functions over its samples.
    results = lm_eval_run["results"][TASK]
    for metric in METRICS:
        aggregate = agg_inst_level_acc if metric.startswith("inst") else mean
        assert results[f"{metric},none"] == aggregate([s[metric] for s in samples])

    kept, outputs, random_draws = [], [], {}
    for sample in samples:
        instance = by_key[str(sample["doc"]["key"])]
        (answer,) = sample["filtered_resps"]
        ours = follows(instance, answer)
        skip = drawn(sample["doc"])
        if skip:
            random_draws[instance.id] = skip
        # Per instruction, strict and loose, wherever lm-eval's verdict is not a draw.
        for metric in ("inst_level_strict_acc", "inst_level_loose_acc"):
            for index, verdict in enumerate(sample[metric]):
                if index not in skip:
                    assert ours[metric][index] == verdict, (instance.id, metric, index, answer)
        if skip:
            continue
        for metric in ("prompt_level_strict_acc", "prompt_level_loose_acc"):
            assert ours[metric] == sample[metric], (instance.id, metric, answer)
        kept.append(sample)
        request = Request(instance.id, RequestKind.GENERATE, "p", method="generation")
        outputs.append(ModelOutput(request, Completion(text=answer)))
    # IFEval has two such rows; both are in the fixture.
    assert random_draws == {"1122": {1}, "1129": {0}}

    # The aggregates over the other 67 prompts: assay's scorecard against lm-eval's own
    # aggregation of its own per-prompt results.
    instances = [by_key[str(s["doc"]["key"])] for s in kept]
    scores = score_partition(instances, outputs, scorer=EntryScorer.named("ifeval"))
    card = {r.metric: r for r in scores.card if not r.group and not r.perturbation}
    for metric in METRICS:
        aggregate = agg_inst_level_acc if metric.startswith("inst") else mean
        assert card[metric].mean == aggregate([s[metric] for s in kept]), metric
        assert card[metric].count == len(kept) == 67
    # The answers are not all alike: some instructions are followed and some not.
    inst = [v for s in kept for v in s["inst_level_loose_acc"]]
    assert any(inst) and not all(inst)
    assert not all(s["prompt_level_strict_acc"] for s in kept)
