"""Indicators against plain-Python textbook references, per-symbol isolation, row order and no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from domain.errors import InvalidDataError
from domain.indicators import (
    IndicatorConfig,
    efficiency_ratio,
    with_adx,
    with_atr,
    with_ema,
    with_indicators,
    with_rsi,
    with_volume_ratio,
)
from tests.unit.candle_factory import make_candles

NAN = math.nan
TOL = 1e-9


# ---- independent references: textbook definitions written as plain loops ----


def rsi_ref(close: list[float], p: int) -> list[float]:
    out = [NAN] * len(close)
    if len(close) <= p:
        return out
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    avg_gain, avg_loss = sum(gains[:p]) / p, sum(losses[:p]) / p
    out[p] = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    for i in range(p + 1, len(close)):
        avg_gain = (avg_gain * (p - 1) + gains[i - 1]) / p
        avg_loss = (avg_loss * (p - 1) + losses[i - 1]) / p
        out[i] = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    return out


def ema_ref(values: list[float], p: int) -> list[float]:
    out = [NAN] * len(values)
    ema = sum(values[:p]) / p
    out[p - 1] = ema
    alpha = 2.0 / (p + 1)
    for i in range(p, len(values)):
        ema = alpha * values[i] + (1 - alpha) * ema
        out[i] = ema
    return out


def true_range(high: list[float], low: list[float], close: list[float], i: int) -> float:
    return max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))


def atr_ref(high: list[float], low: list[float], close: list[float], p: int) -> list[float]:
    out = [NAN] * len(close)
    atr = sum(true_range(high, low, close, i) for i in range(1, p + 1)) / p
    out[p] = atr
    for i in range(p + 1, len(close)):
        atr = (atr * (p - 1) + true_range(high, low, close, i)) / p
        out[i] = atr
    return out


def sma_ref(values: list[float], p: int) -> list[float]:
    return [NAN if i < p - 1 else sum(values[i - p + 1 : i + 1]) / p for i in range(len(values))]


def adx_ref(high: list[float], low: list[float], close: list[float], p: int) -> list[float]:
    """Wilder's ADX as in New Concepts (1978): smoothed sums seeded with the sum of the first p values."""
    n = len(close)
    plus_dm, minus_dm, tr = [0.0] * n, [0.0] * n, [0.0] * n
    for i in range(1, n):
        up, down = high[i] - high[i - 1], low[i - 1] - low[i]
        plus_dm[i] = up if up > down and up > 0 else 0.0
        minus_dm[i] = down if down > up and down > 0 else 0.0
        tr[i] = true_range(high, low, close, i)
    s_tr, s_plus, s_minus = sum(tr[1 : p + 1]), sum(plus_dm[1 : p + 1]), sum(minus_dm[1 : p + 1])
    dx = [NAN] * n
    for i in range(p, n):
        if i > p:
            s_tr = s_tr - s_tr / p + tr[i]
            s_plus = s_plus - s_plus / p + plus_dm[i]
            s_minus = s_minus - s_minus / p + minus_dm[i]
        di_plus, di_minus = 100 * s_plus / s_tr, 100 * s_minus / s_tr
        dx[i] = 100 * abs(di_plus - di_minus) / (di_plus + di_minus)
    out = [NAN] * n
    adx = sum(dx[p : 2 * p]) / p
    out[2 * p - 1] = adx
    for i in range(2 * p, n):
        adx = (adx * (p - 1) + dx[i]) / p
        out[i] = adx
    return out


def er_ref(close: list[float], p: int) -> list[float]:
    out = [NAN] * len(close)
    for i in range(p, len(close)):
        path = sum(abs(close[k] - close[k - 1]) for k in range(i - p + 1, i + 1))
        out[i] = abs(close[i] - close[i - p]) / path
    return out


@pytest.fixture(scope="module")
def candles() -> pl.DataFrame:
    return make_candles(3000, seed=11, drift=0.0001)


def _cols(frame: pl.DataFrame) -> tuple[list[float], list[float], list[float], list[float]]:
    return (frame["high"].to_list(), frame["low"].to_list(), frame["close"].to_list(), frame["volume"].to_list())


def assert_matches(actual: np.ndarray, expected: list[float], *, from_bar: int) -> None:
    """Equal to TOL from ``from_bar`` on; NaN exactly where the reference is NaN before it."""
    exp = np.asarray(expected)
    np.testing.assert_allclose(actual[from_bar:], exp[from_bar:], rtol=0, atol=TOL)
    assert np.array_equal(np.isnan(actual[:from_bar]), np.isnan(exp[:from_bar]))


def test_rsi_ema_atr_volume_ratio_match_references(candles: pl.DataFrame) -> None:
    high, low, close, volume = _cols(candles)
    out = with_indicators(candles)
    # RSI, EMA, ATR and SMA are seeded exactly like the textbook, so they agree from the first value on.
    assert_matches(out["rsi_14"].to_numpy(), rsi_ref(close, 14), from_bar=14)
    for p in (20, 50, 200):
        assert_matches(out[f"ema_{p}"].to_numpy(), ema_ref(close, p), from_bar=p - 1)
    assert_matches(out["atr_14"].to_numpy(), atr_ref(high, low, close, 14), from_bar=14)
    ratio = [v / m for v, m in zip(volume, sma_ref(volume, 20), strict=True)]
    assert_matches(out["volume_ratio_20"].to_numpy(), ratio, from_bar=19)
    assert_matches(out["er_20"].to_numpy(), er_ref(close, 20), from_bar=20)


