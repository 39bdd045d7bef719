"""Sequential promotion decisions: requests spent and wrong verdicts, against the fixed-size rule.

Workload (simulated, seeded): a suite of 8 scenarios x 500 instances; per instance the
candidate's and the incumbent's binary scores, paired. Besides the true difference
``delta = P(only the candidate right) - P(only the incumbent right)`` the two disagree on a
background share of instances (``--background``, default 5% each way, so 10% disagreement at
``delta = 0``, plus ``|delta|``). Every scenario has the criterion "non-inferior within margin
0.05": the differences ``d_i`` in {-1, 0, 1} against the threshold ``-0.05``.

- **sequential**: instances run in chunks (25 by default) in every scenario still open; after
  each chunk ``assay.stats`` anytime-valid p-values of every scenario go through Holm over the
  16 one-sided tests (``verdicts_from_pvalues``, what ``sequential_verdicts`` does). A
  scenario whose criterion is decided stops; the decision stops at the first BELOW (refuse)
  or when all are ABOVE (approve); a suite run to its end undecided makes no verdict.
- **reference (fixed size)**: the full suite, then per scenario the one-sided
  normal-approximation (z) tests of ``H0: d <= -margin`` and ``H0: d >= -margin`` on the 500
  differences, Holm over the same 16: approve / refuse / undecided alike.

Wrong verdict: approve when ``delta < -margin``, refuse when ``delta > -margin``, either at the
boundary ``delta = -margin``. Fraction of requests: instances evaluated over 8 x 500.
Also printed: chunk size (10, 25, 100) and scenario size (250 to 2,000 instances) at
``delta = -2 x margin``, and the cost of one
``sequential_test`` on 5,000 observations next to ``paired_bootstrap`` (10,000 resamples) of
the same data, median of 3 with the load average.

Usage: python benchmarks/bench_sequential.py [--replicates R] [--background B] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.stats

from assay.stats import (
    ABOVE,
    BELOW,
    UNDECIDED,
    paired_bootstrap,
    running_pvalues,
    sequential_test,
    verdicts_from_pvalues,
)

ALPHA = 0.05
MARGIN = 0.05
SCENARIOS = 8
INSTANCES = 500
BATCH = 500  # replicates simulated at once (bounds memory)


def simulate(
    rng: np.random.Generator,
    replicates: int,
    delta: float,
    background: float,
    instances: int = INSTANCES,
):
    """Paired differences (replicates, scenarios, instances) in {-1, 0, 1} with mean delta."""
    p10 = background + max(delta, 0.0)
    p01 = background + max(-delta, 0.0)
    u = rng.random((replicates, SCENARIOS, instances))
    return np.where(u < p10, 1.0, np.where(u < p10 + p01, -1.0, 0.0))


def sequential_decisions(d: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Verdict ('approve' / 'refuse' / 'none') and fraction of requests per replicate."""
    p_above, p_below = running_pvalues(d, -MARGIN, lower=-1.0, upper=1.0)
    reps, instances = d.shape[0], d.shape[2]
    looks = [*list(range(chunk, instances, chunk)), instances]
    decided = np.full((reps, SCENARIOS), UNDECIDED, dtype="<U9")
    used = np.zeros((reps, SCENARIOS), dtype=np.int64)
    cur_above = np.ones((reps, SCENARIOS))
    cur_below = np.ones((reps, SCENARIOS))
    done = np.zeros(reps, dtype=bool)
    verdict = np.full(reps, "none", dtype="<U7")
    for look in looks:
        active = (decided == UNDECIDED) & ~done[:, None]
        used = np.where(active, look, used)
        # Decided scenarios stopped: their p-values stay as they were when they stopped.
        cur_above = np.where(active, p_above[:, :, look - 1], cur_above)
        cur_below = np.where(active, p_below[:, :, look - 1], cur_below)
        now = verdicts_from_pvalues(cur_above, cur_below, ALPHA)
        decided = np.where(active & (now != UNDECIDED), now, decided)
        refuse = ~done & (decided == BELOW).any(axis=1)
        approve = ~done & ~refuse & (decided == ABOVE).all(axis=1)
        verdict[refuse] = "refuse"
        verdict[approve] = "approve"
        done |= refuse | approve
    return verdict, used.sum(axis=1) / (SCENARIOS * instances)


def fixed_decisions(d: np.ndarray) -> np.ndarray:
    """The fixed-size reference: one-sided z tests on all the differences, Holm over 16."""
    mean = d.mean(axis=2)
    se = d.std(axis=2, ddof=1) / np.sqrt(d.shape[2])
    z = (mean + MARGIN) / np.maximum(se, 1e-12)
    verdicts = verdicts_from_pvalues(scipy.stats.norm.sf(z), scipy.stats.norm.cdf(z), ALPHA)
    refuse = (verdicts == BELOW).any(axis=1)
    approve = ~refuse & (verdicts == ABOVE).all(axis=1)
    return np.where(refuse, "refuse", np.where(approve, "approve", "none"))


def wrong(verdict: np.ndarray, delta: float) -> np.ndarray:
    if np.isclose(delta, -MARGIN):
        return verdict != "none"
    return verdict == ("approve" if delta < -MARGIN else "refuse")


