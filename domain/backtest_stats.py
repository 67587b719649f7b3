"""Backtest statistics: performance metrics, per-tier expectancy, score calibration and score-vs-R correlation.

Every function takes plain arrays or frames and returns plain values, so the same code measures one run, a
period of it (in-sample / out-of-sample) or several runs pooled.

Conventions:

- R-multiple: net P&L after every fee and slippage divided by the initial risk (quantity x |entry - stop|).
- A win is a closed trade with net P&L > 0 (R > 0).
- Profit factor: sum of winning net P&L / |sum of losing net P&L| (``inf`` with no losing trade).
- Max drawdown: the largest fall of the mark-to-market equity from its running peak, as a fraction of that
  peak (0.12 = 12%) and in quote currency.
- Sharpe: mean / standard deviation (ddof 1) of DAILY returns of the mark-to-market equity, times sqrt(365)
  (crypto trades every day of the year; no risk-free rate). A day is a UTC calendar day on which at least one
  series has a candle; days with no data at all (between the disjoint periods of a multi-era replay) are left
  out rather than counted as flat days, which would shrink the volatility and inflate the ratio.
- Correlations: Pearson (linear) and Spearman (rank, average ranks for ties) of score vs realised R, each
  with a percentile bootstrap interval: ``resamples`` draws with replacement (of pairs, or of whole clusters
  of dependent pairs) from a ``numpy.random.default_rng(seed)`` generator, the same draws for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from domain.errors import InvalidDataError
from domain.indicators import FloatArray
from domain.timeframes import DAY_MS

__all__ = [
    "SCORE_BUCKETS",
    "CorrelationEstimate",
    "PerformanceMetrics",
    "calibration_table",
    "correlation_with_ci",
    "daily_sharpe",
    "max_drawdown",
    "performance_metrics",
    "tier_table",
]

#: Calibration buckets of the issue: 60-65, 65-70, ..., 95-100 (lower bound inclusive, 100 in the last).
SCORE_BUCKETS: tuple[float, ...] = tuple(float(x) for x in range(60, 101, 5))
_SHARPE_DAYS_PER_YEAR = 365.0
_BOOTSTRAP_CELLS = 2_000_000  # resample x pair cells per chunk: bounds memory at ~50 MB


@dataclass(frozen=True, kw_only=True)
class CorrelationEstimate:
    """Score vs realised R on one labelled population, with percentile bootstrap intervals (NaN when n < 3
    or a side has no variance). ``clusters`` is the number of resampling units (= n unless clustered)."""

    population: str
    n: int
    clusters: int
    pearson: float
    pearson_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]
    resamples: int
    confidence: float
    seed: int

    @property
    def zero_in_pearson_ci(self) -> bool:
        lo, hi = self.pearson_ci
        return lo <= 0.0 <= hi

    @property
    def zero_in_spearman_ci(self) -> bool:
        lo, hi = self.spearman_ci
        return lo <= 0.0 <= hi


@dataclass(frozen=True, kw_only=True)
class PerformanceMetrics:
    """Headline figures of one replay (units in the module docstring). ``trades`` counts filled entries;
    ``closed`` those that exited before the data ended (the win rate, profit factor and expectancy use only
    closed trades); ``open_at_end`` were marked to the last close."""

    trades: int
    closed: int
    open_at_end: int
    win_rate: float
    profit_factor: float
    expectancy_r: float
    net_pnl: float
    fees: float
    initial_equity: float
    final_equity: float
    max_drawdown: float
    max_drawdown_quote: float
    sharpe: float
    sharpe_days: int


def _average_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks, ties sharing their mean rank."""
    ranks = pl.Series(values).rank("average").to_numpy()
    return np.asarray(ranks, dtype=np.float64)


def _pearson_from_sums(sums: FloatArray) -> FloatArray:
    """Pearson correlation per row of (count, sum x, sum y, sum xx, sum yy, sum xy); NaN without variance."""
    n, sx, sy, sxx, syy, sxy = (sums[:, k] for k in range(6))
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / n
        var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
        denominator = np.sqrt(var_x * var_y)
        # Relative cut-off: a constant column leaves only rounding noise in its variance.
        flat = (var_x <= 1e-12 * np.maximum(sxx, 1e-300)) | (var_y <= 1e-12 * np.maximum(syy, 1e-300))
        return np.asarray(np.where(flat | ~(denominator > 0), np.nan, cov / denominator), dtype=np.float64)


def _cluster_sums(x: FloatArray, y: FloatArray, codes: npt.NDArray[np.int64], clusters: int) -> FloatArray:
    columns = (np.ones_like(x), x, y, x * x, y * y, x * y)
    return np.column_stack([np.bincount(codes, weights=c, minlength=clusters) for c in columns])