def test_adx_matches_wilder_after_warm_up(candles: pl.DataFrame) -> None:
    high, low, close, _ = _cols(candles)
    actual = with_adx(candles)["adx_14"].to_numpy()
    expected = np.asarray(adx_ref(high, low, close, 14))
    # TA-Lib seeds its smoothed sums with p-1 bars instead of p; the difference decays as (13/14)^k.
    np.testing.assert_allclose(actual[800:], expected[800:], rtol=0, atol=TOL)
    assert np.isnan(actual[:27]).all() and not np.isnan(actual[27:]).any()


def test_single_indicator_functions_equal_the_combined_one(candles: pl.DataFrame) -> None:
    full = with_indicators(candles)
    assert with_rsi(candles)["rsi_14"].equals(full["rsi_14"])
    assert with_atr(candles)["atr_14"].equals(full["atr_14"])
    assert with_volume_ratio(candles)["volume_ratio_20"].equals(full["volume_ratio_20"])
    emas = with_ema(candles)
    assert all(emas[f"ema_{p}"].equals(full[f"ema_{p}"]) for p in (20, 50, 200))


def test_atr_ratio_is_atr_over_its_average(candles: pl.DataFrame) -> None:
    out = with_indicators(candles)
    atr = out["atr_14"].to_list()
    baseline = sma_ref([a for a in atr if not math.isnan(a)], 100)
    expected = [NAN] * 14 + [a / b for a, b in zip(atr[14:], baseline, strict=True)]
    assert_matches(out["atr_ratio_100"].to_numpy(), expected, from_bar=14 + 99)


def test_series_are_computed_per_symbol_without_mixing() -> None:
    parts = [make_candles(400 + 50 * k, seed=k, symbol=s) for k, s in enumerate(["AAA", "BBB", "CCC"])]
    combined = with_indicators(pl.concat(parts))
    alone = pl.concat([with_indicators(p) for p in parts])
    assert combined.equals(alone)


@pytest.mark.parametrize("rows", [300, 2500], ids=["few-runs", "over-4096-runs"])
def test_interleaved_symbols_keep_input_row_order(rows: int) -> None:
    parts = [make_candles(rows, seed=k, symbol=s) for k, s in enumerate(["AAA", "BBB"])]
    contiguous = with_indicators(pl.concat(parts))
    shuffled = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=3)
    # Rows alternate between the symbols; each symbol's own rows stay in ascending ts order.
    interleaved = shuffled.sort("ts", maintain_order=True)
    out = with_indicators(interleaved)
    assert out.select("symbol", "ts").equals(interleaved.select("symbol", "ts"))
    assert out.sort("symbol", "ts").equals(contiguous.sort("symbol", "ts"))


def test_values_at_t_do_not_depend_on_later_candles(candles: pl.DataFrame) -> None:
    full = with_indicators(candles)
    for t in (30, 250, 1234, 2998):
        head = with_indicators(candles.head(t + 1))
        assert head.equals(full.head(t + 1))


def test_unsorted_ts_is_refused(candles: pl.DataFrame) -> None:
    swapped = pl.concat([candles.slice(1, 1), candles.slice(0, 1), candles.slice(2)])
    with pytest.raises(InvalidDataError, match="ascending"):
        with_indicators(swapped)


def test_missing_column_is_refused(candles: pl.DataFrame) -> None:
    with pytest.raises(InvalidDataError, match="volume"):
        with_indicators(candles.drop("volume"))


def test_short_and_empty_frames_give_nan_columns(candles: pl.DataFrame) -> None:
    short = with_indicators(candles.head(5))
    assert short["ema_200"].is_nan().all() and short.height == 5
    empty = with_indicators(candles.head(0))
    assert empty.height == 0 and "adx_14" in empty.columns


def test_config_can_leave_indicators_out_and_refuses_silly_periods(candles: pl.DataFrame) -> None:
    cfg = IndicatorConfig(adx_period=None, er_period=None, atr_ratio_period=None)
    out = with_indicators(candles, config=cfg)
    assert not {"adx_14", "er_20", "atr_ratio_100"} & set(out.columns)
    with pytest.raises(InvalidDataError):
        IndicatorConfig(rsi_period=1)


def test_efficiency_ratio_edges() -> None:
    flat = np.full(30, 5.0)
    assert np.isnan(efficiency_ratio(flat, 10)).all()
    line = np.arange(30, dtype=np.float64)
    er = efficiency_ratio(line, 10)
    assert np.isnan(er[:10]).all() and np.allclose(er[10:], 1.0)
    assert np.isnan(efficiency_ratio(line[:5], 10)).all()


def test_zero_volume_average_gives_nan_ratio(candles: pl.DataFrame) -> None:
    quiet = candles.with_columns(pl.lit(0.0).alias("volume"))
    assert with_volume_ratio(quiet)["volume_ratio_20"].is_nan().all()
