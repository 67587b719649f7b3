"""Backtest and score calibration: does the 0-100 score predict P&L? (issue 7)

:func:`run_backtest` is the single entry point. It replays the whole signal path without look-ahead (see
:mod:`domain.backtest_replay`: signal series -> per-bar decisions -> scheduler gate -> tier sizing -> exits
with fees and slippage), measures it (:mod:`domain.backtest_stats`), and, when asked:

- fits the score weights on the TRAINING part of every series (the oldest ``train_fraction`` of its bars;
  only setup bars signalled AND closed before the split, from the widest population, every scored setup
  bar) and replays again with them, reporting in-sample and
  out-of-sample figures side by side for the default and the fitted weights (:mod:`domain.weight_fit`);
- runs the same backtest on seeded random walks matched to the input series (``controls``): a pure random
  walk has no edge, so there the score must not predict R (correlation near 0, 0 inside its interval).

:func:`audit_lookahead` re-runs the backtest on data cut at random moments and checks that everything known
before each cut (per-bar signals, evaluations, entries, exits already known) equals the full run's.

Frames of a :class:`~domain.backtest_replay.ReplayRun` (times in epoch ms, money in quote currency):

- ``trades``: symbol, signal_ts (signal candle open), ts (entry candle open), exit_ts, signal/entry/exit/tp1
  bar indices, score, tier, direction, setup, confidence, equity_before, quantity, notional, entry_price,
  stop, tp1, tp2, tp1_quantity, exit_price, exit_kind, status (CLOSED / OPEN at the data end), gross_pnl,
  fees, net_pnl, unrealised_pnl, initial_risk, r_multiple (closed only).
- ``setups``: the hypothetical population, one row per scored setup taken one at a time per symbol
  regardless of score: symbol, signal_ts, signal_idx, score, tier, decision (enter / skip / reject),
  direction, setup, the five component fractions ``f_*``, status, entry_ts, exit_ts, exit_kind,
  r_multiple, traded (the real path took the same bar).
- ``every_setup``: every setup bar with its own hypothetical trade (overlapping): symbol, signal_ts,
  signal_idx, leg (Fibonacci leg id), score, ``f_*``, status, exit_ts, r_multiple.
- ``evaluations``: every ``evaluate_at`` call: symbol, signal_ts, signal_idx, candidate, hypothetical,
  score, tier, decision, confidence, direction, setup, ``f_*``, action (what the real path did).
- ``equity``: ts (a bar CLOSE), equity (mark-to-market), drawdown (fraction below the running peak).
- ``series``: per symbol bars, first_ts, last_ts, split_ts (first test bar), setup_bars, candidate_bars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from domain.backtest_audit import LookaheadAudit, audit_lookahead
from domain.backtest_config import BacktestConfig
from domain.backtest_market import CANDLE_COLUMNS, PreparedSeries, prepare_market
from domain.backtest_replay import ReplayRun, replay
from domain.backtest_stats import (
    CorrelationEstimate,
    PerformanceMetrics,
    calibration_table,
    correlation_with_ci,
    performance_metrics,
    tier_table,
)
from domain.errors import InvalidDataError
from domain.market_sim import MarketSimConfig, series_seed, simulate_candles
from domain.scoring import COMPONENTS
from domain.timeframes import DAY_MS, MINUTE_MS, timeframe_ms
from domain.weight_fit import WeightFit, fit_score_weights

__all__ = [
    "ALL_BUCKETS",
    "ALL_SETUPS",
    "EVERY_SETUP",
    "POPULATIONS",
    "TRADED",
    "BacktestConfig",
    "BacktestResult",
    "LookaheadAudit",
    "PooledSummary",
    "WeightCalibration",
    "audit_lookahead",
    "period_samples",
    "period_table",
    "pool_results",
    "random_walk_controls",
    "run_backtest",
]

TRADED = "traded"
ALL_SETUPS = "scored setups, one at a time"
EVERY_SETUP = "every scored setup bar"
POPULATIONS: tuple[str, ...] = (TRADED, ALL_SETUPS, EVERY_SETUP)
#: Buckets for the whole-score-range calibration of the hypothetical populations (0-5, ..., 95-100).
ALL_BUCKETS: tuple[float, ...] = tuple(float(x) for x in range(0, 101, 5))


@dataclass(frozen=True, eq=False)
class WeightCalibration:
    """The weight fit and its honest evaluation. ``periods`` has one row per (weights, period, population):
    weights "default" or "fitted", period "train" (signalled and closed before each series' split) or "test"
    (signalled from the split on), population one of :data:`POPULATIONS`; columns n, clusters, pearson,
    pearson_lo/hi, spearman, spearman_lo/hi, mean_r, win_rate; ``samples`` are the rows behind it
    (:func:`period_samples`), kept so several results can be pooled."""

    fit: WeightFit
    run: ReplayRun | None
    samples: pl.DataFrame
    periods: pl.DataFrame


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Everything one backtest measured. ``control`` is the same backtest on matched random walks;
    ``control_costless`` runs the same walks without fees and slippage (and without a weight fit).

    Why two controls: fees and slippage are fixed in bps of price, so a setup with a tight stop loses more
    R to them than one with a wide stop. A score that leans towards wide stops therefore "predicts" net R
    even on a random walk, through costs alone, not through any edge or leak. Without costs a random walk
    is a martingale: E[R | anything known at the signal] = 0, so the PEARSON correlation must vanish there
    (the look-ahead test); with costs the control is the like-for-like baseline the real figure has to beat.
    Spearman need not vanish even without costs: ranks reward a high win probability, and on a martingale a
    setup whose target is near (in R) wins more often and smaller, so a score related to the reward/risk
    geometry moves the ranks without moving the mean.

    ``correlations`` has one estimate per population in :data:`POPULATIONS` order; ``calibration_traded``
    uses the issue's buckets 60-65 ... 95-100, ``calibration_setups``/``calibration_every`` (the two
    hypothetical populations) 0-5 ... 95-100."""

    timeframe: str
    seed: int
    config: BacktestConfig
    run: ReplayRun
    metrics: PerformanceMetrics
    tiers: pl.DataFrame
    calibration_traded: pl.DataFrame
    calibration_setups: pl.DataFrame
    calibration_every: pl.DataFrame
    correlations: tuple[CorrelationEstimate, ...]
    calibration: WeightCalibration | None
    control: BacktestResult | None
    control_costless: BacktestResult | None
    description: str


def _closed(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter((pl.col("status") == "CLOSED") & pl.col("r_multiple").is_not_null())


def _populations(run: ReplayRun) -> list[tuple[str, pl.DataFrame]]:
    """Closed rows of each population with a ``cluster`` column: the resampling unit of its bootstrap.

    A trade or a one-at-a-time setup is its own unit. Every setup bar is resampled in blocks of one UTC day
    per symbol: overlapping trades and smooth indicators make neighbouring bars dependent well beyond one
    Fibonacci leg. Measured on cost-free random walks matched to the shared 5m candles (12 seeds), the
    Pearson interval covered 0 in 9 of 12 runs with leg clusters and in 11 of 12 with day blocks; even day
    blocks run a little narrow (their half-width 0.058 against a spread of 0.037 across seeds, which wants
    ~0.072), so read this population's interval as slightly optimistic."""
    one = pl.format("{}#{}", "symbol", "signal_idx").alias("cluster")
    day = pl.format("{}#day{}", "symbol", pl.col("signal_ts") // DAY_MS).alias("cluster")
    return [
        (TRADED, _closed(run.trades).with_columns(one)),
        (ALL_SETUPS, _closed(run.setups).with_columns(one)),
        (EVERY_SETUP, _closed(run.every_setup).with_columns(day)),
    ]


def _estimate(frame: pl.DataFrame, population: str, config: BacktestConfig, seed: int) -> CorrelationEstimate:
    return correlation_with_ci(
        frame["score"].to_numpy(),
        frame["r_multiple"].to_numpy(),
        population=population,
        clusters=frame["cluster"].to_numpy(),
        resamples=config.bootstrap_resamples,
        confidence=config.confidence,
        seed=seed,
    )


def _with_period(frame: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (closed rows) with a ``period`` column: train, test, or null for setups signalled in the
    training part that closed after the split (purged from both)."""
    joined = frame.join(series.select("symbol", "split_ts"), on="symbol", how="left")
    return joined.with_columns(
        pl.when(pl.col("signal_ts") >= pl.col("split_ts"))
        .then(pl.lit("test"))
        .when(pl.col("exit_ts") < pl.col("split_ts"))
        .then(pl.lit("train"))
        .otherwise(pl.lit(None))
        .alias("period")
    )


def period_samples(run: ReplayRun, *, weights: str) -> pl.DataFrame:
    """Every population of ``run`` labelled by period (see :class:`WeightCalibration`): columns weights,
    population, period, symbol, cluster, score, r_multiple."""
    parts = [
        _with_period(frame, run.series)
        .filter(pl.col("period").is_not_null())
        .select(
            pl.lit(weights).alias("weights"),
            pl.lit(population).alias("population"),
            "period",
            "symbol",
            "cluster",
            "score",
            "r_multiple",
        )
        for population, frame in _populations(run)
    ]
    return pl.concat(parts)


def period_table(samples: pl.DataFrame, *, config: BacktestConfig, seed: int) -> pl.DataFrame:
    """Score-vs-R statistics per (weights, period, population) of :func:`period_samples` output."""
    rows = []
    for weights in samples["weights"].unique(maintain_order=True).to_list():
        for population in POPULATIONS:
            for period in ("train", "test"):
                part = samples.filter(
                    (pl.col("weights") == weights) & (pl.col("population") == population) & (pl.col("period") == period)
                )
                r = part["r_multiple"].to_numpy()
                est = _estimate(part, population, config, seed)
                rows.append(
                    {
                        "weights": weights,
                        "period": period,
                        "population": population,
                        "n": est.n,
                        "clusters": est.clusters,
                        "pearson": est.pearson,
                        "pearson_lo": est.pearson_ci[0],
                        "pearson_hi": est.pearson_ci[1],
                        "spearman": est.spearman,
                        "spearman_lo": est.spearman_ci[0],
                        "spearman_hi": est.spearman_ci[1],
                        "mean_r": float(r.mean()) if r.size else math.nan,
                        "win_rate": float((r > 0).mean()) if r.size else math.nan,
                    }
                )
    return pl.DataFrame(rows)


def _calibrate(market: tuple[PreparedSeries, ...], run: ReplayRun, seed: int) -> WeightCalibration:
    """Fit on the training part of every scored setup bar (the widest population), replay with the fitted
    weights, and tabulate both weight sets on both periods."""
    cfg = run.config
    train = _with_period(_closed(run.every_setup), run.series).filter(pl.col("period") == "train")
    fit = fit_score_weights(
        {name: train[f"f_{name}"].to_numpy() for name in COMPONENTS},
        train["r_multiple"].to_numpy(),
        min_samples=cfg.min_fit_samples,
    )
    samples = [period_samples(run, weights="default")]
    refit = None
    if fit.weights is not None:
        refit = replay(market, config=cfg.with_weights(fit.weights))
        samples.append(period_samples(refit, weights="fitted"))
    pooled = pl.concat(samples)
    return WeightCalibration(fit=fit, run=refit, samples=pooled, periods=period_table(pooled, config=cfg, seed=seed))


def _robust_volatility(close: np.ndarray) -> float:
    """Per-bar log-return volatility, from the median absolute return (a hole in the data makes one huge
    return that a plain standard deviation would count as volatility)."""
    moves = np.diff(np.log(close))
    moves = moves[np.isfinite(moves)]
    mad = float(np.median(np.abs(moves - np.median(moves)))) if moves.size else 0.0
    return max(1.4826 * mad, 1e-6)


def random_walk_controls(
    candles_by_symbol: Mapping[str, pl.DataFrame], *, timeframe: str, count: int, seed: int
) -> dict[str, pl.DataFrame]:
    """``count`` seeded pure random walks, the j-th matched to the (j mod N)-th input series (by name): same
    number of candles, first open time, first close and per-bar volatility; volume lognormal around the
    series' median. Generated by :func:`domain.market_sim.simulate_candles` with every source of
    predictability switched off (no trend drift, no range reversion, no volatility clustering, no holes or
    bad rows): log prices are a driftless Gaussian random walk, so no rule can have an edge on them.
    Named ``RW{j}/{source symbol}``."""
    if count < 1:
        raise InvalidDataError("random_walk_controls: count must be >= 1")
    names = sorted(candles_by_symbol)
    if not names:
        raise InvalidDataError("random_walk_controls: no series to match")
    step = timeframe_ms(timeframe)
    minutes = step / MINUTE_MS
    out: dict[str, pl.DataFrame] = {}
    for j in range(count):
        source = names[j % len(names)]
        frame = candles_by_symbol[source]
        close = frame["close"].cast(pl.Float64).to_numpy()
        start = int(frame["ts"][0])
        volume = float(np.median(frame["volume"].cast(pl.Float64).to_numpy()))
        config = MarketSimConfig(
            start_price=float(close[0]),
            volatility=_robust_volatility(close) / math.sqrt(minutes),
            garch_alpha=0.0,
            garch_beta=0.0,
            downtrend_vol_multiple=1.0,
            trend_drift=0.0,
            range_reversion=0.0,
            base_volume=max(volume, 1e-9) / minutes,
            volume_spike_rate=0.0,
            gap_rate=0.0,
            bad_row_rate=0.0,
        )
        walk = simulate_candles(
            start_ms=start,
            end_ms=start + frame.height * step,
            timeframe=timeframe,
            seed=series_seed(seed, "control", str(j), source),
            config=config,
        )
        out[f"RW{j}/{source}"] = walk.select(CANDLE_COLUMNS)
    return out


def _describe(run: ReplayRun, label: str) -> str:
    s = run.series
    return f"{label}: {s.height} series on {run.timeframe} ({int(s['bars'].sum())} candles): " + ", ".join(
        f"{row['symbol']} ({row['bars']})" for row in s.iter_rows(named=True)
    )


def run_backtest(
    candles_by_symbol: Mapping[str, pl.DataFrame],
    *,
    timeframe: str,
    config: BacktestConfig | None = None,
    seed: int = 0,
    controls: int = 0,
    label: str = "input",
) -> BacktestResult:
    """Backtest the signal path over ``candles_by_symbol`` (symbol -> validated candles of ``timeframe``:
    ts (ms, ascending), open, high, low, close, volume; holes allowed).

    ``seed`` drives the bootstrap intervals and the random-walk controls; ``controls`` > 0 also runs that
    many matched random walks through the same backtest (``result.control``). ``label`` names the data in
    ``result.description``.

    Raises:
        InvalidDataError: no symbol, a malformed frame, or an unknown timeframe.
    """
    cfg = config or BacktestConfig()
    market = prepare_market(candles_by_symbol, timeframe=timeframe, config=cfg)
    run = replay(market, config=cfg)
    populations = _populations(run)
    calibration = _calibrate(market, run, seed) if cfg.fit_weights else None
    control = costless = None
    if controls > 0:
        walks = random_walk_controls(candles_by_symbol, timeframe=timeframe, count=controls, seed=seed)
        control = run_backtest(walks, timeframe=timeframe, config=cfg, seed=seed, label="random-walk control")
        free = replace(cfg, execution=replace(cfg.execution, fee_bps=0.0, slippage_bps=0.0), fit_weights=False)
        costless = run_backtest(
            walks, timeframe=timeframe, config=free, seed=seed, label="random-walk control without fees or slippage"
        )
    tables = [
        calibration_table(f["score"].to_numpy(), f["r_multiple"].to_numpy(), edges=ALL_BUCKETS) for _, f in populations
    ]
    traded = populations[0][1]
    return BacktestResult(
        timeframe=timeframe,
        seed=seed,
        config=cfg,
        run=run,
        metrics=performance_metrics(run.trades, run.equity, initial_equity=cfg.initial_equity),
        tiers=tier_table(run.trades),
        calibration_traded=calibration_table(traded["score"].to_numpy(), traded["r_multiple"].to_numpy()),
        calibration_setups=tables[1],
        calibration_every=tables[2],
        correlations=tuple(_estimate(frame, name, cfg, seed) for name, frame in populations),
        calibration=calibration,
        control=control,
        control_costless=costless,
        description=_describe(run, label),
    )


@dataclass(frozen=True, eq=False)
class PooledSummary:
    """Several backtests' samples put together (e.g. every file and timeframe of the evidence run).
    ``sources`` are the pooled results' descriptions. Series replayed at several timeframes share their
    market moves, so pooled samples are not independent: read the pooled interval as optimistic."""

    label: str
    sources: tuple[str, ...]
    correlations: tuple[CorrelationEstimate, ...]
    calibration_traded: pl.DataFrame
    calibration_setups: pl.DataFrame
    calibration_every: pl.DataFrame
    tiers: pl.DataFrame
    periods: pl.DataFrame | None


def pool_results(results: Sequence[BacktestResult], *, label: str, seed: int = 0) -> PooledSummary:
    """Pool the closed trades, hypothetical setups and period samples of ``results`` (see
    :class:`PooledSummary`); bootstrap settings come from the first result's configuration.

    Raises:
        InvalidDataError: ``results`` is empty.
    """
    if not results:
        raise InvalidDataError("pool_results: nothing to pool")
    cfg = results[0].config
    frames = {name: pl.concat([dict(_populations(r.run))[name] for r in results]) for name in POPULATIONS}
    samples = [r.calibration.samples for r in results if r.calibration is not None]
    traded = frames[TRADED]
    return PooledSummary(
        label=label,
        sources=tuple(r.description for r in results),
        correlations=tuple(_estimate(frames[name], name, cfg, seed) for name in POPULATIONS),
        calibration_traded=calibration_table(traded["score"].to_numpy(), traded["r_multiple"].to_numpy()),
        calibration_setups=calibration_table(
            frames[ALL_SETUPS]["score"].to_numpy(), frames[ALL_SETUPS]["r_multiple"].to_numpy(), edges=ALL_BUCKETS
        ),
        calibration_every=calibration_table(
            frames[EVERY_SETUP]["score"].to_numpy(), frames[EVERY_SETUP]["r_multiple"].to_numpy(), edges=ALL_BUCKETS
        ),
        tiers=tier_table(pl.concat([r.run.trades for r in results])),
        periods=period_table(pl.concat(samples), config=cfg, seed=seed) if samples else None,
    )
