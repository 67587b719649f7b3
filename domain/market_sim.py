"""A seeded market simulator: candles with regimes, volatility clusters, volume spikes, exchange-side holes and
bad rows, plus synthetic order books. Pure numpy; the same seed always gives the same market.

Model, per bar of the requested timeframe (every rate below is per bar, fractions not percent):

- Regimes follow a Markov chain (RANGE, TREND_UP, TREND_DOWN) with geometric durations of mean
  ``mean_regime_bars`` (scaled to the timeframe). Trends add a drift of ``trend_drift`` x the long-run bar
  volatility; ranges pull the log price back toward the level where the range began (``range_reversion``).
- Volatility clusters: GARCH(1, 1) on the bar log returns, long-run volatility ``volatility`` per 1m bar
  (scaled by sqrt(timeframe minutes)), persistence ``garch_alpha + garch_beta`` < 1; TREND_DOWN bars are more
  volatile (``downtrend_vol_multiple``), as crypto sell-offs are.
- Candles: open = previous close; high/low extend past max/min(open, close) by half-normal wicks.
- Volume: lognormal around ``base_volume``, rising with the size of the move, x ``volume_spike_multiple``
  on spike bars (``volume_spike_rate``).
- Exchange-side holes: runs of missing bars (mean length ``mean_gap_bars``) covering ~``gap_rate`` of bars.
- Bad rows: ~``bad_row_rate`` of the remaining bars corrupted as a NaN close, a negative volume or
  high < low; the ``corruption`` column says which (null for clean rows).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import polars as pl

from domain.errors import InvalidDataError
from domain.timeframes import MINUTE_MS, align_up, timeframe_ms

__all__ = [
    "CORRUPTIONS",
    "MarketSimConfig",
    "OrderBook",
    "Regime",
    "series_seed",
    "simulate_candles",
    "synthetic_order_book",
]


class Regime(IntEnum):
    """Market regime of a simulated bar (the ``regime`` column holds the lower-case name)."""

    RANGE = 0
    TREND_UP = 1
    TREND_DOWN = 2


#: Values of the ``corruption`` column of simulated candles.
CORRUPTIONS = ("nan_close", "negative_volume", "high_below_low")


@dataclass(frozen=True, kw_only=True)
class MarketSimConfig:
    """Parameters of the simulated market (per-bar fractions; see the module docstring)."""

    start_price: float = 100.0
    volatility: float = 0.0008  # long-run std of 1m log returns (0.08% per minute ~ 3% per day)
    garch_alpha: float = 0.07
    garch_beta: float = 0.91
    downtrend_vol_multiple: float = 1.4
    mean_regime_bars: float = 720.0  # in 1m bars: regimes last ~12 hours on average
    trend_drift: float = 0.04  # drift per bar in trends, as a multiple of the long-run bar volatility
    range_reversion: float = 0.01  # fraction of the distance to the range level recovered per bar
    wick_scale: float = 0.5  # wick length as a multiple of the bar volatility (half-normal)
    base_volume: float = 50.0
    volume_spike_rate: float = 0.003
    volume_spike_multiple: tuple[float, float] = (4.0, 15.0)
    gap_rate: float = 0.001
    mean_gap_bars: float = 4.0
    bad_row_rate: float = 0.0005

    def __post_init__(self) -> None:
        if not (self.garch_alpha >= 0 and self.garch_beta >= 0 and self.garch_alpha + self.garch_beta < 1):
            raise InvalidDataError("need garch_alpha, garch_beta >= 0 and garch_alpha + garch_beta < 1")
        for name in ("gap_rate", "bad_row_rate", "volume_spike_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise InvalidDataError(f"{name} must be a fraction in [0, 1)")
        if self.start_price <= 0 or self.volatility <= 0 or self.mean_gap_bars < 1 or self.mean_regime_bars < 1:
            raise InvalidDataError("start_price, volatility > 0 and mean_gap_bars, mean_regime_bars >= 1")


def series_seed(seed: int, *names: str) -> int:
    """A stable per-series seed from a base seed and names (e.g. the symbol); never Python's salted hash."""
    return zlib.crc32("\x1f".join([str(seed), *names]).encode())


