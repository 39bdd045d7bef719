"""Calibration of a model's confidence in its chosen answers (HELM's calibration family).

Inputs are two aligned arrays: the probability the model gave to the answer it chose and
whether that answer was correct (0/1). Definitions follow HELM, which delegates to the
``uncertainty-calibration`` library (Kumar et al., 2019):

- ``ece_10_bin``: top-label ECE with 10 equal-mass bins. Bin edges are the midpoints between
  neighbouring chunks of the sorted probabilities (``numpy.array_split`` into 10 chunks), the
  last edge is 1.0, and a probability falls in the first bin whose edge is >= it.
- ``ece_1_bin``: one bin, i.e. ``|mean(prob) - mean(correct)|``.
- ``selective_coverage_acc_area``: mean over k of the accuracy of the k most confident answers.
- ``selective_acc@10``: accuracy of the most confident 10% (HELM's index ``int(0.1 * n)``).
- Platt scaling: an (essentially) unregularized logistic regression of correctness on
  ``logit(prob)``, then both ECEs again on the rescaled probabilities.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from assay.scoring.metrics.absent import Absent

_CLIP = 1e-12  # keeps logit() finite for probabilities of exactly 0 or 1
# The reference library fits sklearn's LogisticRegression(C=1e10): an L2 penalty on the slope
# so small it only matters when the classes are perfectly separable (the fit then stays finite).
_PLATT_C = 1e10


def _validate(
    probs: ArrayLike, correct: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(correct)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError("probs and correct must be one-dimensional")
    if p.shape != y.shape:
        raise ValueError(f"probs has {p.size} entries but correct has {y.size}")
    if p.size == 0:
        raise ValueError("calibration needs at least one (prob, correct) pair")
    outside = np.flatnonzero(~((p >= 0.0) & (p <= 1.0)))
    if outside.size:
        i = int(outside[0])
        raise ValueError(f"probs[{i}] = {p[i]!r} is not a probability in [0, 1]")
    not_binary = np.flatnonzero((y != 0) & (y != 1))
    if not_binary.size:
        i = int(not_binary[0])
        raise ValueError(f"correct[{i}] = {y[i]!r} is not 0 or 1")
    return p, y.astype(np.int64)


def equal_mass_bin_edges(probs: ArrayLike, num_bins: int = 10) -> NDArray[np.float64]:
    """Upper bin edges for equal-mass binning (last edge 1.0), as the reference library builds."""
    if num_bins < 1:
        raise ValueError("num_bins must be at least 1")
    ordered = np.sort(np.asarray(probs, dtype=np.float64))
    chunks = np.array_split(ordered, min(num_bins, ordered.size))
    edges = [(a[-1] + b[0]) / 2.0 for a, b in itertools.pairwise(chunks)]
    return np.unique(np.array([*edges, 1.0]))


def _binned_ece(p: NDArray[np.float64], y: NDArray[np.int64], edges: NDArray[np.float64]) -> float:
    which = np.searchsorted(edges, p, side="left")
    counts = np.bincount(which, minlength=edges.size).astype(np.float64)
    prob_sums = np.bincount(which, weights=p, minlength=edges.size)
    label_sums = np.bincount(which, weights=y.astype(np.float64), minlength=edges.size)
    filled = counts > 0
    gaps = np.abs(prob_sums[filled] - label_sums[filled]) / counts[filled]
    return float(np.sum(counts[filled] / p.size * gaps))


def expected_calibration_error(probs: ArrayLike, correct: ArrayLike, num_bins: int = 10) -> float:
    """Top-label ECE with ``num_bins`` equal-mass bins (HELM's ``ece_10_bin`` at 10)."""
    p, y = _validate(probs, correct)
    return _binned_ece(p, y, equal_mass_bin_edges(p, num_bins))


def ece_one_bin(probs: ArrayLike, correct: ArrayLike) -> float:
    """ECE with a single bin: ``|mean(prob) - accuracy|`` (HELM's ``ece_1_bin``)."""
    p, y = _validate(probs, correct)
    return float(abs(p.mean() - y.mean()))


def selective_stats(probs: ArrayLike, correct: ArrayLike) -> tuple[float, float]:
    """(area under the coverage-accuracy curve, accuracy of the 10% most confident answers).

    Answers are ranked by decreasing probability; ties keep input order (a stable sort, so the
    result is reproducible; the reference library's unstable sort may order ties differently).
    """
    p, y = _validate(probs, correct)
    ranked = y[np.argsort(-p, kind="stable")].astype(np.float64)
    running_acc = np.cumsum(ranked) / np.arange(1, ranked.size + 1)
    return float(running_acc.mean()), float(running_acc[int(0.1 * ranked.size)])


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = np.clip(p, _CLIP, 1.0 - _CLIP)
    return np.log(q / (1.0 - q))


@dataclass(frozen=True, slots=True)
class PlattScaler:
    """``sigmoid(coef * logit(p) + intercept)``: a fitted recalibration of probabilities."""

    coef: float
    intercept: float

    def __call__(self, probs: ArrayLike) -> NDArray[np.float64]:
        z = self.coef * _logit(np.asarray(probs, dtype=np.float64)) + self.intercept
        return _sigmoid(z)


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """``1 / (1 + exp(-z))`` without overflow: ``exp`` only ever sees ``-|z|``."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def fit_platt(probs: ArrayLike, correct: ArrayLike, max_iter: int = 100) -> PlattScaler:
    """Fit Platt scaling by Newton's method on the logistic log-likelihood.

    Each Newton step is halved until the penalized negative log-likelihood (computed with
    ``logaddexp``) does not increase, so nearly separable answers, whose optimum has a steep
    slope, converge instead of overshooting into overflow. Needs both correct and incorrect
    answers; raises ``ValueError`` otherwise.
    """
    p, y = _validate(probs, correct)
    if y.min() == y.max():
        raise ValueError("Platt scaling needs both correct and incorrect answers")
    x = _logit(p)
    design = np.column_stack([x, np.ones_like(x)])
    # Penalty 1/(2C) * coef^2 on the slope only, matching sklearn's objective with C=_PLATT_C.
    ridge = np.diag([1.0 / _PLATT_C, 0.0])

    def loss(w: NDArray[np.float64]) -> float:
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * w @ ridge @ w)

    w = np.zeros(2)
    current = loss(w)
    for _ in range(max_iter):
        fitted = _sigmoid(design @ w)
        grad = design.T @ (fitted - y) + ridge @ w
        hess = design.T @ (design * (fitted * (1.0 - fitted))[:, None]) + ridge
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        scale = 1.0
        while scale > 1e-10:
            trial = loss(w - scale * step)
            if trial <= current:
                break
            scale /= 2.0
        else:
            break  # no step lowers the loss: w is the optimum to working precision
        w, current = w - scale * step, trial
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return PlattScaler(coef=float(w[0]), intercept=float(w[1]))


@dataclass(frozen=True, slots=True)
class CalibrationStats:
    """HELM's calibration metrics for one set of answers; Absent where not computable."""

    ece_10_bin: float
    ece_1_bin: float
    selective_coverage_acc_area: float
    selective_acc_at_10: float
    platt_ece_10_bin: float | Absent
    platt_ece_1_bin: float | Absent
    platt_coef: float | Absent
    platt_intercept: float | Absent
    count: int


def calibration_stats(probs: Sequence[float] | ArrayLike, correct: ArrayLike) -> CalibrationStats:
    """All calibration metrics at once; the Platt ones are Absent when one class is missing."""
    p, y = _validate(probs, correct)
    area, acc10 = selective_stats(p, y)
    ece10 = expected_calibration_error(p, y, 10)
    ece1 = ece_one_bin(p, y)
    if y.min() == y.max():
        why = Absent("Platt scaling needs both correct and incorrect answers")
        return CalibrationStats(ece10, ece1, area, acc10, why, why, why, why, int(p.size))
    scaler = fit_platt(p, y)
    rescaled = scaler(p)
    return CalibrationStats(
        ece_10_bin=ece10,
        ece_1_bin=ece1,
        selective_coverage_acc_area=area,
        selective_acc_at_10=acc10,
        platt_ece_10_bin=expected_calibration_error(rescaled, y, 10),
        platt_ece_1_bin=ece_one_bin(rescaled, y),
        platt_coef=scaler.coef,
        platt_intercept=scaler.intercept,
        count=int(p.size),
    )


def reliability_bins(
    probs: ArrayLike, correct: ArrayLike, num_bins: int = 10
) -> list[tuple[int, float, float]]:
    """The reliability diagram behind ``expected_calibration_error``: per non-empty
    equal-mass bin, (count, mean probability, accuracy)."""
    p, y = _validate(probs, correct)
    edges = equal_mass_bin_edges(p, num_bins)
    which = np.searchsorted(edges, p, side="left")
    counts = np.bincount(which, minlength=edges.size)
    prob_sums = np.bincount(which, weights=p, minlength=edges.size)
    label_sums = np.bincount(which, weights=y.astype(np.float64), minlength=edges.size)
    return [
        (int(n), float(ps / n), float(ls / n))
        for n, ps, ls in zip(counts, prob_sums, label_sums, strict=True)
        if n > 0
    ]
