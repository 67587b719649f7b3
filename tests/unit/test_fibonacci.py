"""Zigzag swings (confirmation, no look-ahead), Fibonacci levels, zones, extensions and confluence."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from domain.errors import InvalidDataError
from domain.fibonacci import FibConfig, LevelKind, SwingKind, analyze_fibonacci, zigzag
from tests.unit.candle_factory import from_closes, make_candles, make_pullback_setup


def path(*pivots: float, step: float = 0.8, flat: int = 30) -> np.ndarray:
    """Closes: ``flat`` bars at the first pivot (ATR warm-up), then straight lines between the pivots."""
    closes = [pivots[0]] * flat
    for a, b in itertools.pairwise(pivots):
        count = max(1, round(abs(b - a) / step))
        closes += list(np.linspace(a, b, count + 1)[1:])
    return np.asarray(closes)


def test_zigzag_confirms_at_the_first_close_beyond_the_threshold() -> None:
    high = np.array([10, 11, 12, 11.5, 10.2, 9.9, 11.0, 12.5])
    low = high - 0.2
    close = high - 0.1
    swings, pending = zigzag(high, low, close, np.full(8, 1.5))
    # Start: the lowest low (9.8 at bar 0) is confirmed once a close is 1.5 above it (bar 2: 11.9).
    # The high at bar 2 (12) is confirmed at bar 4 (close 10.1 <= 12 - 1.5), the low at bar 5 (9.7) at bar 7.
    assert swings.kind.tolist() == [-1, 1, -1]
    assert swings.index.tolist() == [0, 2, 5]
    assert swings.confirmed_index.tolist() == [2, 4, 7]
    assert swings.price.tolist() == pytest.approx([9.8, 12.0, 9.7])
    assert np.isnan(pending[:2]).all()
    assert pending[3] == 12.0  # tracking the candidate high after the confirmed low
    assert pending[6] == pytest.approx(9.7)  # tracking the candidate low after the confirmed high


def test_zigzag_skips_bars_without_a_threshold() -> None:
    close = np.array([10.0, 20.0, 5.0, 30.0])
    threshold = np.array([np.nan, np.nan, np.nan, 1.0])
    swings, _ = zigzag(close, close, close, threshold)
    assert swings.kind.shape == (0,)


def test_swings_alternate_and_each_is_the_extreme_since_the_previous_one() -> None:
    candles = make_candles(5000, seed=5)
    fib = analyze_fibonacci(candles)
    s = fib.swings
    assert s.kind.shape[0] > 50
    assert (np.diff(s.kind) != 0).all()
    assert (s.index <= s.confirmed_index).all() and (np.diff(s.confirmed_index) > 0).all()
    high, low = candles["high"].to_numpy(), candles["low"].to_numpy()
    # A swing is the extreme from the previous swing up to its own confirmation (a later wick beyond it,
    # without a confirming close, does not move a confirmed swing).
    for j in range(1, s.kind.shape[0]):
        between = slice(s.index[j - 1], s.confirmed_index[j] + 1)
        if s.kind[j] == SwingKind.HIGH:
            assert s.price[j] == high[between].max()
        else:
            assert s.price[j] == low[between].min()


def test_swings_known_at_t_do_not_change_when_the_future_is_appended() -> None:
    candles = make_candles(3000, seed=21)
    full = analyze_fibonacci(candles)
    rng = np.random.default_rng(0)
    for t in sorted(rng.integers(100, 2999, 40).tolist()):
        head = analyze_fibonacci(candles.head(t + 1))
        assert head.swings_confirmed_by(t) == full.swings_confirmed_by(t)
        assert head.structure_at(t) == full.structure_at(t)
        assert head.leg[t] == full.leg[t] and head.nearest[t] == full.nearest[t]


def test_threshold_scales_with_atr_multiple() -> None:
    candles = make_candles(3000, seed=8)
    tight = analyze_fibonacci(candles, config=FibConfig(atr_multiple=1.5)).swings.kind.shape[0]
    wide = analyze_fibonacci(candles, config=FibConfig(atr_multiple=4.0)).swings.kind.shape[0]
    floor = analyze_fibonacci(candles, config=FibConfig(atr_multiple=1.5, min_move_pct=0.05)).swings
    assert tight > 2 * wide
    assert floor.kind.shape[0] < tight


def test_pullback_structure_levels_zones_and_targets() -> None:
    setup = make_pullback_setup()
    fib = analyze_fibonacci(setup.candles)
    last = setup.candles.height - 1
    s = fib.structure_at(last)
    assert s is not None
    assert s.leg == 1
    assert (s.origin.index, s.origin.price) == (setup.swing_low_index, setup.swing_low)
    assert (s.extreme.index, s.extreme.price) == (setup.swing_high_index, setup.swing_high)
    assert s.extreme.confirmed_index > s.extreme.index  # confirmed by later candles only
    span = setup.swing_high - setup.swing_low
    assert [lv.ratio for lv in s.retracements] == [0.236, 0.382, 0.5, 0.618, 0.786]
    for level in s.retracements:
        assert level.kind is LevelKind.RETRACEMENT
        assert level.price == pytest.approx(setup.swing_high - level.ratio * span)
        # Zones are +-0.5 ATR wide (ATR is 1.0 with these candles).
        assert level.zone_high - level.zone_low == pytest.approx(2 * 0.5 * s.atr)
        assert s.atr == pytest.approx(1.0)
    assert [lv.price for lv in s.extensions] == pytest.approx(
        [setup.swing_low + e * span for e in (1.272, 1.618, 2.618)]
    )
    assert all(lv.kind is LevelKind.EXTENSION for lv in s.extensions)
    nearest = s.nearest_retracement(setup.candles["close"][-1])
    assert nearest.ratio == 0.618 and nearest.price == pytest.approx(setup.level_price)
    assert fib.distance[last] == pytest.approx(0.0, abs=1e-12)


def test_structure_is_void_once_price_breaks_the_origin() -> None:
    closes = path(100, 120, 108, 126, 104)  # the last leg falls through the 108 low of the up leg 108 -> 126
    fib = analyze_fibonacci(from_closes(closes))
    n = closes.shape[0]
    before = int(np.argmin(np.abs(closes - 112) + (np.arange(n) < n - 20) * 1e9))
    assert fib.leg[before] == 1
    assert fib.leg[n - 1] == 0 and fib.structure_at(n - 1) is None


def test_confluence_with_an_earlier_swing_raises_strength() -> None:
    # Swing high at ~120, then the leg 110 -> 130 whose 0.5 retracement is ~120: one touch.
    closes = path(100, 120, 110, 130, 125)
    fib = analyze_fibonacci(from_closes(closes))
    s = fib.structure_at(closes.shape[0] - 1)
    assert s is not None and s.leg == 1
    by_ratio = {lv.ratio: lv for lv in s.retracements}
    assert by_ratio[0.5].touches == 1
    assert by_ratio[0.5].strength == pytest.approx(0.6 * 1.15)
    assert by_ratio[0.236].touches == 0 and by_ratio[0.236].strength == pytest.approx(0.4)


def test_no_structure_without_two_swings() -> None:
    fib = analyze_fibonacci(from_closes(np.full(60, 100.0)))
    assert fib.swings.kind.shape == (0,)
    assert (fib.leg == 0).all() and fib.structure_at(59) is None


def test_one_series_only_and_config_checks() -> None:
    two = pl.concat([make_candles(50, symbol="A"), make_candles(50, symbol="B")])
    with pytest.raises(InvalidDataError, match="one series"):
        analyze_fibonacci(two)
    with pytest.raises(InvalidDataError, match="atr_99"):
        analyze_fibonacci(make_candles(50), atr_column="atr_99")
    with pytest.raises(InvalidDataError):
        FibConfig(retracement_weights=(1.0,))
    with pytest.raises(InvalidDataError):
        FibConfig(atr_multiple=0)
