"""Technical indicators on candle frames: RSI, EMA, ATR, volume ratio, ADX and efficiency ratio.

Input frames follow the candle schema (``ts`` Int64 ms of the candle open, ``open``/``high``/``low``/
``close``/``volume`` Float64), optionally with a ``symbol`` column holding many series. Each series must be in
ascending ``ts`` order; series are computed separately and never mixed (a symbol's first bars never see the
previous symbol's last bars). Output frames are the input frame, rows in the same order, plus one Float64
column per indicator, NaN during an indicator's warm-up.

The standard indicators come from TA-Lib (its C loops are the fastest option measured here, see
PERF_NOTES.md); this module only moves columns between polars and numpy and slices per series, so the
wrapper costs little over raw TA-Lib. TA-Lib's conventions apply: Wilder smoothing for RSI/ATR/ADX seeded with
a simple average of the first ``period`` values, EMAs seeded with an SMA, and the value at bar ``t`` depends on
bars ``[0, t]`` only (no look-ahead).

Column names carry their period so a frame is self-describing, e.g. ``rsi_14``, ``ema_200``, ``atr_14``,
``volume_ratio_20``, ``adx_14``, ``er_20``, ``atr_ratio_100``; :class:`IndicatorConfig` spells them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import polars as pl
import talib

from domain.errors import InvalidDataError

__all__ = [
    "FloatArray",
    "IndicatorConfig",
    "efficiency_ratio",
    "with_adx",
    "with_atr",
    "with_ema",
    "with_indicators",
    "with_rsi",
    "with_volume_ratio",
]

FloatArray = npt.NDArray[np.float64]
_SeriesFn = Callable[[Mapping[str, FloatArray]], dict[str, FloatArray]]


@dataclass(frozen=True, kw_only=True)
class IndicatorConfig:
    """Periods (in bars) of every indicator :func:`with_indicators` adds; ``None`` leaves one out.

    ``atr_ratio_period`` adds ATR divided by its own simple average over that many bars (1.0 = usual
    volatility for this series), the scorer's volatility context.
    """

    rsi_period: int = 14
    ema_periods: tuple[int, ...] = (20, 50, 200)
    atr_period: int = 14
    volume_period: int = 20
    adx_period: int | None = 14
    er_period: int | None = 20
    atr_ratio_period: int | None = 100

    def __post_init__(self) -> None:
        periods = [self.rsi_period, self.atr_period, self.volume_period, *self.ema_periods]
        periods += [p for p in (self.adx_period, self.er_period, self.atr_ratio_period) if p is not None]
        if any(p < 2 for p in periods):
            raise InvalidDataError(f"indicator periods must be >= 2 bars, got {periods}")

    @property
    def rsi_column(self) -> str:
        return f"rsi_{self.rsi_period}"

    @property
    def ema_columns(self) -> tuple[str, ...]:
        return tuple(f"ema_{p}" for p in self.ema_periods)

    @property
    def atr_column(self) -> str:
        return f"atr_{self.atr_period}"

    @property
    def volume_ratio_column(self) -> str:
        return f"volume_ratio_{self.volume_period}"

    @property
    def adx_column(self) -> str | None:
        return None if self.adx_period is None else f"adx_{self.adx_period}"

    @property
    def er_column(self) -> str | None:
        return None if self.er_period is None else f"er_{self.er_period}"

    @property
    def atr_ratio_column(self) -> str | None:
        return None if self.atr_ratio_period is None else f"atr_ratio_{self.atr_ratio_period}"


def efficiency_ratio(close: FloatArray, period: int) -> FloatArray:
    """Kaufman's efficiency ratio over ``period`` bars: |net change| / sum of |bar-to-bar changes|, in [0, 1].

    1 means price moved in a straight line (trend), near 0 means it went back and forth (range). NaN for the
    first ``period`` bars and where price did not move at all (0/0). TA-Lib has no ER function (KAMA uses it
    internally), so it is built from TA-Lib's rolling SUM over numpy differences.
    """
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] <= period:
        return out
    step = np.abs(np.diff(close))
    path = talib.SUM(step, period)  # path[i] covers changes i-period+1..i, i.e. closes i-period+1..i+1
    net = np.abs(close[period:] - close[:-period])
    moved = path[period - 1 :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[period:] = np.where(moved > 0, net / moved, np.nan)
    return out


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """numerator / denominator, NaN where the denominator is not positive (e.g. a zero-volume stretch).

    Divides in place into ``denominator`` (a fresh TA-Lib output nobody else holds) to spare an allocation.
    """
    unusable = ~(denominator > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(numerator, denominator, out=denominator)
    denominator[unusable] = np.nan
    return denominator


def _indicator_fn(config: IndicatorConfig) -> tuple[tuple[str, ...], _SeriesFn]:
    """The input columns ``config`` needs and a function computing all its indicators on one series."""

    def compute(cols: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
        close = cols["close"]
        out: dict[str, FloatArray] = {config.rsi_column: talib.RSI(close, config.rsi_period)}
        for period, name in zip(config.ema_periods, config.ema_columns, strict=True):
            out[name] = talib.EMA(close, period)
        atr = talib.ATR(cols["high"], cols["low"], close, config.atr_period)
        out[config.atr_column] = atr
        volume = cols["volume"]
        out[config.volume_ratio_column] = _ratio(volume, talib.SMA(volume, config.volume_period))
        if config.adx_period is not None and config.adx_column is not None:
            out[config.adx_column] = talib.ADX(cols["high"], cols["low"], close, config.adx_period)
        if config.er_period is not None and config.er_column is not None:
            out[config.er_column] = efficiency_ratio(close, config.er_period)
        if config.atr_ratio_period is not None and config.atr_ratio_column is not None:
            # TA-Lib skips the leading NaNs of the ATR warm-up, so the baseline starts once ATR exists.
            out[config.atr_ratio_column] = _ratio(atr, talib.SMA(atr, config.atr_ratio_period))
        return out

    return ("close", "high", "low", "volume"), compute


_MAX_CONTIGUOUS_RUNS = 4096


def _series_bounds(candles: pl.DataFrame) -> tuple[npt.NDArray[np.int64] | None, list[tuple[int, int]]]:
    """(row order that makes every symbol contiguous, or None when it already is; [start, end) per series)."""
    n = candles.height
    if "symbol" not in candles.columns or n == 0:
        return None, [(0, n)]
    symbol = candles["symbol"]
    runs = symbol.rle()
    order: npt.NDArray[np.int64] | None = None
    # Many runs means interleaved rows (or very many symbols, which the sorted path handles just as well).
    if runs.len() > _MAX_CONTIGUOUS_RUNS or runs.struct.field("value").n_unique() != runs.len():
        # Interleaved symbols: a stable sort by symbol code keeps each series in its row order; results are
        # scattered back so the output keeps the input's row order.
        codes = symbol.cast(pl.Categorical).to_physical().to_numpy()
        if codes.max() < 2**16:
            codes = codes.astype(np.uint16)  # numpy radix-sorts 16-bit keys: linear time
        order = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(np.diff(codes[order])) + 1
    else:
        starts = np.cumsum(runs.struct.field("len").to_numpy()[:-1])
    edges = [0, *starts.tolist(), n]
    return order, list(pairwise(edges))


def _apply_per_series(candles: pl.DataFrame, needs: tuple[str, ...], fn: _SeriesFn) -> pl.DataFrame:
    """Run ``fn`` on every series' numpy slices and append its columns to ``candles`` (input row order)."""
    missing = [c for c in (*needs, "ts") if c not in candles.columns]
    if missing:
        raise InvalidDataError(f"candle frame lacks column(s) {missing}; has {candles.columns}")
    order, bounds = _series_bounds(candles)
    cols = {c: candles[c].cast(pl.Float64).to_numpy() for c in needs}
    ts = candles["ts"].to_numpy()
    if order is not None:
        cols = {c: a[order] for c, a in cols.items()}
        ts = ts[order]
    ascending = ts[1:] > ts[:-1]
    for _, end in bounds[:-1]:
        ascending[end - 1] = True  # a new series may start earlier than the previous one ended
    if not bool(ascending.all()):
        raise InvalidDataError("candles must be in strictly ascending ts order within each series")
    parts = [fn({c: a[start:end] for c, a in cols.items()}) for start, end in bounds]
    names = list(parts[0])
    if order is None:
        # Each series' TA-Lib outputs become one chunk of the column: no copy into a combined array.
        columns = [
            pl.concat([pl.Series(name, part[name], dtype=pl.Float64) for part in parts], rechunk=False)
            for name in names
        ]
    else:
        columns = []
        for name in names:
            values = np.empty(candles.height)
            values[order] = np.concatenate([part[name] for part in parts])
            columns.append(pl.Series(name, values, dtype=pl.Float64))
    return candles.with_columns(columns)