def simulate_candles(
    *,
    start_ms: int,
    end_ms: int,
    timeframe: str = "1m",
    seed: int,
    config: MarketSimConfig | None = None,
) -> pl.DataFrame:
    """Simulated candles opening in [start_ms, end_ms) on the timeframe grid, minus exchange-side holes.

    Returns ts Int64 (epoch ms), open/high/low/close/volume Float64, regime String ("range", "trend_up",
    "trend_down"), corruption String (null, or one of CORRUPTIONS). Sorted by ts.
    """
    cfg = config or MarketSimConfig()
    step = timeframe_ms(timeframe)
    first = align_up(start_ms, timeframe)
    n = max(0, -(-(end_ms - first) // step))
    rng = np.random.default_rng(seed)
    minutes = step / MINUTE_MS
    bar_vol = cfg.volatility * math.sqrt(minutes)
    regimes = _regimes(rng, n, max(2.0, cfg.mean_regime_bars / minutes))
    log_close, bar_sigma = _log_closes(rng, regimes, cfg, bar_vol)

    close = cfg.start_price * np.exp(log_close)
    open_ = np.concatenate([[cfg.start_price], close[:-1]])
    wick = cfg.wick_scale * bar_sigma
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 1.0, n)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 1.0, n)) * wick)
    move = np.abs(np.diff(np.concatenate([[0.0], log_close]))) / bar_vol
    spikes = rng.random(n) < cfg.volume_spike_rate
    spike_size = rng.uniform(*cfg.volume_spike_multiple, n)
    volume = (
        cfg.base_volume * minutes * rng.lognormal(0.0, 0.35, n) * (1.0 + 0.6 * move) * np.where(spikes, spike_size, 1.0)
    )
    ts = first + np.arange(n, dtype=np.int64) * step

    present = ~_holes(rng, n, cfg.gap_rate, cfg.mean_gap_bars)
    corruption = np.full(n, None, dtype=object)
    bad = present & (rng.random(n) < cfg.bad_row_rate)
    kinds = rng.integers(0, len(CORRUPTIONS), n)
    for k, kind in enumerate(CORRUPTIONS):
        corruption[bad & (kinds == k)] = kind
    close = np.where(corruption == "nan_close", np.nan, close)
    volume = np.where(corruption == "negative_volume", -volume, volume)
    flip = corruption == "high_below_low"
    high, low = np.where(flip, low, high), np.where(flip, high, low)

    names = np.array([r.name.lower() for r in Regime])
    return pl.DataFrame(
        {
            "ts": ts[present],
            "open": open_[present],
            "high": high[present],
            "low": low[present],
            "close": close[present],
            "volume": volume[present],
            "regime": names[regimes[present]],
            "corruption": corruption[present].tolist(),
        },
        schema={
            "ts": pl.Int64,
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
            "regime": pl.String,
            "corruption": pl.String,
        },
    )


def _regimes(rng: np.random.Generator, n: int, mean_bars: float) -> np.ndarray:
    """Regime per bar: runs of geometric length, the next regime drawn among the other two."""
    out = np.empty(n, dtype=np.int64)
    pos, current = 0, int(rng.integers(0, 3))
    while pos < n:
        length = int(rng.geometric(1.0 / mean_bars))
        out[pos : pos + length] = current
        pos += length
        current = (current + int(rng.integers(1, 3))) % 3
    return out


