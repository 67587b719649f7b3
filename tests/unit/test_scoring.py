"""The 0-100 scorer: bounds, continuity, the component curves, win-rate shrinkage and tiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidDataError
from domain.scoring import (
    COMPONENTS,
    ScoreWeights,
    ScoringConfig,
    WinRecord,
    market_fraction,
    score_total,
    shrunk_win_rate,
    technical_fraction,
    to_signal_score,
    volatility_fraction,
    volume_fraction,
    win_rate_fraction,
)
from domain.tiers import TIER_SIZE_MULTIPLIER, Tier, tier_for_score

CFG = ScoringConfig()
any_float = st.floats(allow_nan=True, allow_infinity=True)


def arr(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def technical(direction: int = 1, **overrides: float) -> float:
    values = {
        "fib_distance": 0.0,
        "tolerance": 0.005,
        "strength": 0.7,
        "rsi": 35.0,
        "ema_fast": 102.0,
        "ema_mid": 100.0,
        "ema_slow": 95.0,
        "atr": 1.0,
    } | overrides
    out = technical_fraction(
        direction=np.array([direction], dtype=np.int64), config=CFG, **{k: arr(v) for k, v in values.items()}
    )
    return float(out[0])


@given(st.fixed_dictionaries({name: any_float for name in COMPONENTS}))
def test_score_is_always_within_0_and_100(fractions: dict[str, float]) -> None:
    score = to_signal_score(fractions, CFG)
    assert 0.0 <= score.total <= 100.0
    assert sum(score.points.values()) == pytest.approx(score.total)
    assert score.tier is tier_for_score(score.total)


@given(
    st.lists(st.floats(0, 1), min_size=5, max_size=5),
    st.lists(st.floats(0, 1000), min_size=5, max_size=5).filter(lambda w: sum(w) > 1e-3),
)
def test_any_weights_keep_the_score_in_range(fractions: list[float], weights: list[float]) -> None:
    cfg = ScoringConfig(weights=ScoreWeights(**dict(zip(COMPONENTS, weights, strict=True))))
    total = score_total({k: arr(v) for k, v in zip(COMPONENTS, fractions, strict=True)}, cfg)[0]
    assert 0.0 <= total <= 100.0 + 1e-9


@given(st.floats(-50, 150), st.floats(-50, 150))
def test_tier_is_monotone_in_the_score(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert TIER_SIZE_MULTIPLIER[tier_for_score(low)] <= TIER_SIZE_MULTIPLIER[tier_for_score(high)]


def test_tier_boundaries() -> None:
    assert [tier_for_score(s) for s in (59.99, 60.0, 74.99, 75.0)] == [
        Tier.SKIP,
        Tier.REDUCED,
        Tier.REDUCED,
        Tier.FULL,
    ]


def test_full_marks_give_100_and_default_weights_are_the_issue_points() -> None:
    score = to_signal_score(dict.fromkeys(COMPONENTS, 1.0), CFG)
    assert score.total == pytest.approx(100.0) and score.tier is Tier.FULL
    assert dict(score.points) == pytest.approx(
        {"technical": 30, "volume": 20, "volatility": 20, "win_rate": 15, "market": 15}
    )
    with pytest.raises(InvalidDataError):
        ScoreWeights(technical=-1)


def test_volume_component_is_a_continuous_ramp() -> None:
    values = volume_fraction(arr(0.5, 0.8, 1.1, 1.4, 1.7, 2.0, 3.0, math.nan), CFG)
    assert values.tolist() == pytest.approx([0, 0, 0.25, 0.5, 0.75, 1, 1, 0])
    assert (np.diff(values[:7]) >= 0).all()


def test_volatility_component_peaks_at_usual_volatility_and_is_symmetric_in_log() -> None:
    values = volatility_fraction(arr(1.0, 2.0, 0.5, 4.0, 0.0, math.nan), CFG)
    assert values[0] == 1.0
    assert values[1] == pytest.approx(values[2]) and 0 < values[1] < 1
    assert values[3] < values[1] and values[4] == 0.0 and values[5] == 0.0


def test_market_component_grows_with_trend_strength() -> None:
    values = market_fraction(arr(10, 20, 30, 40, 40), arr(0.05, 0.2, 0.3, 0.6, math.nan), CFG)
    assert values[0] == 0.0 and values[3] == pytest.approx(1.0)
    assert 0 < values[1] < values[2] < values[3]
    assert values[4] == pytest.approx(0.7)  # ER unknown: only the ADX share


def test_technical_component_rewards_each_element_continuously() -> None:
    best = technical()
    assert best == pytest.approx((0.35 + 0.4 * 0.85 + 0.25) / 1.0)
    farther = [technical(fib_distance=d) for d in (0.0, 0.0025, 0.005, 0.0075, 0.01)]
    assert farther == sorted(farther, reverse=True) and farther[0] > farther[2] > farther[4]
    assert technical(rsi=50.0) == pytest.approx(best - 0.25 * 0.5)
    assert technical(rsi=60.0) < technical(rsi=50.0) < best
    # EMA disorder loses the EMA share and halves the rest (the trend gate).
    assert technical(ema_fast=90.0, ema_mid=95.0, ema_slow=100.0) == pytest.approx((0.4 * 0.85 + 0.25) / 2)
    assert technical(direction=-1, rsi=65.0, ema_fast=90.0, ema_mid=95.0, ema_slow=100.0) == pytest.approx(best)
    assert technical(direction=0) == 0.0


def test_win_rate_is_shrunk_toward_the_prior_with_few_trades() -> None:
    none = shrunk_win_rate(WinRecord(), WinRecord(), CFG)
    assert none == pytest.approx(0.5)
    few = shrunk_win_rate(WinRecord(3, 3), WinRecord(3, 3), CFG)
    many = shrunk_win_rate(WinRecord(300, 400), WinRecord(150, 200), CFG)
    assert 0.5 < few < 0.8
    assert many == pytest.approx(0.75, abs=0.01)
    # A setup with no history of its own inherits the symbol's (shrunk) rate.
    symbol_only = shrunk_win_rate(WinRecord(70, 100), WinRecord(), CFG)
    assert symbol_only == pytest.approx((70 + 5) / 110)
    assert win_rate_fraction(none, CFG) == pytest.approx(0.5)
    assert win_rate_fraction(0.2, CFG) == 0.0 and win_rate_fraction(0.9, CFG) == 1.0
    with pytest.raises(InvalidDataError):
        WinRecord(wins=3, trades=2)