def _interval(samples: FloatArray, confidence: float) -> tuple[float, float]:
    kept = samples[np.isfinite(samples)]
    if kept.size == 0:
        return (math.nan, math.nan)
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.percentile(kept, [tail, 100.0 - tail])
    return (float(lo), float(hi))


def correlation_with_ci(
    score: npt.ArrayLike,
    r_multiple: npt.ArrayLike,
    *,
    population: str,
    clusters: npt.ArrayLike | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> CorrelationEstimate:
    """Pearson and Spearman correlation of ``score`` (0-100) with ``r_multiple``, bootstrap intervals.

    Each resample draws as many whole clusters as there are, with replacement (``clusters``: one label per
    pair, e.g. the Fibonacci leg of overlapping setups; without it every pair is its own cluster, the
    ordinary bootstrap), and recomputes both coefficients from per-cluster sums weighted by the draw counts.
    The Spearman resamples reuse the full sample's ranks rather than re-ranking each resample (exact for
    Pearson on the ranks; a close approximation of re-ranked Spearman when n is large). Non-finite pairs
    are dropped first.

    Raises:
        InvalidDataError: different lengths, ``resamples < 1`` or ``confidence`` outside (0, 1).
    """
    x, y = np.asarray(score, dtype=np.float64), np.asarray(r_multiple, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InvalidDataError("correlation_with_ci: score and r_multiple must be 1-D and of equal length")
    labels = np.arange(x.shape[0]) if clusters is None else np.asarray(clusters)
    if labels.shape != x.shape:
        raise InvalidDataError("correlation_with_ci: one cluster label per pair")
    if resamples < 1 or not 0 < confidence < 1:
        raise InvalidDataError("correlation_with_ci: resamples >= 1 and 0 < confidence < 1")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, labels = x[keep], y[keep], labels[keep]
    _, codes = np.unique(labels, return_inverse=True)
    n, groups = int(x.shape[0]), int(codes.max()) + 1 if x.shape[0] else 0
    nan_pair = (math.nan, math.nan)
    if n < 3 or groups < 2:
        return CorrelationEstimate(
            population=population,
            n=n,
            clusters=groups,
            pearson=math.nan,
            pearson_ci=nan_pair,
            spearman=math.nan,
            spearman_ci=nan_pair,
            resamples=resamples,
            confidence=confidence,
            seed=seed,
        )
    plain = _cluster_sums(x, y, codes, groups)
    ranked = _cluster_sums(_average_ranks(x), _average_ranks(y), codes, groups)
    pearson = float(_pearson_from_sums(plain.sum(axis=0, keepdims=True))[0])
    spearman = float(_pearson_from_sums(ranked.sum(axis=0, keepdims=True))[0])
    rng = np.random.default_rng(seed)
    boot_p, boot_s = np.empty(resamples), np.empty(resamples)
    chunk = max(1, _BOOTSTRAP_CELLS // groups)
    for start in range(0, resamples, chunk):
        rows = min(resamples, start + chunk) - start
        stop = start + rows
        # Draw `groups` cluster indices per resample and count them: multinomial counts, but vectorised.
        drawn = rng.integers(0, groups, size=(rows, groups)) + (np.arange(rows) * groups)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=rows * groups).reshape(rows, groups).astype(np.float64)
        boot_p[start:stop] = _pearson_from_sums(counts @ plain)
        boot_s[start:stop] = _pearson_from_sums(counts @ ranked)
    return CorrelationEstimate(
        population=population,
        n=n,
        clusters=groups,
        pearson=pearson,
        pearson_ci=_interval(boot_p, confidence),
        spearman=spearman,
        spearman_ci=_interval(boot_s, confidence),
        resamples=resamples,
        confidence=confidence,
        seed=seed,
    )


def calibration_table(
    score: npt.ArrayLike, r_multiple: npt.ArrayLike, *, edges: Sequence[float] = SCORE_BUCKETS
) -> pl.DataFrame:
    """Per score bucket ``[edges[k], edges[k+1])`` (the last one closed): count, mean score, mean R, win rate
    (share with R > 0). Empty buckets keep their row with count 0 and null statistics."""
    x, y = np.asarray(score, dtype=np.float64), np.asarray(r_multiple, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    bounds = np.asarray(edges, dtype=np.float64)
    if bounds.ndim != 1 or bounds.shape[0] < 2 or not bool(np.all(np.diff(bounds) > 0)):
        raise InvalidDataError("calibration_table: edges must be at least two increasing numbers")
    bucket = np.searchsorted(bounds, x, side="right") - 1
    bucket[x == bounds[-1]] = bounds.shape[0] - 2  # the top edge belongs to the last bucket
    rows = []
    for k in range(bounds.shape[0] - 1):
        sel = bucket == k
        count = int(sel.sum())
        rows.append(
            {
                "bucket": f"{bounds[k]:g}-{bounds[k + 1]:g}",
                "lo": float(bounds[k]),
                "hi": float(bounds[k + 1]),
                "count": count,
                "mean_score": float(x[sel].mean()) if count else None,
                "mean_r": float(y[sel].mean()) if count else None,
                "win_rate": float((y[sel] > 0).mean()) if count else None,
            }
        )
    schema = {
        "bucket": pl.String,
        "lo": pl.Float64,
        "hi": pl.Float64,
        "count": pl.Int64,
        "mean_score": pl.Float64,
        "mean_r": pl.Float64,
        "win_rate": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def tier_table(trades: pl.DataFrame) -> pl.DataFrame:
    """Expectancy per tier over CLOSED trades (columns ``tier``, ``status``, ``r_multiple``, ``net_pnl``):
    count, win rate, mean R (the expectancy in R), mean and total net P&L (quote); one row per tier plus
    ``ALL``."""
    closed = trades.filter(pl.col("status") == "CLOSED")
    aggs = [
        pl.len().alias("count"),
        (pl.col("r_multiple") > 0).mean().alias("win_rate"),
        pl.col("r_multiple").mean().alias("expectancy_r"),
        pl.col("net_pnl").mean().alias("mean_net_pnl"),
        pl.col("net_pnl").sum().alias("total_net_pnl"),
    ]
    per_tier = closed.group_by("tier").agg(aggs).sort("tier")
    overall = closed.select(pl.lit("ALL").alias("tier"), *aggs)
    return pl.concat([per_tier, overall], how="vertical_relaxed").with_columns(pl.col("count").cast(pl.Int64))


def max_drawdown(equity: npt.ArrayLike) -> tuple[float, float]:
    """(largest fall from the running peak as a fraction of that peak, the same in quote currency)."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return (0.0, 0.0)
    peak = np.maximum.accumulate(values)
    fall = peak - values
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(peak > 0, fall / peak, np.nan)
    return (float(np.nanmax(fraction)) if np.isfinite(fraction).any() else math.nan, float(fall.max()))


def daily_sharpe(ts_ms: npt.ArrayLike, equity: npt.ArrayLike) -> tuple[float, int]:
    """(annualised Sharpe of daily equity returns, number of daily returns used); see the module docstring.
    NaN with fewer than two daily returns or no variation."""
    ts, values = np.asarray(ts_ms, dtype=np.int64), np.asarray(equity, dtype=np.float64)
    if ts.size == 0:
        return (math.nan, 0)
    day = ts // DAY_MS
    last_of_day = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    closes = values[last_of_day]
    returns = closes[1:] / closes[:-1] - 1.0
    if returns.size < 2:
        return (math.nan, int(returns.size))
    sd = float(returns.std(ddof=1))
    if sd == 0:
        return (math.nan, int(returns.size))
    return (float(returns.mean()) / sd * math.sqrt(_SHARPE_DAYS_PER_YEAR), int(returns.size))


def performance_metrics(trades: pl.DataFrame, equity: pl.DataFrame, *, initial_equity: float) -> PerformanceMetrics:
    """Headline metrics from a trades frame (``status``, ``net_pnl``, ``fees``, ``r_multiple``) and an equity
    curve (``ts`` ms, ``equity`` quote, oldest first)."""
    closed = trades.filter(pl.col("status") == "CLOSED")
    net = closed["net_pnl"].to_numpy().astype(np.float64)
    wins, losses = float(net[net > 0].sum()), float(-net[net < 0].sum())
    if net.size == 0:
        profit_factor = math.nan
    elif losses == 0:
        profit_factor = math.inf if wins > 0 else math.nan
    else:
        profit_factor = wins / losses
    curve = equity["equity"].to_numpy() if equity.height else np.asarray([initial_equity])
    dd, dd_quote = max_drawdown(curve)
    sharpe, days = daily_sharpe(equity["ts"].to_numpy(), curve) if equity.height else (math.nan, 0)
    return PerformanceMetrics(
        trades=trades.height,
        closed=closed.height,
        open_at_end=trades.height - closed.height,
        win_rate=float((net > 0).mean()) if net.size else math.nan,
        profit_factor=profit_factor,
        expectancy_r=float(closed["r_multiple"].mean()) if closed.height else math.nan,  # type: ignore[arg-type]
        net_pnl=float(curve[-1] - initial_equity),
        fees=float(trades["fees"].sum()) if trades.height else 0.0,
        initial_equity=initial_equity,
        final_equity=float(curve[-1]),
        max_drawdown=dd,
        max_drawdown_quote=dd_quote,
        sharpe=sharpe,
        sharpe_days=days,
    )
