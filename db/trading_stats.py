"""Reports over the trading records of db/trading.py: closed trades, P&L summary, win statistics.

Conventions as in :mod:`db.trading`: ``positions.realised_pnl`` is gross, ``fees`` include the entry's, net P&L
= realised_pnl - fees, and a trade is a *win* when its net P&L is > 0. Money in quote currency, timestamps in
epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import polars as pl
from sqlalchemy import Connection, Float, case, func, select

from db.schema import fills, positions
from db.trading import Mode, check_mode, ms_from_ts, ts_from_ms
from domain.execution import FillKind, Side
from domain.scoring import WinRecord
from domain.tiers import Tier

__all__ = [
    "CLOSED_TRADES_SCHEMA",
    "PnlSummary",
    "TierStats",
    "closed_trades",
    "pnl_summary",
    "setup_win_stats",
    "win_stats",
]

#: Columns of :func:`closed_trades` (names as in :class:`domain.execution.ClosedTrade` where they match).
CLOSED_TRADES_SCHEMA: Final = pl.Schema(
    {
        "id": pl.Int64,
        "symbol": pl.String,
        "side": pl.String,
        "tier": pl.String,
        "signal_id": pl.Int64,
        "setup": pl.String,
        "timeframe": pl.String,
        "entry_ts_ms": pl.Int64,
        "exit_ts_ms": pl.Int64,
        "entry_price": pl.Float64,
        "quantity": pl.Float64,
        "avg_exit_price": pl.Float64,
        "gross_pnl": pl.Float64,
        "fees": pl.Float64,
        "net_pnl": pl.Float64,
        "initial_risk": pl.Float64,
        "r_multiple": pl.Float64,
        "exit_kind": pl.String,
    }
)


@dataclass(frozen=True, slots=True)
class TierStats:
    """Closed trades of one tier: count, wins (net P&L > 0), net P&L (quote) and mean R-multiple."""

    tier: Tier
    trades: int
    wins: int
    net_pnl: float
    mean_r: float | None

    @property
    def win_rate(self) -> float | None:
        """Wins / trades (0-1); None without closed trades."""
        return self.wins / self.trades if self.trades else None


@dataclass(frozen=True, slots=True)
class PnlSummary:
    """Money of one exchange and mode, in quote currency.

    ``realised_pnl`` is gross over every exit so far (closed trades and partial exits of open ones); ``fees``
    every fee paid; ``unrealised_pnl`` the open quantity marked at the given prices (no exit costs), over the
    open positions whose symbol had a mark; ``unmarked`` lists open symbols without one.
    """

    realised_pnl: float
    fees: float
    unrealised_pnl: float
    open_positions: int
    closed_trades: int
    wins: int
    by_tier: Mapping[Tier, TierStats]
    unmarked: tuple[str, ...]

    @property
    def net_realised_pnl(self) -> float:
        """Realised P&L after fees."""
        return self.realised_pnl - self.fees

    @property
    def win_rate(self) -> float | None:
        """Wins / closed trades (0-1); None without closed trades."""
        return self.wins / self.closed_trades if self.closed_trades else None


def _net() -> Any:
    return positions.c.realised_pnl - positions.c.fees


def _win() -> Any:
    return case((_net() > 0, 1), else_=0)


def closed_trades(
    conn: Connection,
    *,
    exchange: str,
    symbol: str | None = None,
    since_ms: int | None = None,
    mode: Mode = "paper",
) -> pl.DataFrame:
    """Closed trades of ``exchange`` (optionally one ``symbol``; ``since_ms``: closed at or after), oldest
    close first, with the columns of :data:`CLOSED_TRADES_SCHEMA`."""
    mode = check_mode(mode)
    exits = (
        select(
            fills.c.position_id,
            (func.sum(fills.c.price * fills.c.quantity) / func.sum(fills.c.quantity)).label("avg_exit_price"),
        )
        .where(fills.c.kind != FillKind.ENTRY.value)
        .group_by(fills.c.position_id)
        .subquery()
    )
    initial_stop = positions.c.state["initial_stop"].as_float()
    query = (
        select(
            positions.c.id,
            positions.c.symbol,
            positions.c.direction,
            positions.c.tier,
            positions.c.signal_id,
            positions.c.state["setup"].as_string(),
            positions.c.state["timeframe"].as_string(),
            positions.c.opened_at,
            positions.c.closed_at,
            positions.c.entry_price,
            positions.c.quantity,
            exits.c.avg_exit_price,
            positions.c.realised_pnl,
            positions.c.fees,
            _net(),
            positions.c.quantity * func.abs(positions.c.entry_price - initial_stop),
            positions.c.r_multiple,
            positions.c.state["exit_kind"].as_string(),
        )
        .join_from(positions, exits, exits.c.position_id == positions.c.id)
        .where(positions.c.exchange == exchange, positions.c.mode == mode, positions.c.status == "CLOSED")
        .order_by(positions.c.closed_at, positions.c.id)
    )
    if symbol is not None:
        query = query.where(positions.c.symbol == symbol)
    if since_ms is not None:
        query = query.where(positions.c.closed_at >= ts_from_ms(since_ms))
    rows = [(*r[:7], ms_from_ts(r[7]), ms_from_ts(r[8]), *r[9:]) for r in conn.execute(query)]
    return pl.DataFrame(rows, schema=CLOSED_TRADES_SCHEMA, orient="row")


def pnl_summary(
    conn: Connection, *, exchange: str, marks: Mapping[str, float] | None = None, mode: Mode = "paper"
) -> PnlSummary:
    """Realised and unrealised P&L, fees, trade counts and per-tier win rates of ``exchange``.

    ``marks`` maps a symbol to its mark price (quote) for the unrealised P&L of open positions.
    """
    mode = check_mode(mode)
    marks = marks or {}
    mine = (positions.c.exchange == exchange, positions.c.mode == mode)
    realised, fees = conn.execute(
        select(
            func.coalesce(func.sum(positions.c.realised_pnl), 0.0), func.coalesce(func.sum(positions.c.fees), 0.0)
        ).where(*mine)
    ).one()
    by_tier: dict[Tier, TierStats] = {t: TierStats(t, 0, 0, 0.0, None) for t in (Tier.FULL, Tier.REDUCED)}
    for tier, trades, wins, net, mean_r in conn.execute(
        select(
            positions.c.tier,
            func.count(),
            func.sum(_win()),
            func.sum(_net()),
            func.avg(positions.c.r_multiple, type_=Float),
        )
        .where(*mine, positions.c.status == "CLOSED")
        .group_by(positions.c.tier)
    ):
        by_tier[Tier(tier)] = TierStats(Tier(tier), int(trades), int(wins), float(net), mean_r)
    unrealised, unmarked, open_count = 0.0, set(), 0
    for symbol, direction, entry_price, remaining in conn.execute(
        select(positions.c.symbol, positions.c.direction, positions.c.entry_price, positions.c.remaining).where(
            *mine, positions.c.status == "OPEN"
        )
    ):
        open_count += 1
        if symbol in marks:
            unrealised += Side(direction).sign * (marks[symbol] - entry_price) * remaining
        else:
            unmarked.add(symbol)
    closed = sum(s.trades for s in by_tier.values())
    return PnlSummary(
        realised_pnl=float(realised),
        fees=float(fees),
        unrealised_pnl=unrealised,
        open_positions=open_count,
        closed_trades=closed,
        wins=sum(s.wins for s in by_tier.values()),
        by_tier=MappingProxyType(by_tier),
        unmarked=tuple(sorted(unmarked)),
    )


def win_stats(
    conn: Connection,
    *,
    exchange: str,
    symbol: str,
    setup: str | None = None,
    direction: Side | None = None,
    mode: Mode = "paper",
) -> WinRecord:
    """Wins (net P&L > 0) of the closed trades of ``symbol``, optionally of one ``setup`` (e.g.
    ``fib0.618_long``, see :func:`domain.signals.setup_key`) and ``direction``: the scorer's historical win
    rate input."""
    mode = check_mode(mode)
    query = select(func.count(), func.coalesce(func.sum(_win()), 0)).where(
        positions.c.exchange == exchange,
        positions.c.mode == mode,
        positions.c.symbol == symbol,
        positions.c.status == "CLOSED",
    )
    if setup is not None:
        query = query.where(positions.c.state["setup"].as_string() == setup)
    if direction is not None:
        query = query.where(positions.c.direction == direction.value)
    trades, wins = conn.execute(query).one()
    return WinRecord(wins=int(wins), trades=int(trades))


def setup_win_stats(conn: Connection, *, exchange: str, symbol: str, mode: Mode = "paper") -> dict[str, WinRecord]:
    """:func:`win_stats` of every setup ``symbol`` has closed trades of, in one query (the scorer's
    ``SignalContext.setup_records``). Trades stored without a setup are left out."""
    mode = check_mode(mode)
    setup = positions.c.state["setup"].as_string()
    rows = conn.execute(
        select(setup, func.count(), func.sum(_win()))
        .where(
            positions.c.exchange == exchange,
            positions.c.mode == mode,
            positions.c.symbol == symbol,
            positions.c.status == "CLOSED",
            setup.is_not(None),
        )
        .group_by(setup)
    )
    return {str(name): WinRecord(wins=int(wins), trades=int(trades)) for name, trades, wins in rows}
