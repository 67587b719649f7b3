"""Fitting the score's component weights to realised R, kept deliberately simple.

Model: ``R ~ a + sum_k b_k * f_k`` over the five component fractions ``f_k`` in [0, 1] (technical, volume,
volatility, win_rate, market; :data:`domain.scoring.COMPONENTS`), by least squares with every ``b_k >= 0`` and
a free intercept ``a``. The weights are ``100 * b / sum(b)``, so the fitted score stays a non-negative mix of
the same components summing to 100 points, and ranks setups exactly as the fitted line does (the intercept
and the scale do not change a ranking, hence not a correlation either).

Why these choices:

- Non-negative: each component was designed as "more is better"; a negative weight would make the score
  reward e.g. low volume, which nobody could explain to a trader, and the constraint stops the fit from
  chasing noise with offsetting signs.
- R is winsorised at the ``winsor`` and ``1 - winsor`` quantiles of the training sample first: a few trades
  that run to a far extension target (+5 R and more) would otherwise decide the fit on their own.
- Exact NNLS by enumeration: with five components the 32 candidate supports are solved by ordinary least
  squares and the best feasible one is kept. That is the global optimum (at the optimum the free
  coefficients solve the least-squares problem on their support), with no solver to tune or trust.

The caller decides which sample is "training"; :mod:`domain.backtest` passes only setups signalled AND
closed before each series' split point, so nothing from the test period reaches the fit.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from domain.errors import InvalidDataError
from domain.scoring import COMPONENTS, ScoreWeights

__all__ = ["WeightFit", "fit_score_weights"]


@dataclass(frozen=True, kw_only=True)
class WeightFit:
    """The outcome of a fit. ``weights`` is None when no component has a positive association with R in
    the sample (the best non-negative fit is the intercept alone) or the sample is too small; ``note`` says
    which. ``coefficients`` are in R per unit of fraction (after winsorising)."""

    weights: ScoreWeights | None
    coefficients: Mapping[str, float]
    intercept: float
    samples: int
    r_squared: float
    winsor_bounds: tuple[float, float]
    note: str


def _lstsq(design: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return np.asarray(coef, dtype=np.float64), float(residual @ residual)


def fit_score_weights(
    fractions: Mapping[str, npt.ArrayLike],
    r_multiple: npt.ArrayLike,
    *,
    winsor: float = 0.01,
    min_samples: int = 30,
) -> WeightFit:
    """Fit non-negative component weights (summing to 100) to ``r_multiple``; see the module docstring.

    ``fractions`` maps every name in :data:`domain.scoring.COMPONENTS` to one value per sample; rows with a
    non-finite value anywhere are dropped.

    Raises:
        InvalidDataError: a component is missing, lengths differ, or ``winsor`` is outside [0, 0.5).
    """
    missing = [name for name in COMPONENTS if name not in fractions]
    if missing:
        raise InvalidDataError(f"fit_score_weights: fractions lack {missing}")
    if not 0 <= winsor < 0.5:
        raise InvalidDataError("fit_score_weights: winsor is a quantile in [0, 0.5)")
    x = np.column_stack([np.asarray(fractions[name], dtype=np.float64) for name in COMPONENTS])
    y = np.asarray(r_multiple, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise InvalidDataError("fit_score_weights: fractions and r_multiple differ in length")
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(y.shape[0])
    zero = dict.fromkeys(COMPONENTS, 0.0)
    if n < max(min_samples, len(COMPONENTS) + 2):
        note = f"{n} training samples; at least {max(min_samples, len(COMPONENTS) + 2)} needed"
        return WeightFit(
            weights=None,
            coefficients=zero,
            intercept=float("nan"),
            samples=n,
            r_squared=float("nan"),
            winsor_bounds=(float("nan"), float("nan")),
            note=note,
        )
    lo, hi = (float(v) for v in np.quantile(y, [winsor, 1.0 - winsor]))
    y = np.clip(y, lo, hi)
    ones = np.ones((n, 1))
    best_sse = float(np.sum((y - y.mean()) ** 2))  # the intercept-only model
    best_support: tuple[int, ...] = ()
    total_ss = best_sse
    best_coef = np.asarray([y.mean()])
    for size in range(1, len(COMPONENTS) + 1):
        for support in itertools.combinations(range(len(COMPONENTS)), size):
            coef, sse = _lstsq(np.hstack([ones, x[:, support]]), y)
            if np.all(coef[1:] >= 0) and sse < best_sse - 1e-12 * max(1.0, best_sse):
                best_sse, best_support, best_coef = sse, support, coef
    coefficients = dict(zero)
    for k, j in enumerate(best_support):
        coefficients[COMPONENTS[j]] = float(best_coef[k + 1])
    r_squared = 1.0 - best_sse / total_ss if total_ss > 0 else float("nan")
    total = sum(coefficients.values())
    if total <= 0:
        return WeightFit(
            weights=None,
            coefficients=coefficients,
            intercept=float(best_coef[0]),
            samples=n,
            r_squared=r_squared,
            winsor_bounds=(lo, hi),
            note="no component has a positive association with R in the training sample",
        )
    weights = ScoreWeights(**{name: 100.0 * value / total for name, value in coefficients.items()})
    used = ", ".join(f"{name} {100.0 * value / total:.1f}" for name, value in coefficients.items() if value > 0)
    return WeightFit(
        weights=weights,
        coefficients=coefficients,
        intercept=float(best_coef[0]),
        samples=n,
        r_squared=r_squared,
        winsor_bounds=(lo, hi),
        note=f"fitted on {n} training setups: {used}",
    )
