"""The read side at platform scale (issue 29): a day's ``rankings`` and the results explorer
(full build, rebuild with nothing changed, rebuild after one new version that becomes the
leader and after one that does not), by the code of this tree against the code of commit
``--reference`` (default: main before the explorer work), on the same store in the same run.

For each size V versions × S scenarios × N instances a synthetic store is written through the
real writer (``ParquetStore.write``, history kept, stamped with the synthetic clock) with
``bench_explorer``'s generator (multiple-choice model outputs, instance scores and metric
tables per partition): the V versions are registered and evaluated over ``--days`` days, a
``champion`` alias moves every ten versions, and each day's ``rankings`` partition is written.
Two more versions are held back: a *non-leader* (every scenario right with probability
``--non-leader-skill``, middling) evaluated on the next day, then a *leader*
(``--leader-skill``, clearly best on every scenario) the day after; each day's rankings
partition is written as it comes.

Every figure is taken in a fresh child interpreter (``PYTHONPATH`` at the tree's code: this
tree, or the reference extracted with ``git archive``), reference and current one after the
other on the same store (taking turns going first), the tree's modules imported before its
clock starts; a child's peak resident memory is its own ``VmHWM`` (or its workers'
``ru_maxrss``, if higher). Per size and tree:

- ``rankings`` for the last day (:func:`rankings_board`, what the ``rankings`` asset calls):
  time, peak memory, and whether the two trees' boards are identical (digests);
- explorer full build into an empty folder (:func:`explorer_data` then ``build_site``, what the
  ``dashboard`` asset does): read and build time, peak memory, files, size on disk;
- the same build again, nothing changed;
- after the non-leader's day, then after the leader's: time and files written.

Then the ratios current / reference, the growth exponents (log-log least-squares slope
against V × S over the sizes, or against V alone when every size has the same S, as
``--sizes 60x10,125x10,250x10``) and the extrapolation along that slope from the largest size
to 1,000 × 100 (to 1,000 versions at the sizes' S, then), against the issue's aims. A child
that only imports and opens the registry gives the memory floor. Figures depend on the
machine's load (shared machines): compare ratios within one run, not figures across runs.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_explorer_scale.py \\
        [--sizes 60x10,125x20,250x40] [--instances 200] [--reference 3fc2a12] \\
        [--days 5] [--leader-skill 0.98] [--non-leader-skill 0.6] [--workers N] [--keep DIR]

If the explorer's inputs are built differently in this tree, adapt :func:`explorer_data` (the
current tree's construction) and leave :func:`reference_explorer_data` as the reference's.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# A child runs the code of one tree (this one, or the reference extracted by the parent).
sys.path.insert(0, os.environ.get("ASSAY_BENCH_CODE") or str(REPO))

START = datetime(2026, 10, 1, 6, tzinfo=UTC)
REFERENCE = "3fc2a12"  # main before the explorer work
TARGET = (1000, 100)
AIMS = {  # the issue's aims at 1,000 × 100 (figures, not tests)
    ("rankings", "total_s"): (60.0, "≤ 60 s"),
    ("rankings", "peak"): (2e9, "≤ 2 GB"),
    ("leader", "total_s"): (60.0, "≤ 60 s"),
    ("non_leader", "total_s"): (60.0, "≤ 60 s"),
    ("unchanged", "total_s"): (5.0, "≤ 5 s"),
}
TREES = ("reference", "current")


def _day(index: int) -> str:
    return (START + timedelta(days=index)).strftime("%Y-%m-%d")


def _scenarios(n: int) -> list[str]:
    return [f"scenario-{s:02d}" for s in range(n)]


# -- the store (parent, this tree's code) -------------------------------------------------------


class Store:
    """The synthetic store of one size, written through this tree's code; ``add`` evaluates a
    held-back version on the next day."""

    def __init__(self, root: Path, versions: int, scenarios: int, instances: int, days: int):
        sys.path.insert(0, str(REPO / "benchmarks"))
        from bench_explorer import write_instances, write_version

        from assay.registry import Registry
        from assay.storage.parquet import ParquetStore

        self._write_version = write_version
        self.root, self.days, self.scenarios = root, days, _scenarios(scenarios)
        self.url = f"sqlite:///{root / 'registry.db'}"
        self.now = START
        self.registry = Registry.open(self.url, clock=lambda: self.now)
        self.store = ParquetStore(str(root / "storage"), clock=lambda: self.now)
        self.ids = [f"i{i:05d}" for i in range(instances)]
        self.rng = np.random.default_rng(0)
        self.gold = {s: self.rng.integers(0, 4, instances) for s in self.scenarios}
        self.n = self.added = 0
        began = time.perf_counter()
        self.registry.create_model("bench")
        write_instances(self.store, self.scenarios, self.ids, self.gold)
        for v in range(versions):
            day = v * days // versions
            self._version(START + timedelta(days=day, seconds=v), 0.3 + 0.6 * v / versions)
            if v * days // versions != (v + 1) * days // versions:
                self._rankings(_day(day))
        self.built_s = time.perf_counter() - began

    @property
    def day(self) -> str:
        """The newest day with a rankings partition (what the dashboard builds)."""
        return _day(self.days - 1 + self.added)

    def _version(self, when: datetime, skill: float) -> str:
        self.now = when
        version = self.registry.create_version("bench", "bundled:smollm2-135m-instruct").key
        if self.n % 10 == 0:
            self.registry.set_alias(
                "bench", "champion", self.n + 1, force=True, reason="benchmark history"
            )
        self._write_version(
            self.store, version, self.scenarios, self.ids, self.gold, skill, self.rng, self.n
        )
        self.n += 1
        return version

    def _rankings(self, day: str) -> None:
        """The day's rankings partition, as the ``rankings`` asset writes it."""
        self.now = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(hours=23)
        board = rankings_board(self.store, self.registry, suite(len(self.scenarios)), day)
        self.store.write("rankings", {"day": day}, board.to_table())
        try:  # with the full board for the explorer, where this tree's rankings step keeps it
            from assay.compare.stored_boards import write_board
        except ImportError:
            return
        write_board(self.store, day, board)

    def add(self, skill: float) -> str:
        """One more version, evaluated on the day after the newest, and that day's rankings."""
        self.added += 1
        version = self._version(START + timedelta(days=self.days - 1 + self.added), skill)
        self._rankings(self.day)
        return version

    def close(self) -> None:
        self.registry.close()


