"""Indicator wrapper overhead: raw TA-Lib on numpy arrays vs ``domain.indicators.with_indicators`` on polars.

Cases: one series of 1,000,000 candles and 20 series of 50,000 (one frame with a ``symbol`` column, contiguous
and interleaved). "six" = RSI14, EMA20/50/200, ATR14, volume ratio 20 (the issue's set); "full" adds ADX14,
ER20 and the ATR ratio the signal path uses. Best of several runs (the machine is shared: compare ratios from the
same run, not absolute times). Target: wrapper / raw <= 1.3.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import polars as pl
import talib

from domain.indicators import IndicatorConfig, efficiency_ratio, with_indicators

SIX = IndicatorConfig(adx_period=None, er_period=None, atr_ratio_period=None)
FULL = IndicatorConfig()
REPEAT = 15


def _candles(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, 5e-4, (2, n))) * close
    return pl.DataFrame(
        {
            "ts": 60_000 * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) + wick[0],
            "low": np.minimum(open_, close) - wick[1],
            "close": close,
            "volume": rng.lognormal(7.0, 0.5, n),
        }
    )


def _raw(arrays: dict[str, np.ndarray], *, full: bool) -> list[np.ndarray]:
    """The same indicators straight from TA-Lib on numpy arrays: the floor the wrapper is measured against."""
    h, lo, c, v = arrays["high"], arrays["low"], arrays["close"], arrays["volume"]
    atr = talib.ATR(h, lo, c, 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = [talib.RSI(c, 14), talib.EMA(c, 20), talib.EMA(c, 50), talib.EMA(c, 200), atr, v / talib.SMA(v, 20)]
        if full:
            out += [talib.ADX(h, lo, c, 14), efficiency_ratio(c, 20), atr / talib.SMA(atr, 100)]
    return out


def _best_pair(raw: Callable[[], object], wrapped: Callable[[], object]) -> tuple[float, float]:
    """Best-of-REPEAT seconds of each, runs alternated so background load hits both alike."""
    raw(), wrapped()  # warm caches and lazy imports
    best = [float("inf"), float("inf")]
    for _ in range(REPEAT):
        for k, fn in enumerate((raw, wrapped)):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best[0], best[1]


def _arrays(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {c: np.ascontiguousarray(frame[c].to_numpy()) for c in ("high", "low", "close", "volume")}


def _row(label: str, raw_s: float, wrapped_s: float) -> str:
    return f"{label:<44} {raw_s * 1e3:>9.1f} {wrapped_s * 1e3:>11.1f} {wrapped_s / raw_s:>7.2f}x"


def main() -> None:
    """Print raw TA-Lib vs wrapper times (ms) and their ratio for each case."""
    one = _candles(1_000_000, seed=1)
    parts = [_candles(50_000, seed=10 + k).with_columns(pl.lit(f"S{k:02d}").alias("symbol")) for k in range(20)]
    # One chunk per column, as a frame read from the database or a file arrives; a frame glued from many
    # pieces pays one copy per column when its columns are handed to numpy.
    many = pl.concat(parts).rechunk()
    interleaved = many.sort("ts", "symbol")
    one_arrays = _arrays(one)
    part_arrays = [_arrays(p) for p in parts]

    print(f"{'case':<44} {'raw ms':>9} {'wrapper ms':>11} {'ratio':>8}")
    for name, cfg, full in (("six", SIX, False), ("full", FULL, True)):
        # The lambdas run inside each iteration only (B023 is about late binding after the loop).
        raw_one, wrapped = _best_pair(
            lambda: _raw(one_arrays, full=full),  # noqa: B023
            lambda: with_indicators(one, config=cfg),  # noqa: B023
        )
        print(_row(f"1 x 1,000,000 candles, {name}", raw_one, wrapped))
        raw_many, wrapped = _best_pair(
            lambda: [_raw(a, full=full) for a in part_arrays],  # noqa: B023
            lambda: with_indicators(many, config=cfg),  # noqa: B023
        )
        print(_row(f"20 x 50,000 candles (contiguous), {name}", raw_many, wrapped))
        raw_many, wrapped = _best_pair(
            lambda: [_raw(a, full=full) for a in part_arrays],  # noqa: B023
            lambda: with_indicators(interleaved, config=cfg),  # noqa: B023
        )
        print(_row(f"20 x 50,000 candles (interleaved rows), {name}", raw_many, wrapped))
    print("target: ratio <= 1.30 (raw = TA-Lib on ready numpy arrays per series; wrapper = polars in/out)")


if __name__ == "__main__":
    main()