def with_indicators(candles: pl.DataFrame, *, config: IndicatorConfig | None = None) -> pl.DataFrame:
    """``candles`` plus every indicator of ``config`` (default: RSI14, EMA20/50/200, ATR14, volume ratio 20,
    ADX14, ER20, ATR ratio 100), computed per ``symbol`` when that column exists.

    Raises:
        InvalidDataError: a needed column is missing or ``ts`` is not strictly ascending within a series.
    """
    needs, fn = _indicator_fn(config or IndicatorConfig())
    return _apply_per_series(candles, needs, fn)


def with_rsi(candles: pl.DataFrame, *, period: int = 14) -> pl.DataFrame:
    """``candles`` plus ``rsi_{period}``: Wilder's RSI on close, 0-100, NaN for the first ``period`` bars."""
    return _apply_per_series(candles, ("close",), lambda c: {f"rsi_{period}": talib.RSI(c["close"], period)})


def with_ema(candles: pl.DataFrame, *, periods: tuple[int, ...] = (20, 50, 200)) -> pl.DataFrame:
    """``candles`` plus ``ema_{p}`` per period: EMA of close (alpha 2/(p+1)), seeded with an SMA of p bars."""
    return _apply_per_series(candles, ("close",), lambda c: {f"ema_{p}": talib.EMA(c["close"], p) for p in periods})


def with_atr(candles: pl.DataFrame, *, period: int = 14) -> pl.DataFrame:
    """``candles`` plus ``atr_{period}``: Wilder's average true range in price units."""
    return _apply_per_series(
        candles,
        ("close", "high", "low"),
        lambda c: {f"atr_{period}": talib.ATR(c["high"], c["low"], c["close"], period)},
    )


def with_volume_ratio(candles: pl.DataFrame, *, period: int = 20) -> pl.DataFrame:
    """``candles`` plus ``volume_ratio_{period}``: volume / simple average of the last ``period`` volumes
    (the current bar included), 1.0 = usual volume; NaN where that average is 0."""
    return _apply_per_series(
        candles,
        ("volume",),
        lambda c: {f"volume_ratio_{period}": _ratio(c["volume"], talib.SMA(c["volume"], period))},
    )


def with_adx(candles: pl.DataFrame, *, period: int = 14) -> pl.DataFrame:
    """``candles`` plus ``adx_{period}``: Wilder's average directional index, 0-100 trend strength
    (direction-free), first value at bar ``2*period - 1``."""
    return _apply_per_series(
        candles,
        ("close", "high", "low"),
        lambda c: {f"adx_{period}": talib.ADX(c["high"], c["low"], c["close"], period)},
    )
