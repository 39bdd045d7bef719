"""Anytime-valid tests and confidence sequences for a bounded mean, by betting.

Sequential evaluation looks at the data after every chunk of instances and stops as soon as
the decision is clear. A fixed-sample test looked at many times loses its error guarantee; the
tests here keep it at *any* stopping time, however data-dependent.

Construction (Waudby-Smith & Ramdas 2024, "Estimating means of bounded random variables by
betting", JRSS-B 86(1)): observations ``x_i`` in ``[lower, upper]`` are rescaled to
``y_i`` in ``[0, 1]`` and ``m`` to ``mu``. A gambler who bets ``lambda_i >= 0`` on "the mean is
above ``mu``" holds the capital

    K+_t(mu) = prod_{i <= t} (1 + lambda+_i (y_i - mu)),   lambda+_i = min(lam_i, c / mu),

and the mirrored bettor ``K-_t(mu) = prod (1 - lambda-_i (y_i - mu))`` with
``lambda-_i = min(lam_i, c / (1 - mu))``. The cap ``c = 1/2`` keeps every factor at least
``1 - c > 0``. When the mean is at most ``mu`` (resp. at least) the capital is a nonnegative
supermartingale started at 1, so by Ville's inequality ``P(sup_t K_t >= 1/a) <= a``: the
running p-value ``1 / max_{s <= t} K_s`` is valid at every stopping time.

Bets (any predictable ``lambda_i >= 0`` under the caps keeps the guarantees; the choice only
moves power):

- **p-values** (``running_pvalues``, what the verdicts use): the approximate growth-rate
  adaptive bet of the paper (aGRAPA),
  ``lam_t = (muhat_{t-1} - mu) / (sigma2_{t-1} + (muhat_{t-1} - mu)^2)``, its positive part
  for the 'above' bettor and the negative part's size for the 'below' one. It approximates the
  Kelly bet ``argmax E log(1 + lam (y - mu))`` from the past, so the capital grows at nearly
  the best rate the data allow: a test rejects as soon as it can, which is what sequential
  evaluation is for. On the gate's workload (paired binary scores, 8 scenarios, margin 0.05;
  ``benchmarks/bench_sequential.py``) it stopped after about a sixth fewer requests than
  PrPl at twice the margin and decided more often.
- **confidence sequence** (``confidence_sequence``): the paper's predictable plug-in bet
  (PrPl) in its hedged capital process,
  ``lam_t = sqrt(2 log(2/alpha) / (sigma2_{t-1} t log(1 + t)))``, the paper's recommendation
  for intervals. It does not depend on ``mu`` except through the caps, so
  ``K+_t(mu)`` falls and ``K-_t(mu)`` rises with ``mu``: the sequence is an interval and a
  grid inversion of it is provably conservative.

What "the mean" is: the observations are taken as independent draws from one distribution
(the population the suite's instances stand for, as for the instance bootstrap); running the
instances in a random order is what makes the order of the scores carry no information. The
tests are about that population's mean, not the finite suite's own average.

Both use the regularized running estimates ``muhat_t = (1/2 + sum_{i<=t} y_i) / (t + 1)`` and
``sigma2_t = (1/4 + sum_{i<=t} (y_i - muhat_i)^2) / (t + 1)`` (``muhat_0 = 1/2``,
``sigma2_0 = 1/4``). Because the two use different bets, the interval may still contain the
threshold when the test has rejected (or, rarely, the reverse); the verdicts come from the
p-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ABOVE, BELOW, UNDECIDED = "above", "below", "undecided"

# Largest bet as a fraction of the distance to the bound (every factor stays >= 1 - _CAP).
# 1/2 as in the paper; on the benchmark's workload 3/4 and 0.9 stopped later and decided less
# often (they only helped at four margins, where every choice stops early).
_CAP = 0.5
# Grid points over [lower, upper] for inverting the capital process into the confidence sequence.
GRID_POINTS = 2001
# Cells of one (observations x grid points) block in the inversion (bounds memory).
_BLOCK_CELLS = 1 << 20


@dataclass(frozen=True, slots=True)
class SequentialTest:
    """Anytime-valid one-sample test of a bounded mean against ``threshold`` over observations
    taken in a fixed order (one observation per instance: the mean of its rows)."""

    threshold: float
    lower: float  # every observation lies in [lower, upper]
    upper: float
    n: int  # observations used
    mean: float  # nan when n == 0
    p_above: float  # anytime-valid p-value of H0: mean <= threshold (small: mean is above)
    p_below: float  # anytime-valid p-value of H0: mean >= threshold (small: mean is below)
    cs_low: np.ndarray  # the confidence sequence after each observation 1..n (length n),
    cs_high: np.ndarray  # at level 1 - alpha as given

    @property
    def low(self) -> float:
        """Lower end of the current confidence interval (``lower`` before any observation)."""
        return float(self.cs_low[-1]) if self.n else self.lower

    @property
    def high(self) -> float:
        """Upper end of the current confidence interval (``upper`` before any observation)."""
        return float(self.cs_high[-1]) if self.n else self.upper


def _check_bounds(lower: float, upper: float) -> None:
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise ValueError(f"lower and upper must be finite, got [{lower}, {upper}]")
    if lower >= upper:
        raise ValueError(f"lower must be below upper, got [{lower}, {upper}]")


def _check_alpha(alpha: float) -> None:
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def _rescaled(x: np.ndarray | Sequence[float], lower: float, upper: float) -> np.ndarray:
    """Validate observations (any shape, last axis = time) and map them onto [0, 1]."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError("x must be an array of observations, got a scalar")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"x[{_index(where)}] is {float(arr[where])!r}: observations must be finite"
        )
    bad = np.argwhere((arr < lower) | (arr > upper))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"x[{_index(where)}] = {float(arr[where])!r} lies outside "
            f"[lower, upper] = [{lower}, {upper}]"
        )
    return np.clip((arr - lower) / (upper - lower), 0.0, 1.0)


