"""The vectorised simulation (domain.trade_simulation) agrees with the step function (domain.execution)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidDataError
from domain.execution import Bar, ExecutionModel, FillKind, Order, Side, StepResult, enter, step
from domain.trade_simulation import BarArrays, simulate_trades

MIN = 60_000
FREE = ExecutionModel(slippage_bps=0.0, fee_bps=0.0)


def random_bars(seed: int, n: int) -> BarArrays:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.002, n))  # small gaps
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, n)))
    return BarArrays(np.arange(n, dtype=np.int64) * MIN, open_, high, low, close)


def random_trades(seed: int, bars: BarArrays, k: int, lot: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    n = len(bars.close)
    side = rng.choice([1, -1], k)
    sig = rng.integers(0, n, k)
    ref = bars.close[sig]
    risk = ref * rng.uniform(0.001, 0.02, k)
    stop = ref - side * risk
    tp1 = ref + side * risk * rng.uniform(0.5, 2.0, k)
    tp2 = ref + side * (np.abs(tp1 - ref) + risk * rng.choice([0.0, 0.5, 3.0], k))
    qty = rng.uniform(0.001, 3.0, k) if lot == 0 else rng.integers(1, 40, k) * lot
    return {"signal_idx": sig, "side": side, "quantity": qty, "stop": stop, "tp1": tp1, "tp2": tp2}


def replay_with_step(bars: BarArrays, t: dict[str, np.ndarray], i: int, model: ExecutionModel, lot: float):
    order = Order(
        "X",
        Side.LONG if t["side"][i] > 0 else Side.SHORT,
        float(t["quantity"][i]),
        float(t["stop"][i]),
        float(t["tp1"][i]),
        float(t["tp2"][i]),
        int(bars.ts_ms[t["signal_idx"][i]]),
        lot,
    )
    j = int(t["signal_idx"][i]) + 1
    if j >= len(bars.close):
        return None, [], None
    candle = [
        Bar(int(bars.ts_ms[m]), *(float(a[m]) for a in (bars.open, bars.high, bars.low, bars.close)))
        for m in range(len(bars.close))
    ]
    result: StepResult = enter(order, candle[j], model)
    fills = list(result.fills)
    position = result.position
    while position is not None and j + 1 < len(candle):
        j += 1
        result = step(position, candle[j], model)
        fills += result.fills
        position = result.position
    return result, fills, position


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 700),
    lot=st.sampled_from([0.0, 0.01]),
    slippage=st.sampled_from([0.0, 5.0]),
    fee=st.sampled_from([0.0, 10.0]),
)
def test_simulation_matches_the_step_function_and_conserves_quantity(
    seed: int, n: int, lot: float, slippage: float, fee: float
) -> None:
    bars = random_bars(seed, n)
    trades = random_trades(seed, bars, 12, lot)
    model = ExecutionModel(slippage_bps=slippage, fee_bps=fee)
    frame = simulate_trades(bars, model=model, lot_step=lot, **trades)
    assert frame.height == 12
    for i, row in enumerate(frame.iter_rows(named=True)):
        result, fills, position = replay_with_step(bars, trades, i, model, lot)
        assert row["fees"] >= 0
        if result is None or result.void_reason is not None:
            assert row["status"] == "VOID"
            continue
        entry_fill, *exits = fills
        assert row["entry_price"] == pytest.approx(entry_fill.price, rel=1e-12)
        assert all(f.fee >= 0 for f in fills)
        if position is not None:
            assert row["status"] == "OPEN"
            assert row["exit_idx"] is None
            assert row["unrealised_pnl"] == pytest.approx(position.unrealised_pnl(bars.close[-1]), rel=1e-9)
            assert row["gross_pnl"] == pytest.approx(position.realised_pnl, rel=1e-9, abs=1e-12)
            exited = sum(f.quantity for f in exits)
            assert exited + position.open_quantity == pytest.approx(entry_fill.quantity, rel=1e-12)
            continue
        closed = result.closed
        assert closed is not None
        assert row["status"] == "CLOSED"
        assert row["exit_kind"] == closed.exit_kind.value
        assert row["exit_ts_ms"] == closed.exit_ts_ms
        assert row["exit_price"] == pytest.approx(exits[-1].price, rel=1e-12)
        assert row["net_pnl"] == pytest.approx(closed.net_pnl, rel=1e-9, abs=1e-12)
        assert row["fees"] == pytest.approx(closed.fees, rel=1e-9)
        assert row["r_multiple"] == pytest.approx(closed.r_multiple, rel=1e-9, abs=1e-12)
        # P&L arithmetic: every unit bought is sold, fees are never negative, R has the sign of the P&L
        assert sum(f.quantity for f in exits) == pytest.approx(closed.quantity, rel=1e-12)
        assert closed.fees >= 0
        assert math.copysign(1, closed.r_multiple) == math.copysign(1, closed.net_pnl)
        assert closed.net_pnl == pytest.approx(closed.gross_pnl - closed.fees)


def test_simulation_on_hand_built_candles() -> None:
    o = np.array([100, 100, 100, 104, 100], dtype=float)
    h = np.array([101, 101, 106, 111, 101], dtype=float)
    lo = np.array([99, 99, 99, 103, 99], dtype=float)
    bars = BarArrays(np.arange(5, dtype=np.int64) * MIN, o, h, lo, o)
    frame = simulate_trades(
        bars,
        signal_idx=[0, 0, 1, 4],
        side=[1, 1, -1, 1],
        quantity=[1.0, 2.0, 1.0, 1.0],
        stop=[95, 99.5, 112, 95],
        tp1=[105, 105, 95, 105],
        tp2=[110, 110, 90, 110],
        model=FREE,
    )
    rows = frame.to_dicts()
    # TP1 in bar 2, TP2 in bar 3
    assert (rows[0]["status"], rows[0]["tp1_idx"], rows[0]["exit_idx"], rows[0]["exit_kind"]) == (
        "CLOSED",
        2,
        3,
        "TP2",
    )
    assert rows[0]["net_pnl"] == pytest.approx(7.5)
    # stop 99.5 lies in the entry candle's range (low 99): stopped at once
    assert (rows[1]["exit_idx"], rows[1]["exit_kind"], rows[1]["net_pnl"]) == (1, "STOP", pytest.approx(-1.0))
    # the short never reaches a level before the data ends
    assert rows[2]["status"] == "OPEN"
    assert rows[2]["unrealised_pnl"] == pytest.approx(0.0)
    # no candle after the signal
    assert rows[3]["status"] == "VOID"


def test_after_tp1_the_break_even_stop_comes_before_tp2_in_one_candle() -> None:
    o = np.array([100, 100, 100, 104], dtype=float)
    h = np.array([101, 101, 106, 111], dtype=float)
    lo = np.array([99, 99, 99.5, 99], dtype=float)
    bars = BarArrays(np.arange(4, dtype=np.int64) * MIN, o, h, lo, o)
    frame = simulate_trades(bars, signal_idx=[0], side=[1], quantity=[1.0], stop=[95], tp1=[105], tp2=[110], model=FREE)
    row = frame.row(0, named=True)
    assert (row["tp1_idx"], row["exit_idx"], row["exit_kind"]) == (2, 3, "BREAKEVEN_STOP")
    assert row["net_pnl"] == pytest.approx(2.5)

    _result, fills, _ = replay_with_step(
        bars,
        {
            k: np.asarray(v)
            for k, v in {
                "signal_idx": [0],
                "side": [1],
                "quantity": [1.0],
                "stop": [95.0],
                "tp1": [105.0],
                "tp2": [110.0],
            }.items()
        },
        0,
        FREE,
        0.0,
    )
    assert [f.kind for f in fills] == [FillKind.ENTRY, FillKind.TP1, FillKind.BREAKEVEN_STOP]


def test_simulation_rejects_inconsistent_input() -> None:
    bars = random_bars(0, 10)
    with pytest.raises(InvalidDataError):
        simulate_trades(bars, signal_idx=[0], side=[2], quantity=[1], stop=[1], tp1=[2], tp2=[3])
    with pytest.raises(InvalidDataError):
        simulate_trades(bars, signal_idx=[0], side=[1], quantity=[1], stop=[3], tp1=[2], tp2=[3])