def run(
    delta: float,
    chunk: int,
    replicates: int,
    background: float,
    seed: int,
    instances: int = INSTANCES,
) -> dict:
    rng = np.random.default_rng([seed, round(delta * 1000) + 1000, chunk, instances])
    seq_v, seq_f, fix_v = [], [], []
    batch = max(1, BATCH * INSTANCES // instances)  # bounds memory
    for start in range(0, replicates, batch):
        d = simulate(rng, min(batch, replicates - start), delta, background, instances)
        v, f = sequential_decisions(d, chunk)
        seq_v.append(v)
        seq_f.append(f)
        fix_v.append(fixed_decisions(d))
    seq_v, seq_f, fix_v = np.concatenate(seq_v), np.concatenate(seq_f), np.concatenate(fix_v)
    return {
        "seq": seq_v,
        "frac": seq_f,
        "fixed": fix_v,
        "seq_wrong": int(wrong(seq_v, delta).sum()),
        "fixed_wrong": int(wrong(fix_v, delta).sum()),
    }


def rates(v: np.ndarray) -> str:
    return " ".join(f"{np.mean(v == k):6.1%}" for k in ("approve", "refuse", "none"))


def cp_high(k: int, n: int) -> float:
    return scipy.stats.binomtest(k, n).proportion_ci(method="exact").high


def cost(reps: int = 3) -> None:
    rng = np.random.default_rng(7)
    d = simulate(rng, 2, -MARGIN, 0.05).ravel()[:5000]
    a = (d > 0).astype(np.float64)  # binary scores of two models with these differences
    b = (d < 0).astype(np.float64)
    times: dict[str, list[float]] = {"sequential_test": [], "paired_bootstrap": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        sequential_test(d, -MARGIN, lower=-1.0, upper=1.0, alpha=ALPHA)
        times["sequential_test"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        paired_bootstrap(a, b, seed=0)
        times["paired_bootstrap"].append(time.perf_counter() - t0)
    seq, boot = (float(np.median(times[k])) for k in ("sequential_test", "paired_bootstrap"))
    print(
        f"\ncost on {d.size} observations (median of {reps}, load {os.getloadavg()[0]:.2f}): "
        f"sequential_test {seq * 1000:.0f} ms (p-values + interval after each of them), "
        f"paired_bootstrap (10,000 resamples) {boot * 1000:.0f} ms: ratio {seq / boot:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--background", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=28)
    args = parser.parse_args()
    n, bg = args.replicates, args.background
    started = time.perf_counter()
    print(
        f"{SCENARIOS} scenarios x {INSTANCES} instances, margin {MARGIN}, alpha {ALPHA}, "
        f"background disagreement {bg:.0%} each way, {n} simulated decisions per row; "
        "reference: fixed-size one-sided z tests + Holm on the full suite\n"
    )
    header = (
        f"{'delta':>8} {'chunk':>5} | {'requests':>8} {'approve refuse   none':>21} {'wrong':>6}"
        f" {'(CP hi)':>7} | {'fixed: approve refuse   none':>28} {'wrong':>6}"
    )
    print(header)
    print("-" * len(header))
    lines = []
    for mult in (0, -1, -2, -4, 1):
        delta = mult * MARGIN
        r = run(delta, 25, n, bg, args.seed)
        print(
            f"{mult:+d}xmargin {25:>5} | {r['frac'].mean():8.1%} {rates(r['seq'])} "
            f"{r['seq_wrong'] / n:6.2%} {cp_high(r['seq_wrong'], n):7.2%} | "
            f"{'':7}{rates(r['fixed'])} {r['fixed_wrong'] / n:6.2%}",
            flush=True,
        )
        lines.append(
            f"delta = {mult:+d} x margin: fraction of requests: {r['frac'].mean():.0%} of the "
            f"full suite (median {np.median(r['frac']):.0%}); wrong verdicts "
            f"{r['seq_wrong'] / n:.2%} sequential vs {r['fixed_wrong'] / n:.2%} fixed-size"
        )
    print()
    print("\n".join(lines))
    print("\nchunk size at delta = -2 x margin:")
    for chunk in (10, 25, 100):
        r = run(-2 * MARGIN, chunk, n, bg, args.seed)
        print(
            f"  chunk {chunk:>3}: fraction of requests {r['frac'].mean():.0%} of the full suite, "
            f"refuse {np.mean(r['seq'] == 'refuse'):.1%}, wrong {r['seq_wrong'] / n:.2%}"
        )
    print("\nscenario size at delta = -2 x margin (chunk 25): the stop comes after about as many")
    print("instances whatever the size, so the fraction falls as the scenarios grow:")
    for instances in (250, 500, 1000, 2000):
        r = run(-2 * MARGIN, 25, n // 2, bg, args.seed, instances)
        refused, fixed = np.mean(r["seq"] == "refuse"), np.mean(r["fixed"] == "refuse")
        print(
            f"  {SCENARIOS} x {instances:>4} instances: fraction of requests "
            f"{r['frac'].mean():.0%} of the full suite, refuse {refused:.1%} (fixed-size "
            f"{fixed:.1%}), wrong {r['seq_wrong'] / (n // 2):.2%}"
        )
    cost()
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