def _index(where: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in where)


def _threshold_mu(threshold: float, lower: float, upper: float) -> float:
    if not (lower <= threshold <= upper):
        raise ValueError(
            f"threshold {threshold!r} lies outside [lower, upper] = [{lower}, {upper}]: "
            "a mean of such observations is always on one side of it"
        )
    return (threshold - lower) / (upper - lower)


def _running_estimates(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, muhat_{t-1}, sigma2_{t-1})`` for t = 1..n: the estimates before observation t."""
    n = y.shape[-1]
    t = np.arange(1, n + 1, dtype=np.float64)
    mu_hat = (0.5 + np.cumsum(y, axis=-1)) / (t + 1)
    var_hat = (0.25 + np.cumsum((y - mu_hat) ** 2, axis=-1)) / (t + 1)
    first = (*y.shape[:-1], 1)
    mu_prev = np.concatenate([np.full(first, 0.5), mu_hat[..., :-1]], axis=-1)
    var_prev = np.concatenate([np.full(first, 0.25), var_hat[..., :-1]], axis=-1)
    return t, mu_prev, var_prev


def prpl_bets(y: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bets ``lam_t`` (before the caps) for rescaled observations ``y``.

    ``y`` has time on its last axis; ``lam_t`` uses ``y_1 .. y_{t-1}`` only.
    """
    t, _, var_prev = _running_estimates(y)
    return np.sqrt(2.0 * math.log(2.0 / alpha) / (var_prev * t * np.log1p(t)))


