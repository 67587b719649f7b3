"""db/trading.py and db/trading_stats.py against the real PostgreSQL: lifecycle, restart, idempotency, P&L."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from sqlalchemy import Connection, Engine, func, select

from db.schema import fills, orders, positions
from db.trading import apply_step, load_open_positions, open_position
from db.trading_stats import CLOSED_TRADES_SCHEMA, closed_trades, pnl_summary, setup_win_stats, win_stats
from domain.errors import InvalidDataError
from domain.execution import (
    Bar,
    ExecutionModel,
    Fill,
    FillKind,
    Order,
    Position,
    RiskLimits,
    Side,
    StepResult,
    enter,
    size_position,
    step,
)
from domain.tiers import Tier

pytestmark = pytest.mark.integration

MIN = 60_000
OHLC = tuple[float, float, float, float]

# --- a full trade: entry, quiet, TP1, quiet, break-even stop ----------------------------------------------

MODEL = ExecutionModel(slippage_bps=5.0, fee_bps=10.0, tp1_fraction=0.5)
LIFECYCLE: list[OHLC] = [
    (100.0, 101.0, 99.5, 100.5),  # entry at 100 x 1.0005
    (100.5, 102.0, 100.0, 101.5),  # nothing
    (101.5, 105.5, 101.0, 104.0),  # TP1 at 105; the stop moves to the entry fill
    (104.0, 106.0, 102.0, 103.0),  # nothing (stop 100.05 not touched, TP2 112 not reached)
    (103.0, 104.0, 99.0, 100.0),  # break-even stop
    (100.0, 120.0, 90.0, 110.0),  # after the close: never applied
]


def bars(ohlc: Sequence[OHLC]) -> list[Bar]:
    return [Bar((i + 1) * MIN, *row) for i, row in enumerate(ohlc)]


def lifecycle_order() -> tuple[Order, RiskLimits]:
    limits = RiskLimits(lot_step=0.001)
    sizing = size_position(equity=10_000, entry_price=100, stop_price=95, tier=Tier.FULL, limits=limits)
    assert sizing.quantity == pytest.approx(5.0)  # 1% risk is 20 units; the 5% notional cap makes it 5
    return Order("BTC/USDT", Side.LONG, sizing.quantity, 95.0, 105.0, 112.0, 0, limits.lot_step), limits


def uninterrupted() -> tuple[list[Position], list[Fill], StepResult]:
    """The domain alone, in memory: the position after each candle, every fill and the final result."""
    order, _ = lifecycle_order()
    candles = bars(LIFECYCLE)
    result = enter(order, candles[0], MODEL)
    states, all_fills = [], list(result.fills)
    for candle in candles[1:]:
        assert result.position is not None
        states.append(result.position)
        result = step(result.position, candle, MODEL)
        all_fills += result.fills
        if result.closed is not None:
            break
    return states, all_fills, result


def stored_fills(conn: Connection, position_id: int) -> list[tuple[object, ...]]:
    query = (
        select(fills.c.kind, fills.c.side, fills.c.price, fills.c.quantity, fills.c.fee, fills.c.realised_pnl)
        .where(fills.c.position_id == position_id)
        .order_by(fills.c.id)
    )
    return [tuple(r) for r in conn.execute(query)]


def test_the_uninterrupted_run_is_the_trade_the_test_means() -> None:
    _, all_fills, final = uninterrupted()
    assert [f.kind for f in all_fills] == [FillKind.ENTRY, FillKind.TP1, FillKind.BREAKEVEN_STOP]
    assert [f.ts_ms for f in all_fills] == [MIN, 3 * MIN, 5 * MIN]
    assert final.closed is not None
    assert final.closed.gross_pnl > 0


@pytest.mark.parametrize("restart_after", [1, 2, 3, 4])
def test_a_restart_mid_trade_gives_the_same_fills_as_an_uninterrupted_run(db: Engine, restart_after: int) -> None:
    states, expected_fills, final = uninterrupted()
    order, limits = lifecycle_order()
    sizing = size_position(equity=10_000, entry_price=100, stop_price=95, tier=Tier.FULL, limits=limits)
    candles = bars(LIFECYCLE)

    # the first broker: opens, applies candles up to the restart point, then is gone
    entered = enter(order, candles[0], MODEL)
    with db.begin() as conn:
        position_id = open_position(
            conn,
            exchange="binance",
            order=order,
            entered=entered,
            tier=Tier.FULL,
            signal_id=42,
            model=MODEL,
            setup="fib0.618_long",
            timeframe="1m",
            sizing=sizing,
        )
    position = entered.position
    for candle in candles[1:restart_after]:
        assert position is not None
        result = step(position, candle, MODEL)
        with db.begin() as conn:
            apply_step(conn, position_id, result)
        position = result.position

    # the second broker knows only the database
    with db.connect() as conn:
        [stored] = load_open_positions(conn, exchange="binance")
    assert stored.id == position_id
    assert (stored.tier, stored.signal_id, stored.setup, stored.timeframe) == (Tier.FULL, 42, "fib0.618_long", "1m")
    assert stored.model == MODEL
    assert stored.position == states[restart_after - 1]  # every field and fill, bit for bit
    position = stored.position
    result = StepResult(position, ())
    for candle in candles[restart_after:]:
        assert position is not None
        result = step(position, candle, stored.model)
        with db.begin() as conn:
            apply_step(conn, position_id, result)
        position = result.position
        if result.closed is not None:
            break

    assert result == final
    closed = final.closed
    assert closed is not None
    with db.connect() as conn:
        rows = stored_fills(conn, position_id)
        row = conn.execute(select(positions).where(positions.c.id == position_id)).one()
        assert load_open_positions(conn, exchange="binance") == []
        trades = closed_trades(conn, exchange="binance")
    side = {FillKind.ENTRY: "buy", FillKind.TP1: "sell", FillKind.BREAKEVEN_STOP: "sell"}

    def realised(f: Fill) -> float:
        return 0.0 if f.kind is FillKind.ENTRY else (f.price - closed.entry_price) * f.quantity

    assert rows == [(f.kind.value, side[f.kind], f.price, f.quantity, f.fee, realised(f)) for f in expected_fills]
    assert (row.status, row.remaining, row.stop) == ("CLOSED", 0.0, closed.entry_price)
    assert (row.realised_pnl, row.fees, row.r_multiple) == (closed.gross_pnl, closed.fees, closed.r_multiple)
    assert row.closed_at.timestamp() * 1000 == 5 * MIN
    assert trades.height == 1
    trade = trades.row(0, named=True)
    assert trade["exit_kind"] == "BREAKEVEN_STOP"
    assert trade["net_pnl"] == pytest.approx(closed.net_pnl, rel=1e-12)
    assert trade["avg_exit_price"] == pytest.approx(closed.avg_exit_price, rel=1e-12)
    assert trade["initial_risk"] == pytest.approx(closed.initial_risk, rel=1e-12)
    assert (trade["entry_ts_ms"], trade["exit_ts_ms"]) == (closed.entry_ts_ms, closed.exit_ts_ms)


# --- idempotency ----------------------------------------------------------------------------------------


def counts(conn: Connection) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in (positions, orders, fills)
    )


SIMPLE = Order("ETH/USDT", Side.LONG, 2.0, 95.0, 105.0, 110.0, 0)


def test_opening_the_same_signal_twice_stores_one_position(db: Engine) -> None:
    entered = enter(SIMPLE, Bar(MIN, 100, 101, 99, 100), MODEL)
    kwargs = {"exchange": "binance", "order": SIMPLE, "entered": entered, "tier": Tier.REDUCED, "signal_id": 7}
    with db.begin() as conn:
        first = open_position(conn, **kwargs)  # type: ignore[arg-type]
        assert open_position(conn, **kwargs) == first  # type: ignore[arg-type]
    with db.begin() as conn:  # a retried task, after the first transaction committed
        assert open_position(conn, **kwargs) == first  # type: ignore[arg-type]
        assert counts(conn) == (1, 1, 1)
        key = conn.execute(select(orders.c.client_order_id, orders.c.position_id)).one()
        assert tuple(key) == ("se-paper-7-entry", first)
        # the same signal traded live is another position
        live = open_position(conn, **kwargs, mode="live")  # type: ignore[arg-type]
        assert live != first
        with pytest.raises(InvalidDataError, match="two positions claim one signal"):
            open_position(conn, **(kwargs | {"exchange": "kraken"}))  # type: ignore[arg-type]


def test_a_repeated_step_records_nothing_and_a_closed_position_takes_no_new_candle(db: Engine) -> None:
    entered = enter(SIMPLE, Bar(MIN, 100, 101, 99, 100), MODEL)
    assert entered.position is not None
    tp1 = step(entered.position, Bar(2 * MIN, 100, 106, 99, 105), MODEL)
    assert tp1.position is not None
    done = step(tp1.position, Bar(3 * MIN, 105, 111, 104, 110), MODEL)
    assert done.closed is not None
    with db.begin() as conn:
        pid = open_position(conn, exchange="binance", order=SIMPLE, entered=entered, tier=Tier.FULL, signal_id=1)
        assert apply_step(conn, pid, tp1) == 1
        assert apply_step(conn, pid, tp1) == 0
        assert apply_step(conn, pid, done) == 1
        assert apply_step(conn, pid, done) == 0
        assert apply_step(conn, pid, tp1) == 0  # older than what the position has seen
        assert counts(conn) == (1, 3, 3)
        assert sorted(conn.execute(select(orders.c.client_order_id)).scalars()) == [
            "se-paper-1-entry",
            "se-paper-1-tp1",
            "se-paper-1-tp2",
        ]
        later = StepResult(None, (), replace(done.closed, exit_ts_ms=9 * MIN))
        with pytest.raises(InvalidDataError, match="is closed"):
            apply_step(conn, pid, later)
        with pytest.raises(InvalidDataError, match="no position"):
            apply_step(conn, pid + 100, tp1)


def test_a_trade_closed_inside_its_entry_candle_is_stored_closed(db: Engine) -> None:
    entered = enter(SIMPLE, Bar(MIN, 100, 101, 94, 96), MODEL)  # the entry candle also hits the stop
    assert entered.closed is not None
    with db.begin() as conn:
        pid = open_position(conn, exchange="binance", order=SIMPLE, entered=entered, tier=Tier.FULL, signal_id=3)
        assert (
            open_position(conn, exchange="binance", order=SIMPLE, entered=entered, tier=Tier.FULL, signal_id=3) == pid
        )
        assert [r[0] for r in stored_fills(conn, pid)] == ["ENTRY", "STOP"]
        assert load_open_positions(conn, exchange="binance") == []
        row = conn.execute(select(positions).where(positions.c.id == pid)).one()
        assert (row.status, row.r_multiple) == ("CLOSED", entered.closed.r_multiple)


def test_void_entries_skip_tiers_and_foreign_steps_are_refused(db: Engine) -> None:
    void = enter(SIMPLE, Bar(MIN, 94, 96, 93, 95), MODEL)
    entered = enter(SIMPLE, Bar(MIN, 100, 101, 99, 100), MODEL)
    other = enter(Order("SOL/USDT", Side.LONG, 1.0, 9.0, 11.0, 12.0, 0), Bar(MIN, 10, 10.1, 9.9, 10), MODEL)
    assert other.position is not None
    with db.begin() as conn:
        with pytest.raises(InvalidDataError, match="void"):
            open_position(conn, exchange="binance", order=SIMPLE, entered=void, tier=Tier.FULL, signal_id=1)
        with pytest.raises(InvalidDataError, match="SKIP"):
            open_position(conn, exchange="binance", order=SIMPLE, entered=entered, tier=Tier.SKIP, signal_id=1)
        with pytest.raises(InvalidDataError, match="entry fill"):
            open_position(conn, exchange="binance", order=SIMPLE, entered=other, tier=Tier.FULL, signal_id=1)
        pid = open_position(conn, exchange="binance", order=SIMPLE, entered=entered, tier=Tier.FULL, signal_id=1)
        with pytest.raises(InvalidDataError, match="not of position"):
            apply_step(conn, pid, step(other.position, Bar(2 * MIN, 10, 10.1, 9.9, 10), MODEL))
        with pytest.raises(InvalidDataError, match="paper"):
            load_open_positions(conn, exchange="binance", mode="demo")  # type: ignore[arg-type]


# --- P&L summary, closed trades and win statistics, checked by hand ----------------------------------------

HAND = ExecutionModel(slippage_bps=0.0, fee_bps=10.0)  # fee 0.1% of notional, no slippage


def trade(
    conn: Connection,
    *,
    signal_id: int,
    symbol: str,
    side: Side,
    qty: float,
    levels: tuple[float, float, float],
    path: Sequence[OHLC],
    tier: Tier,
    exchange: str = "binance",
    setup: str | None = None,
) -> int:
    order = Order(symbol, side, qty, *levels, signal_ts_ms=0)
    candles = bars(path)
    result = enter(order, candles[0], HAND)
    pid = open_position(
        conn, exchange=exchange, order=order, entered=result, tier=tier, signal_id=signal_id, model=HAND, setup=setup
    )
    for candle in candles[1:]:
        assert result.position is not None
        result = step(result.position, candle, HAND)
        apply_step(conn, pid, result)
    return pid


def book(conn: Connection) -> None:
    long_levels = (95.0, 105.0, 110.0)
    # A, FULL: entry 100 (fee 0.1); TP1 0.5 @105 (+2.5, fee 0.0525); TP2 0.5 @110 (+5, fee 0.055) -> net 7.2925
    trade(conn, signal_id=1, symbol="AAA/USDT", side=Side.LONG, qty=1, levels=long_levels, tier=Tier.FULL,
          setup="fib0.618_long", path=[(100, 101, 99, 100), (100, 106, 99, 105), (105, 111, 104, 110)])  # fmt: skip
    # B, REDUCED: 2 @100 (fee 0.2); stop @95 (-10, fee 0.19) -> net -10.39, R -1.039; closes at candle 2
    trade(conn, signal_id=2, symbol="BBB/USDT", side=Side.LONG, qty=2, levels=long_levels, tier=Tier.REDUCED,
          path=[(100, 101, 99, 100), (99, 100, 94, 95)])  # fmt: skip
    # C, FULL short, open: 1 @100 (fee 0.1); TP1 0.5 @95 (+2.5, fee 0.0475); 0.5 left, marked at 97 -> +1.5
    trade(conn, signal_id=3, symbol="CCC/USDT", side=Side.SHORT, qty=1, levels=(105.0, 95.0, 90.0), tier=Tier.FULL,
          path=[(100, 101, 99, 100), (100, 101, 94, 96)])  # fmt: skip
    # D, FULL, open, no mark: 3 @50 (fee 0.15)
    trade(conn, signal_id=4, symbol="DDD/USDT", side=Side.LONG, qty=3, levels=(45.0, 55.0, 60.0), tier=Tier.FULL,
          path=[(50, 51, 49, 50)])  # fmt: skip
    # another exchange: never counted
    trade(conn, signal_id=5, symbol="AAA/USDT", side=Side.LONG, qty=9, levels=long_levels, tier=Tier.FULL,
          exchange="kraken", path=[(100, 101, 99, 100), (99, 100, 94, 95)])  # fmt: skip
    # F, REDUCED: 1 @100 (fee 0.1); TP1 0.5 @105 (+2.5, fee 0.0525); break-even 0.5 @100 (0, fee 0.05)
    #    -> net 2.2975, R 0.4595
    trade(conn, signal_id=6, symbol="AAA/USDT", side=Side.LONG, qty=1, levels=long_levels, tier=Tier.REDUCED,
          setup="fib0.5_long", path=[(100, 101, 99, 100), (100, 106, 99, 105), (104, 105, 99, 100)])  # fmt: skip
    # G, FULL: gross > 0 but a loss after fees. 1 @100 (fee 0.1); TP1 0.5 @100.1 (+0.05, fee 0.05005);
    #    break-even 0.5 @100 (0, fee 0.05) -> net -0.15005, initial risk 1, R -0.15005
    trade(conn, signal_id=7, symbol="EEE/USDT", side=Side.LONG, qty=1, levels=(99.0, 100.1, 110.0), tier=Tier.FULL,
          path=[(100, 100.05, 99.5, 100), (100, 100.2, 99.9, 100.1), (100.1, 100.15, 99.8, 99.9)])  # fmt: skip


def test_pnl_summary_by_hand(db: Engine) -> None:
    with db.begin() as conn:
        book(conn)
    with db.connect() as conn:
        summary = pnl_summary(conn, exchange="binance", marks={"CCC/USDT": 97.0, "ZZZ/USDT": 1.0})
    assert summary.realised_pnl == pytest.approx(7.5 - 10 + 2.5 + 0 + 2.5 + 0.05)
    fees = 0.2075 + 0.39 + 0.1475 + 0.15 + 0.2025 + 0.20005
    assert summary.fees == pytest.approx(fees)
    assert summary.net_realised_pnl == pytest.approx(2.55 - fees)
    assert summary.unrealised_pnl == pytest.approx(1.5)
    assert summary.unmarked == ("DDD/USDT",)
    assert (summary.open_positions, summary.closed_trades, summary.wins) == (2, 4, 2)
    assert summary.win_rate == pytest.approx(0.5)
    full, reduced = summary.by_tier[Tier.FULL], summary.by_tier[Tier.REDUCED]
    assert (full.trades, full.wins, full.win_rate) == (2, 1, 0.5)
    assert full.net_pnl == pytest.approx(7.2925 - 0.15005)
    assert full.mean_r == pytest.approx((7.2925 / 5 - 0.15005) / 2)
    assert (reduced.trades, reduced.wins, reduced.win_rate) == (2, 1, 0.5)
    assert reduced.net_pnl == pytest.approx(-10.39 + 2.2975)
    assert reduced.mean_r == pytest.approx((-1.039 + 0.4595) / 2)


def test_pnl_summary_of_an_empty_book(db: Engine) -> None:
    with db.connect() as conn:
        summary = pnl_summary(conn, exchange="binance")
    assert (summary.realised_pnl, summary.fees, summary.unrealised_pnl, summary.closed_trades) == (0, 0, 0, 0)
    assert summary.win_rate is None
    assert summary.by_tier[Tier.FULL].win_rate is None


def test_closed_trades_and_win_stats_by_hand(db: Engine) -> None:
    with db.begin() as conn:
        book(conn)
    with db.connect() as conn:
        trades = closed_trades(conn, exchange="binance")
        later = closed_trades(conn, exchange="binance", since_ms=3 * MIN)
        aaa = closed_trades(conn, exchange="binance", symbol="AAA/USDT")
        empty = closed_trades(conn, exchange="binance", symbol="nothing")
        stats = {
            "AAA": win_stats(conn, exchange="binance", symbol="AAA/USDT"),
            "AAA 0.618": win_stats(conn, exchange="binance", symbol="AAA/USDT", setup="fib0.618_long"),
            "AAA short": win_stats(conn, exchange="binance", symbol="AAA/USDT", direction=Side.SHORT),
            "BBB": win_stats(conn, exchange="binance", symbol="BBB/USDT"),
            "CCC": win_stats(conn, exchange="binance", symbol="CCC/USDT"),
            "EEE": win_stats(conn, exchange="binance", symbol="EEE/USDT"),
            "kraken": win_stats(conn, exchange="kraken", symbol="AAA/USDT"),
        }
        setups = setup_win_stats(conn, exchange="binance", symbol="AAA/USDT")
    assert trades.schema == CLOSED_TRADES_SCHEMA == empty.schema
    assert empty.is_empty()
    # B closes at candle 2; A, F and G at candle 3, in the order they were stored
    assert trades["symbol"].to_list() == ["BBB/USDT", "AAA/USDT", "AAA/USDT", "EEE/USDT"]
    assert trades["exit_kind"].to_list() == ["STOP", "TP2", "BREAKEVEN_STOP", "BREAKEVEN_STOP"]
    assert trades["tier"].to_list() == ["REDUCED", "FULL", "REDUCED", "FULL"]
    assert trades["setup"].to_list() == [None, "fib0.618_long", "fib0.5_long", None]
    assert trades["exit_ts_ms"].to_list() == [2 * MIN, 3 * MIN, 3 * MIN, 3 * MIN]
    assert trades["net_pnl"].to_list() == pytest.approx([-10.39, 7.2925, 2.2975, -0.15005])
    assert trades["r_multiple"].to_list() == pytest.approx([-1.039, 1.4585, 0.4595, -0.15005])
    assert trades["avg_exit_price"].to_list() == pytest.approx([95.0, 107.5, 102.5, 100.05])
    assert trades["initial_risk"].to_list() == pytest.approx([10.0, 5.0, 5.0, 1.0])
    assert later["symbol"].to_list() == ["AAA/USDT", "AAA/USDT", "EEE/USDT"]
    assert aaa["signal_id"].to_list() == [1, 6]
    assert {k: (v.wins, v.trades) for k, v in stats.items()} == {
        "AAA": (2, 2),
        "AAA 0.618": (1, 1),
        "AAA short": (0, 0),
        "BBB": (0, 1),
        "CCC": (0, 0),  # still open
        "EEE": (0, 1),  # gross > 0, net < 0: a loss
        "kraken": (0, 1),
    }
    assert {k: (v.wins, v.trades) for k, v in setups.items()} == {"fib0.618_long": (1, 1), "fib0.5_long": (1, 1)}
