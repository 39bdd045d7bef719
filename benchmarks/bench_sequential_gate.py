"""A promotion decision with and without sequential evaluation (``promotion.sequential``): wall
time and model requests, on the demo's versions of the bundled model.

The incumbent is the demo's v1 (raw prompt), evaluated in full once beforehand; the candidate
is the demo's v2 (the model's chat template), and the reverse decision is timed too. Each arm
makes the calls the pipeline makes for the candidate, at library level, with a fresh request
cache (so every request reaches the model):

- **full**: ``run_partition`` on every scenario (what ``model_outputs`` runs), scoring with
  ``SuiteScorer`` (what the scores asset runs), then ``judge_promotion`` (the sensor);
- **sequential**: ``run_sequential_evaluation``: chunk by chunk, scoring each chunk
  with ``SuiteScorer``, driven by ``evaluate_sequentially`` (what ``model_outputs`` runs on a
  tagged run), then the stored partial tables are scored again and judged with
  ``judge_sequential`` (the scores asset and the sensor).

Client loading is left out of both (one client per arm, built before the clock starts).
Prints, per decision and arm, the median wall time of ``--rounds`` rounds, the requests that
reached the model, the verdict, and the ratios, with the load average before and after.

    .venv/bin/python benchmarks/bench_sequential_gate.py [--max-instances 60] [--chunk 10]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assay.compare.decision import judge_promotion  # noqa: E402
from assay.compare.sequential import (  # noqa: E402
    judge_sequential,
    run_sequential_evaluation,
)
from assay.core.records import Instance  # noqa: E402
from assay.evaluate.partition import run_partition  # noqa: E402
from assay.evaluate.sequential import (  # noqa: E402
    mark_extent,
    outputs_table,
)
from assay.evaluate.suite import load_suite  # noqa: E402
from assay.registry import Registry  # noqa: E402
from assay.registry.resolved import resolve_version  # noqa: E402
from assay.scoring.partition import SuiteScorer  # noqa: E402
from assay.storage.contract import (  # noqa: E402
    INSTANCE_SCORES,
    METRIC_TABLES,
    MODEL_OUTPUTS,
    SCENARIO_INSTANCES,
    evaluation_partition,
)
from assay.storage.parquet import ParquetStore  # noqa: E402
from resources import ModelsResource  # noqa: E402

SCENARIOS = {
    "arithmetic": (
        "scenario: arithmetic_qa\n    args: {n_test: 150, n_train: 20}\n"
        "    adapter: {method: generation, variant: 3-shot, num_train: 3, max_tokens: 6, "
        'stop: ["\\n"]}\n    primary_metric: exact_match'
    ),
    "facts-mc": (
        "scenario: facts_mc\n    adapter: {method: multiple_choice_separate, "
        "variant: zero-shot}\n    primary_metric: acc"
    ),
}


def _suite(path: Path, max_instances: int, chunk: int, sequential: bool) -> Path:
    entries = "".join(
        f"  {key}:\n    {body}\n    max_instances: {max_instances}\n"
        for key, body in SCENARIOS.items()
    )
    block = f"  sequential: {{chunk: {chunk}, alpha_share: 0.5}}\n" if sequential else ""
    path.write_text(f"scenarios:\n{entries}promotion:\n  margin: 0.05\n{block}")
    return path


class Bench:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root, self.args = root, args
        self.full_suite = load_suite(
            _suite(root / "full.yaml", args.max_instances, args.chunk, False)
        )
        self.seq_suite = load_suite(_suite(root / "seq.yaml", args.max_instances, args.chunk, True))
        self.reg = Registry.open(f"sqlite:///{root / 'registry.db'}")
        self.reg.create_model("m")
        source = "bundled:smollm2-135m-instruct"
        self.keys = [
            self.reg.create_version("m", source, serving={"chat_template": chat}).key
            for chat in (False, True)
        ]
        self.cache_dir = str(Path(args.model_cache_dir).resolve())
        self.specs: dict[str, object] = {}
        self.store = ParquetStore(str(root / "incumbents"))
        for key in self.full_suite.keys:
            data = self.full_suite[key].build().load()
            self.store.write(
                SCENARIO_INSTANCES, {"scenario": key}, Instance.to_table(data.instances)
            )
        self.instances = {
            k: self.store.read(SCENARIO_INSTANCES, {"scenario": k}) for k in self.full_suite.keys
        }

    def models(self, name: str) -> ModelsResource:
        return ModelsResource(
            cache_dir=self.cache_dir, request_cache_url=f"sqlite:///{self.root / name}.db"
        )

    def spec(self, key: str):
        if key not in self.specs:
            models = self.models("specs")
            self.specs[key] = resolve_version(
                self.reg.get_version(key), models.artifact_digest
            ).spec
        return self.specs[key]

    def full(self, store: ParquetStore, key: str, models: ModelsResource) -> int:
        """The candidate's full evaluation and scoring; returns requests that reached the model."""
        client = models.client(self.spec(key))
        scorer = SuiteScorer(self.full_suite, lambda: self.reg, models.client)
        paid = 0
        for scenario in self.full_suite.keys:
            done = run_partition(
                client,
                self.full_suite[scenario],
                self.instances[scenario],
                store=store,
                label=f"{key} × {scenario}",
                log=lambda _: None,
                warn=lambda _: None,
            )
            paid += len(done.run.outputs) - done.run.n_cached
            scored = scorer.score(key, scenario, self.instances[scenario], done.table, seed_key=key)
            where = evaluation_partition(key, scenario)
            store.write(MODEL_OUTPUTS, where, done.table)
            store.write(INSTANCE_SCORES, where, scored.stats_table)
            store.write(METRIC_TABLES, where, scored.card_table)
        return paid

    def sequential(
        self, store: ParquetStore, key: str, incumbent: str, models: ModelsResource
    ) -> tuple[int, object]:
        client = models.client(self.spec(key))
        suite = self.seq_suite
        scorer = SuiteScorer(suite, lambda: self.reg, models.client)
        evaluated = run_sequential_evaluation(
            suite, key, incumbent, self.instances, client, scorer, store, log=lambda _: None
        )
        parts, replayed = evaluated.parts, evaluated.replayed
        for scenario, part in parts.items():  # the scores asset, then the sensor's judgment
            table = outputs_table(part, None)
            scored = scorer.score(key, scenario, self.instances[scenario], table, seed_key=key)
            card = scored.card_table
            if part.evaluated < part.total:
                stop = replayed.scenarios[scenario].reason
                card = mark_extent(card, part.evaluated, part.total, stop)
            where = evaluation_partition(key, scenario)
            store.write(MODEL_OUTPUTS, where, table)
            store.write(INSTANCE_SCORES, where, scored.stats_table)
            store.write(METRIC_TABLES, where, card)
        paid = sum(
            len(p.outputs) - sum(o.completion.cached for o in p.outputs) for p in parts.values()
        )
        return paid, judge_sequential(store, suite, key, incumbent).decision