def agrapa_bets(y: np.ndarray, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """aGRAPA bets ``(lam_up, lam_down) >= 0`` (before the caps) against the mean ``mu``.

    ``y`` has time on its last axis; bet ``t`` uses ``y_1 .. y_{t-1}`` only.
    """
    _, mu_prev, var_prev = _running_estimates(y)
    gap = mu_prev - mu
    lam = gap / (var_prev + gap**2)
    return np.maximum(lam, 0.0), np.maximum(-lam, 0.0)


def _log_capital(
    y: np.ndarray,
    lam_up: np.ndarray,
    lam_down: np.ndarray,
    mu: float | np.ndarray,
    axis: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Running log capital of the 'above' and 'below' bettors at ``mu`` (broadcast with ``y``)."""
    mu = np.asarray(mu, dtype=np.float64)
    # At mu = 0 the 'above' bettor cannot lose (y - mu >= 0): no cap needed; likewise at 1.
    with np.errstate(divide="ignore"):
        cap_up = np.where(mu > 0, _CAP / mu, np.inf)
        cap_down = np.where(mu < 1, _CAP / (1.0 - mu), np.inf)
    step = y - mu
    up = np.cumsum(np.log1p(np.minimum(lam_up, cap_up) * step), axis=axis)
    down = np.cumsum(np.log1p(-np.minimum(lam_down, cap_down) * step), axis=axis)
    return up, down


def running_pvalues(
    x: np.ndarray | Sequence[float],
    threshold: float,
    *,
    lower: float,
    upper: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Running anytime-valid p-values ``(p_above, p_below)`` after each observation.

    ``x`` may be a batch (time on the last axis; replicates on the others); the results have
    its shape. Entry ``t`` is the p-value ``sequential_test`` reports for ``x[..., :t + 1]``:
    ``min(1, 1 / max_{s <= t} K_s)`` with aGRAPA bets, non-increasing in ``t``.
    """
    _check_bounds(lower, upper)
    mu = _threshold_mu(threshold, lower, upper)
    y = _rescaled(x, lower, upper)
    if y.shape[-1] == 0:
        return np.ones(y.shape), np.ones(y.shape)
    lam_up, lam_down = agrapa_bets(y, mu)
    up, down = _log_capital(y, lam_up, lam_down, mu, axis=-1)
    p_above = np.exp(-np.maximum(np.maximum.accumulate(up, axis=-1), 0.0))
    p_below = np.exp(-np.maximum(np.maximum.accumulate(down, axis=-1), 0.0))
    return p_above, p_below


def confidence_sequence(
    x: np.ndarray | Sequence[float],
    *,
    lower: float,
    upper: float,
    alpha: float,
    grid_points: int = GRID_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``1 - alpha`` confidence sequence ``(cs_low, cs_high)`` after each observation.

    The hedged capital CS of the paper (``theta = 1/2``, PrPl bets): ``m`` is excluded at time
    ``t`` when ``K+_t(m) >= 2/alpha`` or ``K-_t(m) >= 2/alpha``; with probability at least
    ``1 - alpha`` the mean is never excluded. Inverted on ``grid_points`` evenly spaced values
    of ``m``: since ``K+`` falls and ``K-`` rises with ``m``, the excluded values are a prefix
    and a suffix of the grid, and the reported bounds are the last excluded grid point of the
    prefix and the first of the suffix, so the exact interval (between those grid points)
    lies inside the reported one: at most one grid step wider, never narrower. Then the
    running intersection (a valid CS stays valid when intersected over time). On data of
    probability at most ``alpha`` the intersection can become empty (``cs_low > cs_high``).
    """
    _check_bounds(lower, upper)
    _check_alpha(alpha)
    if grid_points < 2:
        raise ValueError(f"grid_points must be at least 2, got {grid_points}")
    y = _rescaled(x, lower, upper)
    if y.ndim != 1:
        raise ValueError(f"x must be 1-d (observations in order), got shape {y.shape}")
    n = y.size
    if n == 0:
        return np.empty(0), np.empty(0)
    lam = prpl_bets(y, alpha)[None, :]  # the same bet for both sides, capped per side
    level = math.log(2.0 / alpha)
    grid = np.linspace(0.0, 1.0, grid_points)
    first_kept = np.full(n, grid_points)  # first grid index the 'above' bettor has not excluded
    last_kept = np.full(n, -1)  # last grid index the 'below' bettor has not excluded
    width = max(1, _BLOCK_CELLS // n)
    for start in range(0, grid_points, width):
        # A block of grid points x time: the running sums run along contiguous rows.
        mu = grid[start : start + width][:, None]
        up, down = _log_capital(y[None, :], lam, lam, mu, axis=1)
        kept_up = up < level
        kept_down = down < level
        idx_up = start + np.argmax(kept_up, axis=0)
        first_kept = np.where((first_kept == grid_points) & kept_up.any(axis=0), idx_up, first_kept)
        idx_down = start + mu.shape[0] - 1 - np.argmax(kept_down[::-1], axis=0)
        last_kept = np.where(kept_down.any(axis=0), idx_down, last_kept)
    # K+(1) <= 1 and K-(0) <= 1, so each bettor keeps at least one end of the grid; where it
    # keeps grid point 0 (or the last) the bound is the range's own end.
    low = lower + (upper - lower) * grid[np.maximum(first_kept - 1, 0)]
    high = lower + (upper - lower) * grid[np.minimum(last_kept + 1, grid_points - 1)]
    return np.maximum.accumulate(low), np.minimum.accumulate(high)


def sequential_test(
    x: np.ndarray | Sequence[float],
    threshold: float,
    *,
    lower: float,
    upper: float,
    alpha: float,
) -> SequentialTest:
    """Anytime-valid test of the mean of ``x`` (in order) against ``threshold``.

    ``p_above`` / ``p_below`` are the running p-values of ``H0: mean <= threshold`` and
    ``H0: mean >= threshold`` (see ``running_pvalues``); ``cs_low`` / ``cs_high`` the
    ``1 - alpha`` confidence sequence (see ``confidence_sequence``). Raises ``ValueError`` on
    an observation outside ``[lower, upper]`` or not finite (naming its index), on
    ``lower >= upper``, on ``alpha`` outside (0, 1) and on a threshold outside the range.
    Empty ``x`` gives ``n == 0``, p-values 1 and an empty sequence (``low``/``high`` are the
    range's ends).
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"x must be 1-d (observations in order), got shape {arr.shape}")
    _check_alpha(alpha)
    p_above, p_below = running_pvalues(arr, threshold, lower=lower, upper=upper)
    cs_low, cs_high = confidence_sequence(arr, lower=lower, upper=upper, alpha=alpha)
    n = int(arr.size)
    return SequentialTest(
        threshold=float(threshold),
        lower=float(lower),
        upper=float(upper),
        n=n,
        mean=float(arr.mean()) if n else math.nan,
        p_above=float(p_above[-1]) if n else 1.0,
        p_below=float(p_below[-1]) if n else 1.0,
        cs_low=cs_low,
        cs_high=cs_high,
    )


def _holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down rejections at ``alpha`` along the last axis (adjusted p <= alpha)."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ordered = np.take_along_axis(p, order, axis=-1)
    # The i-th smallest is rejected when it and every smaller one clear alpha / (m - j).
    steps = np.cumprod(ordered <= alpha / (m - np.arange(m)), axis=-1).astype(bool)
    rejects = np.empty_like(steps)
    np.put_along_axis(rejects, order, steps, axis=-1)
    return rejects


def verdicts_from_pvalues(
    p_above: np.ndarray | Sequence[float], p_below: np.ndarray | Sequence[float], alpha: float
) -> np.ndarray:
    """``sequential_verdicts`` on bare p-values, vectorized: the last axis holds the tests of
    one decision, any leading axes are independent decisions (replicates, looks).

    Returns an array of ABOVE / BELOW / UNDECIDED strings of the inputs' shape.
    """
    _check_alpha(alpha)
    up = np.asarray(p_above, dtype=np.float64)
    down = np.asarray(p_below, dtype=np.float64)
    if up.shape != down.shape or up.ndim == 0:
        raise ValueError(
            f"p_above and p_below must be arrays of the same shape, got {up.shape}, {down.shape}"
        )
    for name, arr in (("p_above", up), ("p_below", down)):
        bad = np.argwhere(np.isnan(arr) | (arr < 0) | (arr > 1))
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            raise ValueError(f"{name}[{_index(where)}] is {float(arr[where])!r}, not in [0, 1]")
    k = up.shape[-1]
    rejects = _holm_rejects(np.concatenate([up, down], axis=-1), alpha)
    rejects_up, rejects_down = rejects[..., :k], rejects[..., k:]
    # Both sides rejected means one of the rejections is an error: claim neither.
    out = np.full(up.shape, UNDECIDED, dtype="<U9")
    out[rejects_up & ~rejects_down] = ABOVE
    out[rejects_down & ~rejects_up] = BELOW
    return out


def sequential_verdicts(tests: Sequence[SequentialTest], alpha: float) -> list[str]:
    """ABOVE / BELOW / UNDECIDED per test, with Holm over the 2·len(tests) one-sided
    anytime-valid p-values, so the family-wise error over every test of one decision is
    <= alpha at any stopping time.

    Why Holm stays valid when the decision looks after every chunk and stops when it likes:
    each running p-value only falls, so whatever Holm rejects at some look it also rejects on
    the p-values' limits ``1 / sup_t K_t``, and those are valid p-values by Ville's inequality;
    Holm needs nothing more (no assumption on how the tests depend on each other). A test
    frozen when its scenario stopped keeps a p-value of the same kind. A test whose two sides
    both reject (only possible when one of the rejections is an error) is UNDECIDED.
    """
    _check_alpha(alpha)
    if not tests:
        return []
    verdicts = verdicts_from_pvalues([t.p_above for t in tests], [t.p_below for t in tests], alpha)
    return [str(v) for v in verdicts]
