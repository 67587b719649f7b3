"""Paper (and later live) trading records: positions, the orders that filled, and their fills.

Every function takes a ``Connection`` and runs inside the caller's transaction. The domain
(:mod:`domain.execution`) decides every fill; this module only stores what it decided and rebuilds the
domain :class:`~domain.execution.Position` from storage, so a broker restarted mid-trade continues with
exactly the fills an uninterrupted run would produce (float8 columns and JSONB numbers round-trip doubles
exactly).

Storage conventions:

- ``positions``: one row per trade. ``realised_pnl`` is the gross P&L of the exits so far (as
  ``Position.realised_pnl``), ``fees`` every fee paid including the entry's, so net P&L = realised_pnl - fees;
  ``r_multiple`` (net / initial risk) is set on close; ``stop`` is the current stop (the entry price after
  TP1); ``targets`` is ``[tp1, tp2]``. ``state`` (JSONB) holds what the columns do not: initial stop, lot step,
  whether TP1 filled, the last candle applied (``last_ts_ms``), the cost model, setup, timeframe, sizing.
- ``orders``: one row per order that filled (paper orders fill at once), ``status = 'FILLED'``. Its
  ``client_order_id`` is ``se-{mode}-{signal_id}-{leg}`` (leg: entry, tp1, tp2, stop; at most 33 characters,
  inside Binance's 36): the unique key that makes opening a position for a signal idempotent.
- ``fills``: one row per execution; ``side`` is the order side (``buy``/``sell``), ``realised_pnl`` the gross
  P&L of that exit (0 for the entry), ``filled_at`` the open of the candle it filled in.
- A trade is a *win* when its net P&L (after all fees) is > 0.

Units: prices in quote currency per base unit, quantities in base units, P&L and fees in quote currency,
timestamps in epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, Literal

import polars as pl
from sqlalchemy import Connection, Float, case, func, select, update
from sqlalchemy.dialects.postgresql import insert

from db.schema import fills, orders, positions
from domain.errors import InvalidDataError
from domain.execution import ExecutionModel, Fill, FillKind, Order, Position, Side, Sizing, StepResult
from domain.scoring import WinRecord
from domain.tiers import Tier

__all__ = [
    "CLOSED_TRADES_SCHEMA",
    "Mode",
    "PnlSummary",
    "StoredPosition",
    "TierStats",
    "apply_step",
    "client_order_id",
    "closed_trades",
    "load_open_positions",
    "open_position",
    "pnl_summary",
    "win_stats",
]

Mode = Literal["paper", "live"]
_STATE_VERSION: Final = 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_LEG: Final[dict[FillKind, str]] = {
    FillKind.ENTRY: "entry",
    FillKind.TP1: "tp1",
    FillKind.TP2: "tp2",
    FillKind.STOP: "stop",
    FillKind.BREAKEVEN_STOP: "stop",  # one stop leg per position: the initial or the break-even one fills
}
_ORDER_TYPE: Final[dict[FillKind, str]] = {
    FillKind.ENTRY: "market",
    FillKind.TP1: "limit",
    FillKind.TP2: "limit",
    FillKind.STOP: "stop_market",
    FillKind.BREAKEVEN_STOP: "stop_market",
}

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
class StoredPosition:
    """An open position as stored: its row ``id`` (what :func:`apply_step` takes), the domain ``position`` to
    step, and the ``model`` (costs) it was opened with, which later steps should use too."""

    id: int
    exchange: str
    mode: Mode
    tier: Tier
    signal_id: int
    setup: str | None
    timeframe: str | None
    model: ExecutionModel
    position: Position


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


def client_order_id(mode: Mode, signal_id: int, kind: FillKind) -> str:
    """The idempotency key of the order for ``kind`` of the position opened from ``signal_id``."""
    return f"se-{mode}-{signal_id}-{_LEG[kind]}"


def _ts(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)  # exact, unlike a float division


def _ms(value: datetime) -> int:
    return (value - _EPOCH) // _MS


def _check_mode(mode: str) -> Mode:
    if mode not in ("paper", "live"):
        raise InvalidDataError(f"trading mode must be 'paper' or 'live', got {mode!r}")
    return mode  # type: ignore[return-value]  # narrowed by the check above


def _order_side(side: Side, kind: FillKind) -> str:
    buys = (side is Side.LONG) == (kind is FillKind.ENTRY)
    return "buy" if buys else "sell"


def _insert_order(
    conn: Connection,
    *,
    exchange: str,
    mode: Mode,
    signal_id: int,
    fill: Fill,
    price: float | None,
    position_id: int | None,
) -> int | None:
    """Insert a filled order; None when its client order id exists already."""
    stmt = (
        insert(orders)
        .values(
            client_order_id=client_order_id(mode, signal_id, fill.kind),
            exchange=exchange,
            symbol=fill.symbol,
            mode=mode,
            side=_order_side(fill.side, fill.kind),
            type=_ORDER_TYPE[fill.kind],
            quantity=fill.quantity,
            price=price,
            status="FILLED",
            position_id=position_id,
            signal_id=signal_id,
        )
        .on_conflict_do_nothing(index_elements=["client_order_id"])
        .returning(orders.c.id)
    )
    order_id = conn.execute(stmt).scalar_one_or_none()
    return None if order_id is None else int(order_id)


def _insert_fill(
    conn: Connection, *, exchange: str, position_id: int, order_id: int, fill: Fill, realised_pnl: float
) -> None:
    conn.execute(
        fills.insert().values(
            order_id=order_id,
            position_id=position_id,
            exchange=exchange,
            symbol=fill.symbol,
            kind=fill.kind.value,
            side=_order_side(fill.side, fill.kind),
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            realised_pnl=realised_pnl,
            filled_at=_ts(fill.ts_ms),
        )
    )


def open_position(
    conn: Connection,
    *,
    exchange: str,
    order: Order,
    entered: StepResult,
    tier: Tier,
    signal_id: int,
    model: ExecutionModel | None = None,
    mode: Mode = "paper",
    setup: str | None = None,
    timeframe: str | None = None,
    sizing: Sizing | None = None,
) -> int:
    """Store a position opened by ``entered = enter(order, bar, model)``: the entry order and fill, and any
    exits that already happened inside the entry candle. Returns the position id.

    Idempotent per (``mode``, ``signal_id``): a second call (a retried task) stores nothing and returns the
    id stored the first time. Pass the same ``model`` that ``enter`` used; it is stored for later steps.

    Raises:
        InvalidDataError: the entry was void, ``entered`` does not belong to ``order``, the tier is SKIP, or the
            signal already opened a position on another exchange or symbol.
    """
    mode = _check_mode(mode)
    model = model or ExecutionModel()
    if entered.void_reason is not None or not entered.fills:
        raise InvalidDataError(f"nothing to store: the entry was void ({entered.void_reason})")
    entry = entered.fills[0]
    if entry.kind is not FillKind.ENTRY or entry.symbol != order.symbol or entry.side is not order.side:
        raise InvalidDataError("open_position: the step result does not start with this order's entry fill")
    if tier is Tier.SKIP:
        raise InvalidDataError("open_position: a SKIP-tier signal trades nothing")

    order_id = _insert_order(
        conn, exchange=exchange, mode=mode, signal_id=signal_id, fill=entry, price=None, position_id=None
    )
    if order_id is None:
        return _existing_position(conn, client_order_id(mode, signal_id, FillKind.ENTRY), exchange, order.symbol)

    state: dict[str, Any] = {
        "version": _STATE_VERSION,
        "entry_ts_ms": entry.ts_ms,
        "initial_stop": order.stop_price,
        "lot_step": order.lot_step,
        "tp1_done": False,
        # the entry candle has not been applied yet; _apply_exits records it below
        "last_ts_ms": entry.ts_ms - 1,
        "model": asdict(model),
        "setup": setup,
        "timeframe": timeframe,
        "sizing": None if sizing is None else asdict(sizing),
    }
    position_id = int(
        conn.execute(
            positions.insert()
            .values(
                exchange=exchange,
                symbol=order.symbol,
                mode=mode,
                direction=order.side.value,
                tier=tier.value,
                signal_id=signal_id,
                quantity=entry.quantity,
                remaining=entry.quantity,
                entry_price=entry.price,
                stop=order.stop_price,
                targets=[order.tp1_price, order.tp2_price],
                status="OPEN",
                realised_pnl=0.0,
                fees=entry.fee,
                state=state,
                opened_at=_ts(entry.ts_ms),
            )
            .returning(positions.c.id)
        ).scalar_one()
    )
    conn.execute(update(orders).where(orders.c.id == order_id).values(position_id=position_id))
    _insert_fill(conn, exchange=exchange, position_id=position_id, order_id=order_id, fill=entry, realised_pnl=0.0)
    _apply_exits(conn, _locked_row(conn, position_id), entered, entered.fills[1:])
    return position_id


def _existing_position(conn: Connection, key: str, exchange: str, symbol: str) -> int:
    row = conn.execute(
        select(orders.c.position_id, orders.c.exchange, orders.c.symbol).where(orders.c.client_order_id == key)
    ).one()
    if (row.exchange, row.symbol) != (exchange, symbol) or row.position_id is None:
        raise InvalidDataError(
            f"order {key} already exists for {row.exchange} {row.symbol}, not {exchange} {symbol}: "
            "two positions claim one signal"
        )
    return int(row.position_id)


def _locked_row(conn: Connection, position_id: int) -> Any:
    row = conn.execute(select(positions).where(positions.c.id == position_id).with_for_update()).one_or_none()
    if row is None:
        raise InvalidDataError(f"no position with id {position_id}")
    return row


def _result_ts(result: StepResult) -> int:
    if result.position is not None:
        return result.position.last_ts_ms
    if result.closed is not None:
        return result.closed.exit_ts_ms
    raise InvalidDataError(f"a void step result cannot be applied to a position ({result.void_reason})")


def apply_step(conn: Connection, position_id: int, result: StepResult) -> int:
    """Record ``result = step(position, bar, model)`` for the stored position: its fills (with their gross
    realised P&L and fees), the remaining quantity, the stop (break-even after TP1), and on close the status,
    ``closed_at``, realised P&L, fees and R-multiple. Returns the number of fills recorded.

    Idempotent: a result for a candle the stored position has already seen (a retried task) records nothing
    and returns 0. Call it for every candle, fills or not: the stored ``last_ts_ms`` is where a restarted
    broker resumes.

    Raises:
        InvalidDataError: unknown position, a void result, a result of another position, or a new candle for a
            position that is already closed.
    """
    row = _locked_row(conn, position_id)
    ts = _result_ts(result)
    if ts <= int(row.state["last_ts_ms"]):
        return 0
    if row.status != "OPEN":
        raise InvalidDataError(f"position {position_id} is closed; candle {ts} cannot be applied")
    stepped = result.position if result.position is not None else result.closed
    assert stepped is not None  # _result_ts refused a result with neither
    if stepped.symbol != row.symbol or stepped.entry_price != row.entry_price:
        raise InvalidDataError(f"the step result is not of position {position_id} ({row.symbol})")
    if any(f.kind is FillKind.ENTRY for f in result.fills):
        raise InvalidDataError("apply_step got an entry fill; open positions with open_position")
    return _apply_exits(conn, row, result, result.fills)


def _apply_exits(conn: Connection, row: Any, result: StepResult, exits: Sequence[Fill]) -> int:
    mode, side = _check_mode(row.mode), Side(row.direction)
    for fill in exits:
        level = {FillKind.TP1: row.targets[0], FillKind.TP2: row.targets[1], FillKind.STOP: row.state["initial_stop"]}
        order_id = _insert_order(
            conn,
            exchange=row.exchange,
            mode=mode,
            signal_id=row.signal_id,
            fill=fill,
            price=level.get(fill.kind, row.entry_price),
            position_id=row.id,
        )
        if order_id is None:  # the row's last_ts_ms said this candle was new: storage disagrees with itself
            raise InvalidDataError(f"position {row.id}: a {fill.kind} order is already stored")
        realised = side.sign * (fill.price - row.entry_price) * fill.quantity  # the domain's increment, exactly
        _insert_fill(
            conn, exchange=row.exchange, position_id=row.id, order_id=order_id, fill=fill, realised_pnl=realised
        )

    state = dict(row.state)
    state["last_ts_ms"] = _result_ts(result)
    values: dict[str, Any]
    if result.position is not None:
        pos = result.position
        state["tp1_done"] = pos.tp1_done
        values = {
            "remaining": pos.open_quantity,
            "stop": pos.stop_price,
            "realised_pnl": pos.realised_pnl,
            "fees": pos.fees,
        }
    else:
        closed = result.closed
        assert closed is not None  # _result_ts refused a result with neither
        tp1_done = any(f.kind is FillKind.TP1 for f in closed.fills)
        state["tp1_done"] = tp1_done
        state["exit_kind"] = closed.exit_kind.value
        values = {
            "remaining": 0.0,
            "stop": closed.entry_price if tp1_done else row.stop,
            "realised_pnl": closed.gross_pnl,
            "fees": closed.fees,
            "r_multiple": closed.r_multiple,
            "status": "CLOSED",
            "closed_at": _ts(closed.exit_ts_ms),
        }
    conn.execute(update(positions).where(positions.c.id == row.id).values(state=state, **values))
    return len(exits)


def load_open_positions(
    conn: Connection, *, exchange: str, symbols: Sequence[str] | None = None, mode: Mode = "paper"
) -> list[StoredPosition]:
    """Open positions of ``exchange`` (optionally only ``symbols``) rebuilt as domain positions, oldest first,
    each with every fill so far; stepping them continues exactly where the stored run stopped."""
    mode = _check_mode(mode)
    query = select(positions).where(
        positions.c.exchange == exchange, positions.c.mode == mode, positions.c.status == "OPEN"
    )
    if symbols is not None:
        query = query.where(positions.c.symbol.in_(list(symbols)))
    rows = conn.execute(query.order_by(positions.c.id)).all()
    if not rows:
        return []
    by_position: dict[int, list[Any]] = {}
    for f in conn.execute(
        select(fills).where(fills.c.position_id.in_([r.id for r in rows])).order_by(fills.c.position_id, fills.c.id)
    ):
        by_position.setdefault(int(f.position_id), []).append(f)
    return [_stored(row, by_position.get(int(row.id), [])) for row in rows]


def _stored(row: Any, fill_rows: Sequence[Any]) -> StoredPosition:
    state: Mapping[str, Any] = row.state
    if state.get("version") != _STATE_VERSION:
        raise InvalidDataError(f"position {row.id}: state version {state.get('version')!r} is not {_STATE_VERSION}")
    side = Side(row.direction)
    position_fills = tuple(
        Fill(row.symbol, _ms(f.filled_at), FillKind(f.kind), side, f.price, f.quantity, f.fee) for f in fill_rows
    )
    position = Position(
        symbol=row.symbol,
        side=side,
        entry_ts_ms=int(state["entry_ts_ms"]),
        entry_price=row.entry_price,
        quantity=row.quantity,
        open_quantity=row.remaining,
        initial_stop=float(state["initial_stop"]),
        stop_price=row.stop,
        tp1_price=float(row.targets[0]),
        tp2_price=float(row.targets[1]),
        tp1_done=bool(state["tp1_done"]),
        lot_step=float(state["lot_step"]),
        realised_pnl=row.realised_pnl,
        fees=row.fees,
        last_ts_ms=int(state["last_ts_ms"]),
        fills=position_fills,
    )
    return StoredPosition(
        id=int(row.id),
        exchange=row.exchange,
        mode=_check_mode(row.mode),
        tier=Tier(row.tier),
        signal_id=int(row.signal_id),
        setup=state.get("setup"),
        timeframe=state.get("timeframe"),
        model=ExecutionModel(**state["model"]),
        position=position,
    )


def _net() -> Any:
    return positions.c.realised_pnl - positions.c.fees


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
    mode = _check_mode(mode)
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
        query = query.where(positions.c.closed_at >= _ts(since_ms))
    rows = [(*r[:7], _ms(r[7]), _ms(r[8]), *r[9:]) for r in conn.execute(query)]
    return pl.DataFrame(rows, schema=CLOSED_TRADES_SCHEMA, orient="row")


def pnl_summary(
    conn: Connection, *, exchange: str, marks: Mapping[str, float] | None = None, mode: Mode = "paper"
) -> PnlSummary:
    """Realised and unrealised P&L, fees, trade counts and per-tier win rates of ``exchange``.

    ``marks`` maps a symbol to its mark price (quote) for the unrealised P&L of open positions.
    """
    mode = _check_mode(mode)
    marks = marks or {}
    mine = (positions.c.exchange == exchange, positions.c.mode == mode)
    realised, fees = conn.execute(
        select(
            func.coalesce(func.sum(positions.c.realised_pnl), 0.0), func.coalesce(func.sum(positions.c.fees), 0.0)
        ).where(*mine)
    ).one()
    win = case((_net() > 0, 1), else_=0)
    by_tier: dict[Tier, TierStats] = {t: TierStats(t, 0, 0, 0.0, None) for t in (Tier.FULL, Tier.REDUCED)}
    for tier, trades, wins, net, mean_r in conn.execute(
        select(
            positions.c.tier,
            func.count(),
            func.sum(win),
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
    mode = _check_mode(mode)
    query = select(func.count(), func.coalesce(func.sum(case((_net() > 0, 1), else_=0)), 0)).where(
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
