"""Seeded candle builders for the signal-side unit tests: random walks and hand-built Fibonacci setups.

Every candle has the same high-low range (``bar_range``) unless a body is larger, and opens at the previous
close, so ATR stays close to ``bar_range`` and the zigzag threshold (2.5 ATR by default) is predictable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

MINUTE_MS = 60_000
START_TS = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS


def from_closes(
    closes: np.ndarray,
    *,
    volumes: np.ndarray | None = None,
    bar_range: float = 1.0,
    start_ts: int = START_TS,
    step_ms: int = MINUTE_MS,
    first_open: float | None = None,
) -> pl.DataFrame:
    """Candles whose closes are ``closes``: open = previous close, wicks pad each bar to ``bar_range``."""
    closes = np.asarray(closes, dtype=np.float64)
    opens = np.concatenate([[closes[0] if first_open is None else first_open], closes[:-1]])
    top, bottom = np.maximum(opens, closes), np.minimum(opens, closes)
    wick = np.maximum(0.0, bar_range - (top - bottom)) / 2
    n = closes.shape[0]
    return pl.DataFrame(
        {
            "ts": start_ts + step_ms * np.arange(n, dtype=np.int64),
            "open": opens,
            "high": top + wick,
            "low": bottom - wick,
            "close": closes,
            "volume": np.full(n, 1000.0) if volumes is None else np.asarray(volumes, dtype=np.float64),
        }
    )


def make_candles(
    n: int,
    *,
    seed: int = 0,
    start_price: float = 100.0,
    drift: float = 0.0,
    volatility: float = 0.002,
    step_ms: int = MINUTE_MS,
    symbol: str | None = None,
) -> pl.DataFrame:
    """A seeded geometric random walk of ``n`` candles (per-bar log-return drift and volatility)."""
    rng = np.random.default_rng(seed)
    closes = start_price * np.exp(np.cumsum(rng.normal(drift, volatility, n)))
    opens = np.concatenate([[start_price], closes[:-1]])
    wick = np.abs(rng.normal(0, volatility / 2, (2, n))) * closes
    frame = pl.DataFrame(
        {
            "ts": START_TS + step_ms * np.arange(n, dtype=np.int64),
            "open": opens,
            "high": np.maximum(opens, closes) + wick[0],
            "low": np.minimum(opens, closes) - wick[1],
            "close": closes,
            "volume": rng.lognormal(7.0, 0.5, n),
        }
    )
    return frame if symbol is None else frame.with_columns(pl.lit(symbol).alias("symbol"))


@dataclass(frozen=True)
class PullbackSetup:
    """A built setup: the candles, the designed swing low/high (prices and bars) and the target level."""

    candles: pl.DataFrame
    swing_low: float
    swing_low_index: int
    swing_high: float
    swing_high_index: int
    level_price: float


def make_pullback_setup(*, rising_volume: bool = True, ema_order: bool = True, seed: int = 7) -> PullbackSetup:
    """A long setup that ends exactly on the 0.618 retracement of a clean impulse leg.

    A 600-bar trend (up when ``ema_order``, down otherwise, so the EMAs stack the wrong way), a dip that
    makes the swing low, a 25-bar impulse to the swing high and a 14-bar pullback to the 0.618 level. Volume
    rises through the pullback to 2.5x the usual (or falls to 0.5x when ``rising_volume`` is False).
    """
    rng = np.random.default_rng(seed)
    unit = 1.0  # bar range; every move below is in these units
    base_step = 0.3 if ema_order else -0.3
    base = (200.0 if ema_order else 400.0) + np.cumsum(base_step + rng.normal(0, 0.15, 600))
    dip = base[-1] - np.linspace(0.8, 8.0, 10)
    impulse = dip[-1] + np.linspace(0.8, 20.0, 25)
    prefix = from_closes(np.concatenate([base, dip, impulse]), bar_range=unit)
    # Swing extremes as the built candles have them (bars open at the previous close, so ties are possible:
    # the zigzag keeps the first of equal extremes, and so does argmin/argmax).
    low_index = 600 + int(np.argmin(prefix["low"].to_numpy()[600:]))
    high_index = 600 + int(np.argmax(prefix["high"].to_numpy()[600:]))
    low, high = float(prefix["low"][low_index]), float(prefix["high"][high_index])
    level = high - 0.618 * (high - low)
    pullback = impulse[-1] + np.linspace(0.0, 1.0, 15)[1:] * (level - impulse[-1])
    closes = np.concatenate([base, dip, impulse, pullback])
    volumes = np.asarray(1000.0 * (1 + 0.05 * rng.random(closes.shape[0])), dtype=np.float64)
    ramp = np.linspace(1.0, 2.5, 14) if rising_volume else np.linspace(1.0, 0.5, 14)
    volumes[-14:] = 1000.0 * ramp
    return PullbackSetup(
        candles=from_closes(closes, volumes=volumes, bar_range=unit),
        swing_low=low,
        swing_low_index=low_index,
        swing_high=high,
        swing_high_index=high_index,
        level_price=level,
    )
