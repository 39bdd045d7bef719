"""The results explorer at scale: 50 versions × 20 scenarios × 1,000 instances.

Synthetic multiple-choice outputs (one request per instance, four choices with
log-probabilities) and their scores are written straight as the pipeline's tables
(``model_outputs``, ``instance_scores``, ``metric_tables``), so the figures measure the
explorer, not the scoring. Prints the build time, the size on disk (by folder), and the
leaderboard's load time in headless Chromium, each against the same measurement on a
small store (3 versions × 2 scenarios × 24 instances) taken in this run. Then the same site
is rebuilt: with nothing changed, with one more version evaluated that leads the board (the
store holds it from the start; the first builds leave it off the board), and with a version
from the middle of the board coming back after a build without it. Each rebuild prints the
pages rendered and kept. ``--source queried`` builds from ``ExplorerData.of_day`` (results
queried as of the day) instead of tables held in memory; ``--no-browser`` skips Chromium.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_explorer.py [--versions 50 ...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from assay.core.records import OUTPUT_SCHEMA, Instance, InstanceStat, Reference
from assay.registry import Registry
from assay.report import ExplorerData, build_site, directory_writer
from assay.report.sample import board_of, write_sample
from assay.scoring.summary import SCORECARD_SCHEMA
from assay.storage.parquet import ParquetStore

MOVE = "benchmark history: the champion moves every ten versions"


class _Clock:
    now = datetime(2026, 10, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when


def write_instances(
    store: ParquetStore, scenarios: list[str], ids: list[str], gold: dict[str, np.ndarray]
) -> None:
    """Each scenario's instances: four options, the ``gold`` one right, two groups."""
    for s in scenarios:
        instances = [
            Instance(
                iid,
                f"Question {iid} of {s}: pick the right option.",
                tuple(Reference(f"option {k}", k == gold[s][i]) for k in range(4)),
                groups={"group": "a" if i % 2 else "b"},
            )
            for i, iid in enumerate(ids)
        ]
        store.write("scenario_instances", {"scenario": s}, Instance.to_table(instances))


def write_version(
    store: ParquetStore,
    version: str,
    scenarios: list[str],
    ids: list[str],
    gold: dict[str, np.ndarray],
    skill: float,
    rng: np.random.Generator,
    v: int,
) -> None:
    """One version's ``model_outputs``, ``instance_scores`` and ``metric_tables`` on every
    scenario: each instance right with probability ``skill`` (``v`` names its requests)."""
    n_instances = len(ids)
    for s in scenarios:
        right = rng.random(n_instances) < skill
        logits = rng.normal(0, 0.5, (n_instances, 4))
        chosen = np.where(right, gold[s], (gold[s] + 1) % 4)
        logits[np.arange(n_instances), chosen] += 1.5
        logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        probs = np.exp(logprobs[np.arange(n_instances), chosen])
        latency = 0.05 + rng.exponential(0.05, n_instances)
        outputs = pa.table(
            {
                "instance_id": ids,
                "request_digest": [f"d{v}-{i}" for i in range(n_instances)],
                "kind": ["loglikelihood"] * n_instances,
                "template_id": ["mc@v1"] * n_instances,
                "trial": [0] * n_instances,
                "perturbation": [""] * n_instances,
                "method": ["multiple_choice_separate"] * n_instances,
                "part": [""] * n_instances,
                "truncated": [False] * n_instances,
                "prompt": [f"Answer.\nQuestion {i} of {s}\nAnswer:" for i in ids],
                "prompt_digest": [f"p{i}" for i in range(n_instances)],
                "text": [""] * n_instances,
                "prompt_tokens": [12] * n_instances,
                "completion_tokens": [0] * n_instances,
                "token_logprobs": [[] for _ in ids],
                "choices": [
                    [
                        {
                            "text": f"option {k}",
                            "logprob": float(logprobs[i, k]),
                            "n_tokens": 2,
                            "n_chars": 8,
                            "n_bytes": 8,
                            "is_greedy": False,
                        }
                        for k in range(4)
                    ]
                    for i in range(n_instances)
                ],
                "latency_s": latency,
                "batch_size": [8] * n_instances,
                "cached": [False] * n_instances,
                "error": [None] * n_instances,
                "prompt_templates": [[] for _ in ids],
                "temperature": [0.0] * n_instances,
                "top_p": [1.0] * n_instances,
                "seed": [0] * n_instances,
                "sample": [0] * n_instances,
            },
            schema=OUTPUT_SCHEMA,
        )
        acc = right.astype(float)
        n = n_instances
        stats = pa.table(
            {
                "instance_id": ids * 3,
                "metric": ["acc"] * n + ["chosen_prob"] * n + ["acc"] * n,
                "value": np.concatenate([acc, probs, acc]),
                "family": ["accuracy"] * n + ["calibration"] * n + ["accuracy"] * n,
                "perturbation": [""] * (3 * n),
                "trial": [0] * (3 * n),
                "template_id": ["mc@v1"] * (3 * n),
                "group": [""] * (2 * n) + [f"group={'a' if i % 2 else 'b'}" for i in range(n)],
                "note": [""] * (3 * n),
            },
            schema=InstanceStat.SCHEMA,
        )
        half = acc.reshape(-1, 2) if n % 2 == 0 else acc[:-1].reshape(-1, 2)

        def row(metric, family, group, mean, low, high, reason="", n=n):
            return {
                "metric": metric,
                "family": family,
                "group": group,
                "perturbation": "",
                "mean": mean,
                "count": n,
                "ci_low": low,
                "ci_high": high,
                "reason": reason,
            }

        se = float(np.sqrt(acc.mean() * (1 - acc.mean()) / n))
        card = [
            row("acc", "accuracy", "", acc.mean(), acc.mean() - 2 * se, acc.mean() + 2 * se),
            row("acc", "accuracy", "group=b", half[:, 0].mean(), np.nan, np.nan),
            row("acc", "accuracy", "group=a", half[:, 1].mean(), np.nan, np.nan),
            row("chosen_prob", "calibration", "", probs.mean(), np.nan, np.nan),
            row("latency_s", "efficiency", "", latency.mean(), np.nan, np.nan),
            row("toxicity", "toxicity", "", np.nan, np.nan, np.nan, "no toxicity scorer"),
            row("robustness_worst_case", "robustness", "", np.nan, np.nan, np.nan, "none"),
        ]
        where = {"model_version": version, "scenario": s}
        store.write("model_outputs", where, outputs)
        store.write("instance_scores", where, stats)
        store.write("metric_tables", where, pa.Table.from_pylist(card, SCORECARD_SCHEMA))