def _copy_incumbent(source: ParquetStore, target: ParquetStore, key: str, suite) -> None:
    for scenario in suite.keys:
        where = evaluation_partition(key, scenario)
        for asset in (MODEL_OUTPUTS, INSTANCE_SCORES, METRIC_TABLES):
            target.write(asset, where, source.read(asset, where))
        target.write(
            SCENARIO_INSTANCES,
            {"scenario": scenario},
            source.read(SCENARIO_INSTANCES, {"scenario": scenario}),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-instances", type=int, default=60)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-cache-dir", default=".assay/test-cache")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench = Bench(root, args)
        v1, v2 = bench.keys
        # Both versions evaluated in full once: each is the other's incumbent below.
        for key in (v1, v2):
            bench.full(bench.store, key, bench.models("setup"))
        figures: dict[tuple[str, str], list[tuple[float, int, bool]]] = {}
        for round_ in range(args.rounds):
            for cand, inc in ((v2, v1), (v1, v2)):
                for arm in ("full", "sequential"):
                    store = ParquetStore(str(root / f"r{round_}-{arm}-{cand}"))
                    _copy_incumbent(bench.store, store, inc, bench.full_suite)
                    models = bench.models(f"cache-r{round_}-{arm}-{cand}")  # fresh: all paid
                    models.client(bench.spec(cand))  # load the model before the clock
                    start = time.perf_counter()
                    if arm == "full":
                        paid = bench.full(store, cand, models)
                        approved = judge_promotion(store, bench.full_suite, cand, inc).approved
                    else:
                        paid, decision = bench.sequential(store, cand, inc, models)
                        approved = decision.approved
                    wall = time.perf_counter() - start
                    figures.setdefault((f"{cand} vs {inc}", arm), []).append((wall, paid, approved))
    load_after = os.getloadavg()
    total = args.max_instances * len(SCENARIOS)
    print(
        f"promotion decision on {len(SCENARIOS)} scenarios × {args.max_instances} instances "
        f"({total} instances), chunk {args.chunk}, median of {args.rounds} rounds, bundled "
        f"SmolLM2-135M on CPU; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    for decision in dict.fromkeys(d for d, _ in figures):
        full = figures[(decision, "full")]
        seq = figures[(decision, "sequential")]
        f_wall = statistics.median(w for w, _, _ in full)
        s_wall = statistics.median(w for w, _, _ in seq)
        f_paid, s_paid = full[0][1], seq[0][1]
        verdict = {True: "approved", False: "refused"}
        print(
            f"  {decision}: full {f_wall:.1f} s, {f_paid} requests ({verdict[full[0][2]]}); "
            f"sequential {s_wall:.1f} s, {s_paid} requests ({verdict[seq[0][2]]}); "
            f"time ratio {s_wall / f_wall:.2f}, request ratio {s_paid / max(f_paid, 1):.2f}"
        )


if __name__ == "__main__":
    main()
