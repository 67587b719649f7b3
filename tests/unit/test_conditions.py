"""The 7-condition validator: each condition on both sides of its threshold, confidence and rejections."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.conditions import (
    CONDITION_NAMES,
    ConditionConfig,
    MarketSnapshot,
    check_correlation,
    check_position_size,
    fib_tolerance,
    validate_conditions,
)
from domain.errors import InvalidDataError

GOOD_LONG = MarketSnapshot(
    direction=1,
    close=100.0,
    fib_ratio=0.618,
    fib_distance=0.001,
    fib_zone_half_width=0.5,  # 0.5% of price
    rsi=35.0,
    ema_fast=101.0,
    ema_mid=99.0,
    ema_slow=95.0,
    volume_ratio=2.0,
    adx=30.0,
)
GOOD_SHORT = replace(GOOD_LONG, direction=-1, rsi=65.0, ema_fast=95.0, ema_slow=101.0)


def validate(snapshot: MarketSnapshot, *, notional: float = 300.0, correlated: bool = False, **cfg: object):
    rng = np.random.default_rng(1)
    mine = rng.normal(0, 0.01, 200)
    other = mine + rng.normal(0, 0.001, 200) if correlated else rng.normal(0, 0.01, 200)
    return validate_conditions(
        snapshot,
        proposed_notional=notional,
        equity=10_000.0,
        returns=mine,
        open_position_returns={"ETH/USDT": other},
        config=ConditionConfig(**cfg),  # type: ignore[arg-type]
    )


def result(report, name: str):
    return next(r for r in report.results if r.name == name)


@pytest.mark.parametrize("snapshot", [GOOD_LONG, GOOD_SHORT], ids=["long", "short"])
def test_a_clean_setup_passes_all_seven(snapshot: MarketSnapshot) -> None:
    report = validate(snapshot)
    assert [r.name for r in report.results] == list(CONDITION_NAMES)
    assert all(r.passed for r in report.results), report.results
    assert report.confidence == 1.0 and not report.rejected and report.reasons == ()


@pytest.mark.parametrize(
    ("name", "snapshot", "value", "threshold"),
    [
        ("fib_proximity", replace(GOOD_LONG, fib_distance=0.006), 0.006, 0.005),
        ("rsi", replace(GOOD_LONG, rsi=40.5), 40.5, 40.0),
        ("rsi", replace(GOOD_SHORT, rsi=59.5), 59.5, 60.0),
        ("ema_alignment", replace(GOOD_LONG, ema_mid=94.0), -1.0, 0.0),
        ("ema_alignment", replace(GOOD_SHORT, ema_fast=99.5), -0.5, 0.0),
        ("volume", replace(GOOD_LONG, volume_ratio=1.5), 1.5, 1.5),
        ("market_structure", replace(GOOD_LONG, adx=19.9), 19.9, 20.0),
    ],
)
def test_each_market_condition_fails_just_past_its_threshold(
    name: str, snapshot: MarketSnapshot, value: float, threshold: float
) -> None:
    report = validate(snapshot)
    failed = result(report, name)
    assert not failed.passed
    assert failed.value == pytest.approx(value) and failed.threshold == pytest.approx(threshold)
    assert [r.name for r in report.failed] == [name]
    assert report.confidence == pytest.approx(6 / 7) and not report.rejected


def test_rsi_and_ema_depend_on_direction() -> None:
    flipped = replace(GOOD_LONG, direction=-1)
    report = validate(flipped)
    assert not result(report, "rsi").passed and not result(report, "ema_alignment").passed
    assert "EMA disorder" in result(report, "ema_alignment").detail


def test_fib_tolerance_is_the_atr_zone_capped_at_one_percent() -> None:
    close = np.array([100.0, 100.0])
    zone = np.array([0.3, 5.0])
    assert fib_tolerance(close, zone, ConditionConfig()).tolist() == pytest.approx([0.003, 0.01])
    assert fib_tolerance(close, zone, ConditionConfig(use_atr_zone=False)).tolist() == [0.01, 0.01]
    wide_zone = replace(GOOD_LONG, fib_zone_half_width=5.0, fib_distance=0.009)
    assert result(validate(wide_zone), "fib_proximity").passed
    assert not result(validate(replace(wide_zone, fib_distance=0.011)), "fib_proximity").passed


def test_position_size_limit() -> None:
    cfg = ConditionConfig()
    assert check_position_size(proposed_notional=500, equity=10_000, config=cfg).passed
    over = check_position_size(proposed_notional=501, equity=10_000, config=cfg)
    assert not over.passed and over.value == pytest.approx(0.0501) and "exceeds" in over.detail
    assert not check_position_size(proposed_notional=1, equity=0, config=cfg).passed


def test_correlation_with_open_positions() -> None:
    cfg = ConditionConfig()
    rng = np.random.default_rng(4)
    mine = rng.normal(0, 0.01, 300)
    independent = rng.normal(0, 0.01, 300)
    twin = mine[-250:] * 2 + rng.normal(0, 0.002, 250)  # shorter: aligned on the latest end
    mirror = -mine
    ok = check_correlation(returns=mine, open_position_returns={"A": independent}, config=cfg)
    assert ok.passed and ok.value < 0.3
    bad = check_correlation(returns=mine, open_position_returns={"A": independent, "B": twin}, config=cfg)
    assert not bad.passed and bad.value > 0.9 and "B" in bad.detail
    assert not check_correlation(returns=mine, open_position_returns={"C": mirror}, config=cfg).passed
    none = check_correlation(returns=mine, open_position_returns={}, config=cfg)
    assert none.passed and none.detail == "no open positions"
    short = check_correlation(returns=mine[:5], open_position_returns={"B": twin}, config=cfg)
    assert short.passed and "fewer than" in short.detail
    flat = check_correlation(returns=mine, open_position_returns={"D": np.zeros(300)}, config=cfg)
    assert flat.passed and flat.value == 0.0


def test_confidence_below_threshold_rejects_with_every_reason() -> None:
    weak = replace(GOOD_LONG, rsi=55.0, volume_ratio=0.9, adx=12.0)
    report = validate(weak)
    assert report.confidence == pytest.approx(4 / 7)
    assert report.rejected
    assert report.reasons[0] == "confidence 0.57 < 0.60"
    assert {r.split(":")[0] for r in report.reasons[1:]} == {"rsi", "volume", "market_structure"}


def test_a_hard_limit_rejects_even_with_high_confidence() -> None:
    too_big = validate(GOOD_LONG, notional=800.0)
    assert too_big.confidence == pytest.approx(6 / 7) and too_big.rejected
    assert "hard limit failed: position_size" in too_big.reasons
    correlated = validate(GOOD_LONG, correlated=True)
    assert correlated.rejected and "hard limit failed: correlation" in correlated.reasons
    soft = validate(GOOD_LONG, notional=800.0, hard_conditions=frozenset())
    assert not soft.rejected


def test_weights_change_the_confidence() -> None:
    heavy_volume = (1.0, 1.0, 1.0, 4.0, 1.0, 1.0, 1.0)
    report = validate(replace(GOOD_LONG, volume_ratio=1.0), weights=heavy_volume)
    assert report.confidence == pytest.approx(6 / 10) and not report.rejected


def test_config_and_direction_are_checked() -> None:
    with pytest.raises(InvalidDataError):
        ConditionConfig(weights=(1.0,) * 6)
    with pytest.raises(InvalidDataError):
        ConditionConfig(hard_conditions=frozenset({"nope"}))
    with pytest.raises(InvalidDataError):
        validate(replace(GOOD_LONG, direction=0))


@given(
    rsi=st.floats(0, 100),
    volume_ratio=st.floats(0, 10),
    adx=st.floats(0, 100),
    distance=st.floats(0, 0.05),
    notional=st.floats(0, 2000),
    direction=st.sampled_from([1, -1]),
)
def test_confidence_is_a_fraction_and_rejection_follows_the_rules(
    rsi: float, volume_ratio: float, adx: float, distance: float, notional: float, direction: int
) -> None:
    snap = replace(GOOD_LONG, direction=direction, rsi=rsi, volume_ratio=volume_ratio, adx=adx, fib_distance=distance)
    report = validate(snap, notional=notional)
    assert 0.0 <= report.confidence <= 1.0
    assert report.confidence == pytest.approx(sum(r.passed for r in report.results) / 7)
    hard = any(not r.passed for r in report.results if r.name in {"position_size", "correlation"})
    assert report.rejected == (report.confidence < 0.6 or hard)
    assert bool(report.reasons) == report.rejected


def test_a_position_capped_exactly_at_the_limit_passes_despite_float_rounding() -> None:
    from domain.conditions import ConditionConfig, check_position_size

    config = ConditionConfig()
    equity, price = 10_000.0, 0.1234567
    quantity = equity * config.max_position_fraction / price  # what the sizer's cap gives
    result = check_position_size(proposed_notional=quantity * price, equity=equity, config=config)
    assert result.passed
    over = check_position_size(
        proposed_notional=equity * config.max_position_fraction * 1.001, equity=equity, config=config
    )
    assert not over.passed
