"""Sizing and the per-candle step functions of domain.execution."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidDataError
from domain.execution import (
    Bar,
    ExecutionModel,
    FillKind,
    Order,
    RiskLimits,
    Side,
    enter,
    size_position,
    step,
)
from domain.tiers import TIER_SIZE_MULTIPLIER, Tier

MIN = 60_000
FREE = ExecutionModel(slippage_bps=0.0, fee_bps=0.0)


def bar(i: int, o: float, h: float, lo: float, c: float) -> Bar:
    return Bar(i * MIN, o, h, lo, c)


def long_order(**kw: Any) -> Order:
    fields: dict[str, Any] = {
        "symbol": "BTC/USDT",
        "side": Side.LONG,
        "quantity": 1.0,
        "stop_price": 95.0,
        "tp1_price": 105.0,
        "tp2_price": 110.0,
        "signal_ts_ms": 0,
    }
    return Order(**(fields | kw))


# --- sizing ----------------------------------------------------------------------------------------------


def test_risk_budget_sizing_and_the_notional_cap() -> None:
    # 1% of 10,000 = 100 at risk; 2 per unit to the stop -> 50 units, but 5% of equity caps at 500 / 100 = 5
    capped = size_position(equity=10_000, entry_price=100, stop_price=98, tier=Tier.FULL)
    assert capped.quantity == pytest.approx(5.0)
    assert capped.notional_fraction == pytest.approx(0.05)
    assert "capped" in capped.reasons[0]

    wide = RiskLimits(max_position_fraction=1.0)
    full = size_position(equity=10_000, entry_price=100, stop_price=98, tier=Tier.FULL, limits=wide)
    reduced = size_position(equity=10_000, entry_price=100, stop_price=98, tier=Tier.REDUCED, limits=wide)
    assert full.quantity == pytest.approx(50.0)
    assert full.risk_amount == pytest.approx(100.0)
    assert reduced.quantity == pytest.approx(32.5)


def test_skip_tier_open_position_limit_and_lot_step_give_no_trade() -> None:
    assert size_position(equity=1e4, entry_price=100, stop_price=98, tier=Tier.SKIP).quantity == 0
    full_book = size_position(equity=1e4, entry_price=100, stop_price=98, tier=Tier.FULL, open_positions=5)
    assert full_book.quantity == 0
    assert "open positions" in full_book.reasons[0]
    tiny = size_position(
        equity=100, entry_price=50_000, stop_price=49_000, tier=Tier.FULL, limits=RiskLimits(lot_step=0.001)
    )
    assert tiny.quantity == 0


def test_sizing_rejects_a_stop_at_the_entry() -> None:
    with pytest.raises(InvalidDataError):
        size_position(equity=1e4, entry_price=100, stop_price=100, tier=Tier.FULL)


@given(
    equity=st.floats(1.0, 1e9),
    entry=st.floats(1e-4, 1e6),
    stop_distance=st.floats(1e-4, 0.9),
    tier=st.sampled_from(list(Tier)),
    risk=st.floats(1e-4, 0.1),
    cap=st.floats(1e-3, 1.0),
    lot_exp=st.integers(-8, 2) | st.none(),
    open_positions=st.integers(0, 10),
)
def test_sizing_never_exceeds_the_limits(
    equity: float,
    entry: float,
    stop_distance: float,
    tier: Tier,
    risk: float,
    cap: float,
    lot_exp: int | None,
    open_positions: int,
) -> None:
    lot = 0.0 if lot_exp is None else 10.0**lot_exp
    limits = RiskLimits(risk_per_trade=risk, max_position_fraction=cap, max_open_positions=5, lot_step=lot)
    stop = entry * (1 - stop_distance)
    sized = size_position(
        equity=equity, entry_price=entry, stop_price=stop, tier=tier, limits=limits, open_positions=open_positions
    )
    assert sized.quantity >= 0
    assert sized.notional <= cap * equity * (1 + 1e-12)
    assert sized.risk_amount <= equity * risk * TIER_SIZE_MULTIPLIER[tier] * (1 + 1e-12)
    if open_positions >= 5 or tier is Tier.SKIP:
        assert sized.quantity == 0
    if lot and sized.quantity:
        lots = sized.quantity / lot
        assert abs(lots - round(lots)) < 1e-6


# --- the step function -----------------------------------------------------------------------------------


def test_entry_fills_at_the_next_open_with_slippage_and_fee() -> None:
    model = ExecutionModel(slippage_bps=10.0, fee_bps=10.0)
    result = enter(long_order(), bar(1, 100, 101, 99, 100), model)
    assert result.position is not None
    (fill,) = result.fills
    assert fill.kind is FillKind.ENTRY
    assert fill.price == pytest.approx(100.1)
    assert fill.fee == pytest.approx(100.1 * 0.001)


def test_entry_on_the_signal_candle_is_refused() -> None:
    with pytest.raises(InvalidDataError, match="after the signal"):
        enter(long_order(signal_ts_ms=MIN), bar(1, 100, 101, 99, 100))


def test_entry_beyond_the_stop_voids_the_setup() -> None:
    result = enter(long_order(), bar(1, 94, 96, 93, 95))
    assert result.position is None
    assert result.fills == ()
    assert result.void_reason is not None


def test_stop_is_assumed_first_when_stop_and_targets_share_a_candle() -> None:
    opened = enter(long_order(), bar(1, 100, 101, 99, 100), FREE)
    assert opened.position is not None
    result = step(opened.position, bar(2, 100, 111, 94, 100), FREE)
    assert result.closed is not None
    assert [f.kind for f in result.fills] == [FillKind.STOP]
    assert result.closed.net_pnl == pytest.approx(-5.0)
    assert result.closed.r_multiple == pytest.approx(-1.0)


def test_tp1_closes_half_and_moves_the_stop_to_break_even() -> None:
    model = ExecutionModel(slippage_bps=0.0, fee_bps=10.0)
    opened = enter(long_order(), bar(1, 100, 101, 99, 100), model)
    assert opened.position is not None
    after_tp1 = step(opened.position, bar(2, 100, 106, 99, 105), model)
    pos = after_tp1.position
    assert pos is not None
    assert [f.kind for f in after_tp1.fills] == [FillKind.TP1]
    assert after_tp1.fills[0].quantity == pytest.approx(0.5)
    assert pos.open_quantity == pytest.approx(0.5)
    assert pos.stop_price == pos.entry_price == 100.0
    assert pos.unrealised_pnl(104.0) == pytest.approx(2.0)

    done = step(pos, bar(3, 104, 104, 99, 100), model)
    assert done.closed is not None
    assert done.closed.exit_kind is FillKind.BREAKEVEN_STOP
    assert done.fills[0].price == 100.0
    assert done.closed.gross_pnl == pytest.approx(2.5)
    fees = 0.001 * (100 + 105 * 0.5 + 100 * 0.5)
    assert done.closed.fees == pytest.approx(fees)
    assert done.closed.net_pnl == pytest.approx(2.5 - fees)
    assert done.closed.r_multiple == pytest.approx((2.5 - fees) / 5.0)


def test_tp1_and_tp2_in_one_candle() -> None:
    opened = enter(long_order(), bar(1, 100, 101, 99, 100), FREE)
    assert opened.position is not None
    done = step(opened.position, bar(2, 100, 112, 99, 111), FREE)
    assert done.closed is not None
    assert [f.kind for f in done.fills] == [FillKind.TP1, FillKind.TP2]
    assert done.closed.gross_pnl == pytest.approx(0.5 * 5 + 0.5 * 10)


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    model = ExecutionModel(slippage_bps=10.0, fee_bps=0.0)
    opened = enter(long_order(), bar(1, 100, 101, 99, 100), model)
    assert opened.position is not None
    done = step(opened.position, bar(2, 90, 92, 88, 91), model)
    assert done.closed is not None
    assert done.fills[0].price == pytest.approx(90 * 0.999)
    assert done.closed.r_multiple < -1.0


def test_short_positions_mirror_longs() -> None:
    order = long_order(side=Side.SHORT, stop_price=105.0, tp1_price=95.0, tp2_price=90.0)
    opened = enter(order, bar(1, 100, 101, 99, 100), FREE)
    assert opened.position is not None
    tp1 = step(opened.position, bar(2, 100, 101, 94, 95), FREE)
    assert tp1.position is not None
    assert tp1.position.stop_price == 100.0
    done = step(tp1.position, bar(3, 95, 96, 89, 90), FREE)
    assert done.closed is not None
    assert done.closed.exit_kind is FillKind.TP2
    assert done.closed.gross_pnl == pytest.approx(0.5 * 5 + 0.5 * 10)


def test_an_old_candle_is_refused() -> None:
    opened = enter(long_order(), bar(1, 100, 101, 99, 100), FREE)
    assert opened.position is not None
    with pytest.raises(InvalidDataError, match="not after"):
        step(opened.position, bar(1, 100, 101, 99, 100), FREE)


def test_orders_with_levels_on_the_wrong_side_are_refused() -> None:
    with pytest.raises(InvalidDataError):
        long_order(stop_price=106.0)
    with pytest.raises(InvalidDataError):
        long_order(side=Side.SHORT)