def _synthetic(
    root: Path, n_versions: int, n_scenarios: int, n_instances: int, queried: bool = False
) -> tuple[ExplorerData, ExplorerData, ExplorerData]:
    """The store with ``n_versions + 1`` versions, and what the explorer is built from
    without the newest version, with it, and with it but without one in the middle of the
    board (held tables, or with ``queried`` the results queried as of the day)."""
    n_versions += 1
    clock = _Clock()
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}", clock=clock)
    # History copies stamped by the registry's clock: the store as of a board's day holds
    # what had been written by then (what ``ExplorerData.of_day`` queries).
    store = ParquetStore(str(root / "storage"), clock=clock)
    registry.create_model("bench")
    scenarios = [f"scenario-{s:02d}" for s in range(n_scenarios)]
    ids = [f"i{i:05d}" for i in range(n_instances)]
    rng = np.random.default_rng(0)
    gold = {s: rng.integers(0, 4, n_instances) for s in scenarios}
    write_instances(store, scenarios, ids, gold)
    versions = []
    for v in range(n_versions):
        clock.set(datetime(2026, 10, 1, tzinfo=UTC) + timedelta(days=v // 5))
        version = registry.create_version("bench", "bundled:smollm2-135m-instruct").key
        versions.append(version)
        if v % 10 == 0:
            registry.set_alias("bench", "champion", v + 1, force=True, reason=MOVE)
        write_version(store, version, scenarios, ids, gold, 0.3 + 0.6 * v / n_versions, rng, v)
    cards, scores = store.read_all("metric_tables"), store.read_all("instance_scores")
    primary = dict.fromkeys(scenarios, "acc")
    days = sorted({f"{e.ts:%Y-%m-%d}" for e in registry.events()})
    for day in days[:-1]:
        registered = {
            v.key for v in registry.versions(as_of=datetime.fromisoformat(day).replace(tzinfo=UTC))
        }
        if len(registered) >= 2:
            board = board_of(cards, scores, sorted(registered), primary, day, n_resamples=100)
            store.write("rankings", {"day": day}, board.to_table())
    day = days[-1]
    board = board_of(cards, scores, versions, primary, day, n_resamples=200)
    store.write("rankings", {"day": day}, board.to_table())
    # The same day's board without the newest version: the site before it was evaluated.
    before = board_of(cards, scores, versions[:-1], primary, day, n_resamples=200)
    # The board without a version in its middle: that version arriving is not a new leader.
    middle = [r.model_version for r in board.rows][len(versions) // 2]
    gap = board_of(
        cards, scores, [v for v in versions if v != middle], primary, day, n_resamples=200
    )
    if queried:
        data = ExplorerData.of_day(store, registry, board, day)
        registry.close()
    else:
        data = _explorer_data(day, board, cards, scores, store, registry)
    return replace(data, board=before), data, replace(data, board=gap)


def _small(root: Path) -> ExplorerData:
    clock = _Clock()
    registry = Registry.open(f"sqlite:///{root / 'registry.db'}", clock=clock)
    store = ParquetStore(str(root / "storage"))
    sample = write_sample(store, registry, clock=clock.set, n_versions=3, n_instances=24)
    cards, scores = store.read_all("metric_tables"), store.read_all("instance_scores")
    board = board_of(cards, scores, sample.versions, sample.primary_metrics, sample.days[-1])
    return _explorer_data(sample.days[-1], board, cards, scores, store, registry)


def _explorer_data(day, board, cards, scores, store: ParquetStore, registry: Registry):
    """What the site is built from, read from the store and the registry (then closed)."""
    try:
        return ExplorerData(
            day,
            board,
            cards,
            scores,
            store.read_all("rankings"),
            registry.events(),
            registry.versions(),
            store,
        )
    finally:
        registry.close()


def _size(site: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for path in site.rglob("*"):
        if path.is_file():
            top = (
                path.relative_to(site).parts[0]
                if len(path.relative_to(site).parts) > 1
                else "pages"
            )
            sizes[top] = sizes.get(top, 0) + path.stat().st_size
    return sizes


def _load_time(site: Path, repeats: int = 3) -> float:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        for _ in range(repeats):
            start = time.perf_counter()
            page.goto((site / "index.html").as_uri())
            page.wait_for_selector("#primary-chart .main-svg")
            page.wait_for_function("document.getElementById('shown-count').textContent !== ''")
            times.append(time.perf_counter() - start)
        browser.close()
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--scenarios", type=int, default=20)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument(
        "--source",
        choices=("held", "queried"),
        default="held",
        help="what the explorer reads: tables held in memory, or queried as of the day "
        "(ExplorerData.of_day)",
    )
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium load")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes for partitions (default: library's)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "small").mkdir()
        (root / "large").mkdir()
        small = _small(root / "small")
        start = time.perf_counter()
        build_site(
            small,
            directory_writer(root / "small/site"),
            generated_at=datetime.now(UTC),
            workers=args.workers,
        )
        small_build = time.perf_counter() - start
        start = time.perf_counter()
        large, plus_one, gap = _synthetic(
            root / "large", args.versions, args.scenarios, args.instances, args.source == "queried"
        )
        generate = time.perf_counter() - start

        def build(data: ExplorerData):
            start = time.perf_counter()
            summary = build_site(
                data,
                directory_writer(root / "large/site"),
                generated_at=datetime.now(UTC),
                workers=args.workers,
            )
            return time.perf_counter() - start, summary

        large_build, summary = build(large)
        small_size, large_size = _size(root / "small/site"), _size(root / "large/site")
        if not args.no_browser:
            small_load = _load_time(root / "small/site")
            large_load = _load_time(root / "large/site")
        same_build, same = build(large)
        more_build, more = build(plus_one)
        build(gap)  # a version in the middle leaves the board ...
        middle_build, middle = build(plus_one)  # ... and comes back: not a new leader
        n = f"{args.versions} versions × {args.scenarios} scenarios × {args.instances} instances"
        print(f"store generated ({n}, +1 version): {generate:.1f} s (not part of the build)")
        print(
            f"build: {large_build:.1f} s for {summary.files} files, {len(summary.pages)} pages "
            f"(reference, 3 × 2 × 24: {small_build:.2f} s; ratio {large_build / small_build:.0f}×)"
        )
        print(f"source: {args.source}")
        for label, seconds, s in (
            ("rebuild, nothing changed", same_build, same),
            ("rebuild, one more version (the new leader)", more_build, more),
            ("rebuild, one more version (below the leader)", middle_build, middle),
        ):
            print(
                f"{label}: {seconds:.2f} s ({seconds / large_build:.2f}× the full build; "
                f"ratio to the reference {seconds / small_build:.0f}×): {s.written} files "
                f"written, {s.unchanged} unchanged, {len(s.deleted)} deleted; partitions "
                f"{s.partitions_built} built, {s.partitions_unchanged} unchanged; pages "
                f"{getattr(s, 'units_rendered', '?')} rendered, "
                f"{getattr(s, 'units_skipped', '?')} kept"
            )
        total, ref = sum(large_size.values()), sum(small_size.values())
        parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(large_size.items()))
        print(
            f"size on disk: {total / 1e6:.1f} MB ({parts}); reference {ref / 1e6:.1f} MB, "
            f"ratio {total / ref:.1f}×"
        )
        index = (root / "large/site/index.html").stat().st_size
        print(f"leaderboard page: {index / 1e3:.0f} kB of HTML (+ plotly.min.js, cached)")
        if not args.no_browser:
            print(
                f"leaderboard load in Chromium (median of 3, to chart drawn and filters ready): "
                f"{large_load * 1000:.0f} ms; reference {small_load * 1000:.0f} ms, "
                f"ratio {large_load / small_load:.2f}×"
            )


if __name__ == "__main__":
    main()