# -- what each child measures (the tree's code) -------------------------------------------------


def suite(n_scenarios: int):
    """The suite the board ranks on: every scenario on its ``acc``."""
    from assay.evaluate.suite import parse_suite

    scenarios = {
        s: {"scenario": "facts_mc", "primary_metric": "acc"} for s in _scenarios(n_scenarios)
    }
    return parse_suite({"scenarios": scenarios}, "bench.yaml")


def rankings_board(store, registry, loaded_suite, day: str):
    """A day's board as the ``rankings`` asset computes it (assets/rankings.py)."""
    from assay.compare.standings import leaderboard_of_day

    board, _ = leaderboard_of_day(day, store, registry, loaded_suite)
    return board


def explorer_data(store, registry_url: str, day: str):
    """The current tree's explorer inputs for ``day``, as its assets/dashboard.py builds them:
    ``ExplorerData.of_day`` (results queried as of the day) where the tree has it, else as
    the reference does. Adapt this function (only) when the dashboard asset changes."""
    from assay.registry import Registry
    from assay.report import ExplorerData

    if not hasattr(ExplorerData, "of_day"):
        return reference_explorer_data(store, registry_url, day)
    history = store.read_all("rankings")
    # Left open, as the dashboard asset leaves it.
    opened = Registry.open(registry_url)
    return ExplorerData.of_day(store, opened, suite(_n_scenarios(store)), day, rankings=history)


def reference_explorer_data(store, registry_url: str, day: str):
    """The reference's explorer inputs for ``day``: assets/dashboard.py at 3fc2a12 (every
    metric table and instance score as of the day in memory, the board ranked on them)."""
    from assay.compare.standings import StoredResults, leaderboard_as_of
    from assay.registry import Registry
    from assay.report import ExplorerData
    from assay.scoring.metrics.directions import lower_is_better_in

    history = store.read_all("rankings")
    results = StoredResults.of_day(store, day)
    opened = Registry.open(registry_url)
    try:
        board, _ = leaderboard_as_of(day, results, opened, suite(_n_scenarios(store)))
        return ExplorerData(
            day=day,
            board=board,
            metric_tables=results.metric_tables,
            instance_scores=results.instance_scores,
            rankings=history,
            events=opened.events(),
            versions=opened.versions(),
            store=store,
            lower_is_better=lower_is_better_in(results.metric_tables),
        )
    finally:
        opened.close()


