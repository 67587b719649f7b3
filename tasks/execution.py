"""Paper execution: act on ENTER signals through the smart scheduler and the order-book check, enter at the
next candle's open, then step every open position through the candles that closed since it was last seen.

Fills are simulated by domain/execution.py on stored candles; positions, orders and fills are persisted so a
restarted run continues exactly where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from db.candles import read_candles
from db.scheduler_state import load_scheduler, save_scheduler
from db.signals import pending_entries
from db.trading import apply_step, load_open_positions, open_position
from db.trading_stats import pnl_summary
from domain.errors import PermanentError, TransientError
from domain.execution import Bar, ExecutionModel, Order, RiskLimits, Side, enter, size_position, step
from domain.scheduling import BookLimits, check_order_book
from domain.tiers import Tier
from domain.timeframes import last_closed_open, timeframe_ms

SCHEDULER_NAME = "paper"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionSettings:
    equity: float = 10_000.0
    limits: RiskLimits = field(default_factory=RiskLimits)
    model: ExecutionModel = field(default_factory=ExecutionModel)
    book: BookLimits = field(default_factory=BookLimits)


@dataclass
class ExecutionReport:
    entered: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    fills: int = 0
    closed: int = 0
    pnl: dict[str, Any] = field(default_factory=dict)


def _bars(frame: Any) -> list[Bar]:
    return [
        Bar(int(r[0]), r[1], r[2], r[3], r[4]) for r in frame.select("ts", "open", "high", "low", "close").iter_rows()
    ]


async def execute_paper(
    engine: Engine,
    source: Any,
    *,
    exchange: str,
    base_timeframe: str,
    signal_timeframe: str,
    now_ms: int,
    settings: ExecutionSettings,
    symbols: Sequence[str] | None = None,
) -> ExecutionReport:
    """Enter pending ENTER signals (newest per symbol, at most two signal candles old) and step open positions."""
    report = ExecutionReport()
    signal_step = timeframe_ms(signal_timeframe)
    last_closed = last_closed_open(now_ms, base_timeframe)
    with engine.connect() as conn:
        scheduler = load_scheduler(conn, SCHEDULER_NAME)
        pending = pending_entries(conn, exchange=exchange, since_ms=now_ms - 2 * signal_step)
        open_now = load_open_positions(conn, exchange=exchange)
    held = {p.position.symbol for p in open_now}
    for sig in pending.iter_rows(named=True):
        symbol = sig["symbol"]
        if symbols is not None and symbol not in symbols:
            continue

        def skip(reason: str, sig: dict[str, Any] = sig) -> None:
            report.skipped.append({"symbol": sig["symbol"], "signal_id": sig["id"], "reason": reason})

        if symbol in held:
            skip("a position in this symbol is already open")
            continue
        targets = [t for t in (sig["targets"] or []) if t is not None]
        if sig["entry"] is None or sig["stop"] is None or not targets:
            skip("signal has no entry/stop/targets")
            continue
        tier = Tier(sig["tier"])
        side = Side.LONG if sig["direction"] == "long" else Side.SHORT
        sizing = size_position(
            equity=settings.equity,
            entry_price=sig["entry"],
            stop_price=sig["stop"],
            tier=tier,
            limits=settings.limits,
            open_positions=len(held),
        )
        if sizing.quantity <= 0:
            skip("; ".join(sizing.reasons) or "size is zero")
            continue
        try:
            book = await source.fetch_order_book(symbol, 100)
        except (TransientError, PermanentError) as exc:
            scheduler.record_failure(symbol, now_ms, f"order book: {exc}")
            skip(f"order book unavailable: {exc}")
            continue
        latency = source.latency(symbol) if hasattr(source, "latency") else None
        if latency is not None:
            scheduler.record_latency(symbol, latency.p50_ms, venue=exchange)
        check = check_order_book(
            book.bids.tolist(),
            book.asks.tolist(),
            side="buy" if side is Side.LONG else "sell",
            amount=sizing.quantity,
            limits=settings.book,
        )
        gate = scheduler.gate(symbol, now_ms, book=check)
        if not gate.allowed:
            skip("; ".join(r.detail for r in gate.reasons))
            continue
        entry_from = sig["ts"] + signal_step
        with engine.connect() as conn:
            candles = read_candles(
                conn,
                exchange=exchange,
                symbol=symbol,
                timeframe=base_timeframe,
                start_ms=entry_from,
                end_ms=last_closed + timeframe_ms(base_timeframe),
            )
        if candles.is_empty():
            skip("the candle after the signal has not closed yet")
            continue
        tp2 = targets[1] if len(targets) > 1 else targets[0]
        order = Order(symbol, side, sizing.quantity, sig["stop"], targets[0], tp2, sig["ts"], settings.limits.lot_step)
        bars = _bars(candles)
        result = enter(order, bars[0], settings.model)
        if result.void_reason is not None:
            skip(f"entry void: {result.void_reason}")
            continue
        with engine.begin() as conn:
            position_id = open_position(
                conn,
                exchange=exchange,
                order=order,
                entered=result,
                tier=tier,
                signal_id=sig["id"],
                model=settings.model,
                timeframe=base_timeframe,
                sizing=sizing,
            )
        scheduler.record_trade(symbol, now_ms)
        scheduler.record_success(symbol)
        held.add(symbol)
        report.entered.append(
            {
                "symbol": symbol,
                "signal_id": sig["id"],
                "position_id": position_id,
                "side": str(side),
                "quantity": sizing.quantity,
                "entry": result.fills[0].price,
                "tier": str(tier),
            }
        )
        report.fills += len(result.fills)
    # Step every open position (including the ones just opened) through the candles closed since.
    with engine.connect() as conn:
        positions = load_open_positions(conn, exchange=exchange)
    for stored in positions:
        pos = stored.position
        with engine.connect() as conn:
            candles = read_candles(
                conn,
                exchange=exchange,
                symbol=pos.symbol,
                timeframe=base_timeframe,
                start_ms=pos.last_ts_ms + 1,
                end_ms=last_closed + timeframe_ms(base_timeframe),
            )
        current = pos
        for bar in _bars(candles):
            result = step(current, bar, stored.model)
            with engine.begin() as conn:
                report.fills += apply_step(conn, stored.id, result)
            if result.position is None:
                report.closed += 1
                break
            current = result.position
    with engine.begin() as conn:
        save_scheduler(conn, SCHEDULER_NAME, scheduler)
        summary = pnl_summary(conn, exchange=exchange)
    report.pnl = {
        "realised_pnl": round(summary.realised_pnl, 4),
        "fees": round(summary.fees, 4),
        "net_realised_pnl": round(summary.net_realised_pnl, 4),
        "open_positions": summary.open_positions,
        "closed_trades": summary.closed_trades,
        "win_rate": None if summary.win_rate is None else round(summary.win_rate, 4),
    }
    return report