def _log_closes(
    rng: np.random.Generator, regimes: np.ndarray, cfg: MarketSimConfig, bar_vol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Log close relative to the start price, and the conditional volatility of each bar (GARCH(1, 1))."""
    n = regimes.size
    shocks = rng.standard_normal(n).tolist()
    regime_list = regimes.tolist()
    omega = bar_vol * bar_vol * (1.0 - cfg.garch_alpha - cfg.garch_beta)
    # Indexed by Regime value; plain lists because this loop runs once per bar.
    drift = [0.0, cfg.trend_drift * bar_vol, -cfg.trend_drift * bar_vol]
    vol_multiple = [1.0, 1.0, cfg.downtrend_vol_multiple]
    kappa = cfg.range_reversion
    alpha, beta = cfg.garch_alpha, cfg.garch_beta
    log_close = [0.0] * n
    sigmas = [0.0] * n
    variance, last_eps, level, price = bar_vol * bar_vol, 0.0, 0.0, 0.0
    previous = -1
    # Sequential by nature (each bar's variance depends on the last shock): a plain float loop is the
    # fastest pure option here, well under 1 us per bar.
    for t in range(n):
        regime = regime_list[t]
        if regime != previous:
            level, previous = price, regime
        variance = omega + alpha * last_eps * last_eps + beta * variance
        multiple = vol_multiple[regime]
        sigma = math.sqrt(variance) * multiple
        mean = drift[regime] - (kappa * (price - level) if regime == 0 else 0.0)
        eps = sigma * shocks[t]
        price += mean + eps
        last_eps = eps / multiple
        log_close[t] = price
        sigmas[t] = sigma
    return np.asarray(log_close), np.asarray(sigmas)


def _holes(rng: np.random.Generator, n: int, rate: float, mean_length: float) -> np.ndarray:
    """Mask of missing bars: runs starting at rate/mean_length per bar, geometric lengths of that mean."""
    missing = np.zeros(n, dtype=bool)
    if rate <= 0 or n == 0:
        return missing
    starts = np.flatnonzero(rng.random(n) < rate / mean_length)
    lengths = rng.geometric(1.0 / mean_length, starts.size)
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        missing[start : start + length] = True
    return missing


@dataclass(frozen=True, slots=True)
class OrderBook:
    """An order book snapshot shaped like ccxt's: bids best-first (descending), asks best-first (ascending),
    each level (price, amount in base units); ts_ms: epoch ms."""

    symbol: str
    ts_ms: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]

    @property
    def mid(self) -> float:
        return (self.bids[0][0] + self.asks[0][0]) / 2.0

    @property
    def spread_bps(self) -> float:
        """Best ask minus best bid, in basis points of the mid."""
        return (self.asks[0][0] - self.bids[0][0]) / self.mid * 10_000.0

    def as_ccxt(self) -> dict[str, object]:
        """The dict ccxt's fetch_order_book returns (levels as [price, amount] lists)."""
        return {
            "symbol": self.symbol,
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
            "timestamp": self.ts_ms,
            "datetime": None,
            "nonce": None,
        }


def synthetic_order_book(
    *,
    symbol: str,
    mid: float,
    ts_ms: int,
    seed: int,
    levels: int = 50,
    spread_bps: float = 2.0,
    tick_bps: float = 1.0,
    top_amount: float = 5.0,
    depth_decay_bps: float = 30.0,
) -> OrderBook:
    """A plausible book around `mid`: best bid and ask about `spread_bps` apart (jittered x0.6-1.6), then a
    level every ~`tick_bps` (basis points of mid, jittered); the amount resting at a level decays with its
    distance d (bps) from the mid: top_amount x exp(-d / depth_decay_bps) x lognormal noise (base units)."""
    if mid <= 0 or not math.isfinite(mid) or levels < 1:
        raise InvalidDataError(f"cannot build an order book around mid {mid} with {levels} levels")
    rng = np.random.default_rng(seed)
    half_spread = 0.5 * spread_bps * rng.uniform(0.6, 1.6)

    def side(sign: float) -> tuple[tuple[float, float], ...]:
        steps = tick_bps * rng.uniform(0.5, 1.5, levels)
        distance = half_spread + np.concatenate([[0.0], np.cumsum(steps)[:-1]])
        price = mid * (1.0 + sign * distance / 10_000.0)
        amount = top_amount * np.exp(-distance / depth_decay_bps) * rng.lognormal(0.0, 0.4, levels)
        return tuple(zip(price.tolist(), amount.tolist(), strict=True))

    return OrderBook(symbol=symbol, ts_ms=ts_ms, bids=side(-1.0), asks=side(1.0))