def _n_scenarios(store) -> int:
    return len(store.partitions("scenario_instances"))


def build(data, site: Path, workers: int | None):
    """``build_site`` into the tree's own site folder, as the dashboard asset writes it."""
    from assay.report import EXPLORER_DIR, build_site, store_writer
    from assay.storage.parquet import ParquetStore

    writer = store_writer(ParquetStore(str(site)), EXPLORER_DIR)
    return build_site(data, writer, generated_at=datetime.now(UTC), workers=workers)


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints its figures as JSON."""
    # The tree's modules are imported before the clock starts (a Dagster process has them).
    import assay.compare.standings
    import assay.evaluate.suite
    import assay.report
    import assay.scoring.metrics.directions
    from assay.registry import Registry
    from assay.storage.parquet import ParquetStore

    root = Path(args.root)
    url = f"sqlite:///{root / 'registry.db'}"
    store = ParquetStore(str(root / "storage"))
    out: dict = {}
    began = time.perf_counter()
    if args.child == "rankings":
        registry = Registry.open(url)
        board = rankings_board(store, registry, suite(_n_scenarios(store)), args.day)
        registry.close()
        out["digest"] = hashlib.sha256(repr(board).encode()).hexdigest()
        out["top"] = board.rows[0].model_version
    elif args.child == "build":
        # A reference without ``ExplorerData.of_day`` reads as it did (explorer_data falls
        # back); a newer one reads as this tree, so the two differ only in the build.
        data = explorer_data(store, url, args.day)
        out["read_s"] = time.perf_counter() - began
        summary = build(data, Path(args.site), args.workers)
        out["summary"] = {
            f.name: getattr(summary, f.name)
            for f in dataclasses.fields(summary)
            if isinstance(getattr(summary, f.name), int | float)
        }
        out["summary"]["deleted"] = len(summary.deleted)
    else:  # the floor: imports and the registry, nothing read
        Registry.open(url).close()
    out["total_s"] = time.perf_counter() - began
    out["peak"] = peak_memory()
    out["code"] = str(Path(assay.report.__file__).resolve().parents[2])
    print(json.dumps(out))


def peak_memory() -> int:
    """This process's peak resident memory since its interpreter started (``VmHWM``; the
    ``ru_maxrss`` its parent sees would also count the parent's own peak, which ``exec``
    carries over), or its workers' if one of them peaked higher (``RUSAGE_CHILDREN``)."""
    status = Path("/proc/self/status").read_text()
    own = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")))
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) * 1024


def run_child(which: str, tree: str, code: Path, root: Path, day: str, site: Path, workers):
    """Runs one measurement in a fresh interpreter on ``code``; its figures and peak memory."""
    command = [sys.executable, __file__, "--child", which, "--tree", tree, "--root", str(root)]
    command += ["--day", day, "--site", str(site)]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = dict(os.environ, ASSAY_BENCH_CODE=str(code), PYTHONPATH=str(code))
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode:
        raise RuntimeError(f"{tree} {which} child failed:\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(figures["code"]) != code.resolve():
        raise RuntimeError(f"the {tree} child ran the code in {figures['code']}, not {code}")
    return figures


def _site_size(site: Path) -> tuple[int, int]:
    files = [p for p in site.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure(args, versions: int, scenarios: int, tmp: Path, codes: dict[str, Path]) -> dict:
    """Every figure of one size, for both trees."""
    root = tmp / f"{versions}x{scenarios}"
    root.mkdir()
    store = Store(root, versions, scenarios, args.instances, args.days)
    fig: dict = {"size": (versions, scenarios), "built_s": store.built_s}
    sites = {tree: root / f"site-{tree}" for tree in TREES}

    turn = iter(range(100))

    def each(which: str, key: str) -> None:
        # The trees take turns going first (the second may find the store in the page cache).
        for tree in TREES if next(turn) % 2 == 0 else TREES[::-1]:
            fig.setdefault(tree, {})[key] = run_child(
                which, tree, codes[tree], root, store.day, sites[tree], args.workers
            )

    each("floor", "floor")
    each("rankings", "rankings")
    each("build", "full")
    for tree in TREES:
        fig[tree]["full"]["files"], fig[tree]["full"]["bytes"] = _site_size(sites[tree])
    each("build", "unchanged")
    fig["non_leader_version"] = store.add(args.non_leader_skill)
    each("build", "non_leader")
    each("rankings", "rankings_non_leader")
    fig["leader_version"] = store.add(args.leader_skill)
    each("build", "leader")
    each("rankings", "rankings_leader")
    store.close()
    fig["store_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) - sum(
        sum(p.stat().st_size for p in sites[t].rglob("*") if p.is_file()) for t in TREES
    )
    return fig


def report(fig: dict, instances: int) -> None:
    (versions, scenarios), ref, cur = fig["size"], fig["reference"], fig["current"]
    same = all(
        ref[k]["digest"] == cur[k]["digest"]
        for k in ("rankings", "rankings_non_leader", "rankings_leader")
    )
    leads = (
        cur["rankings_leader"]["top"] == fig["leader_version"]
        and cur["rankings_non_leader"]["top"] != fig["non_leader_version"]
    )
    print(
        f"\n{versions} versions × {scenarios} scenarios × {instances} instances "
        f"({versions * scenarios} partitions; store {fig['store_bytes'] / 1e6:.0f} MB with "
        f"history, written in {fig['built_s']:.0f} s); rankings boards identical between the "
        f"trees: {same}; the leader leads and the non-leader does not: {leads}"
    )
    print(
        f"  {'':34} {'ref s':>8} {'cur s':>8} {'cur/ref':>8} {'ref MB':>7} {'cur MB':>7} "
        f"{'cur/ref':>8}  files written (ref / cur)"
    )
    rows = (
        ("floor (imports, registry)", "floor"),
        ("rankings, the day", "rankings"),
        ("explorer full build", "full"),
        ("rebuild, nothing changed", "unchanged"),
        ("rebuild, one new non-leader", "non_leader"),
        ("rebuild, one new leader", "leader"),
    )
    for name, key in rows:
        r, c = ref[key], cur[key]
        written = f"{r['summary']['written']} / {c['summary']['written']}" if "summary" in r else ""
        read = f" (read {r['read_s']:.1f} / {c['read_s']:.1f} s)" if "read_s" in r else ""
        print(
            f"  {name:34} {r['total_s']:8.2f} {c['total_s']:8.2f} "
            f"{c['total_s'] / r['total_s']:8.2f} {r['peak'] / 1e6:7.0f} {c['peak'] / 1e6:7.0f} "
            f"{c['peak'] / r['peak']:8.2f}  {written}{read}"
        )
    r, c = ref["full"], cur["full"]
    print(
        f"  site after the full build: reference {r['files']} files, {r['bytes'] / 1e6:.1f} MB; "
        f"current {c['files']} files, {c['bytes'] / 1e6:.1f} MB "
        f"(files {c['files'] / r['files']:.2f}×, bytes {c['bytes'] / r['bytes']:.2f}×)"
    )
    extra = sorted(set(cur["leader"]["summary"]) - {"files", "bytes", "written", "deleted"})
    for key in ("unchanged", "non_leader", "leader"):
        for tree in TREES:
            s = fig[tree][key]["summary"]
            counts = ", ".join(f"{k} {s[k]}" for k in extra if k in s)
            print(f"  {key:10} {tree:9}: deleted {s['deleted']}, {counts}")


def summary(rows: list[dict]) -> None:
    if len(rows) < 2:
        print("\n(one size: no growth exponents)")
        return
    sizes = [r["size"] for r in rows]
    # Against V × S; against V alone when the scenarios stay (or S alone when versions do).
    (v_last, s_last), (v_aim, s_aim) = sizes[-1], TARGET
    if len({s for _, s in sizes}) == 1:
        against, cells, target, s_aim = "V", [v for v, _ in sizes], v_aim, s_last
    elif len({v for v, _ in sizes}) == 1:
        against, cells, target, v_aim = "S", [s for _, s in sizes], s_aim, v_last
    else:
        against, cells, target = "V × S", [v * s for v, s in sizes], v_aim * s_aim
    print(
        f"\ngrowth exponents against {against} over {len(rows)} sizes; at {v_aim:,} × {s_aim} "
        f"(extrapolated along that slope from the largest size):"
    )
    print(f"  {'':36} {'reference':>22} {'current':>22}  aim (current)")
    for key, name in (
        ("rankings", "rankings, the day"),
        ("full", "explorer full build"),
        ("unchanged", "rebuild, nothing changed"),
        ("non_leader", "rebuild, one new non-leader"),
        ("leader", "rebuild, one new leader"),
    ):
        for what in ("total_s", "peak", "files", "bytes"):
            if what in ("files", "bytes") and key != "full":
                continue
            cols, at_current = [], 0.0
            for tree in TREES:
                if what == "peak":  # above the floor, then the floor added back
                    ys = [max(r[tree][key]["peak"] - r[tree]["floor"]["peak"], 1) for r in rows]
                else:
                    ys = [max(r[tree][key][what], 1e-6) for r in rows]
                k = slope(cells, ys)
                at = ys[-1] * (target / cells[-1]) ** k
                if what == "peak":
                    at += rows[-1][tree]["floor"]["peak"]
                cols.append(f"{k:5.2f} → {_shown(what, at):>12}")
                at_current = at
            aim = AIMS.get((key, what))
            verdict = f"{aim[1]}: {'met' if at_current <= aim[0] else 'missed'}" if aim else ""
            label = (
                f"{name}, {dict(total_s='time', peak='peak', files='files', bytes='size')[what]}"
            )
            print(f"  {label:36} {cols[0]:>22} {cols[1]:>22}  {verdict}")


def _shown(what: str, value: float) -> str:
    if what == "total_s":
        return f"{value:.1f} s" if value < 600 else f"{value / 60:.0f} min"
    if what in ("peak", "bytes"):
        return f"{value / 1e9:.2f} GB"
    return f"{value:,.0f}"


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="60x10,125x20,250x40", help="VxS,VxS,...")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--days", type=int, default=5, help="days the V versions arrive over")
    parser.add_argument("--reference", default=REFERENCE, help="git commit of today's code")
    parser.add_argument("--leader-skill", type=float, default=0.98)
    parser.add_argument("--non-leader-skill", type=float, default=0.6)
    parser.add_argument("--workers", type=int, default=None, help="build_site's workers")
    parser.add_argument("--keep", help="write the stores and sites here and keep them")
    parser.add_argument("--child", choices=["floor", "rankings", "build"])
    parser.add_argument("--tree", choices=TREES)
    parser.add_argument("--root")
    parser.add_argument("--day")
    parser.add_argument("--site")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
    if args.days < 1 or any(v < args.days or s < 1 for v, s in sizes):
        parser.error("each size needs at least --days versions and one scenario")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep) if args.keep else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        codes = {"reference": tmp / "reference", "current": REPO}
        shutil.rmtree(codes["reference"], ignore_errors=True)
        codes["reference"].mkdir()
        archive = subprocess.run(
            ["git", "archive", args.reference, "assay"], cwd=REPO, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(codes["reference"])], input=archive.stdout)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        print(
            f"reference: the code of commit {args.reference}; current: this tree ({commit}"
            f"{', uncommitted changes' if _dirty() else ''}); {os.cpu_count()} CPUs; "
            f"held-back versions' skill: non-leader {args.non_leader_skill}, leader "
            f"{args.leader_skill}; versions arrive over {args.days} days"
        )
        for versions, scenarios in sizes:
            fig = measure(args, versions, scenarios, tmp, codes)
            rows.append(fig)
            report(fig, args.instances)
    summary(rows)


def _dirty() -> bool:
    status = subprocess.run(
        ["git", "status", "--porcelain", "assay"], cwd=REPO, capture_output=True, text=True
    )
    return bool(status.stdout.strip())


if __name__ == "__main__":
    main()
