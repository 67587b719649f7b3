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

Reports over these records (closed trades, P&L summary, win statistics) are in :mod:`db.trading_stats`.

Units: prices in quote currency per base unit, quantities in base units, P&L and fees in quote currency,
timestamps in epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert

from db.schema import fills, orders, positions
from domain.errors import InvalidDataError
from domain.execution import ExecutionModel, Fill, FillKind, Order, Position, Side, Sizing, StepResult
from domain.tiers import Tier

__all__ = [
    "Mode",
    "StoredPosition",
    "apply_step",
    "check_mode",
    "client_order_id",
    "load_open_positions",
    "ms_from_ts",
    "open_position",
    "ts_from_ms",
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


def client_order_id(mode: Mode, signal_id: int, kind: FillKind) -> str:
    """The idempotency key of the order for ``kind`` of the position opened from ``signal_id``."""
    return f"se-{mode}-{signal_id}-{_LEG[kind]}"


def ts_from_ms(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)  # exact, unlike a float division


def ms_from_ts(value: datetime) -> int:
    """An aware datetime as epoch milliseconds (exact integer arithmetic)."""
    return (value - _EPOCH) // _MS


def check_mode(mode: str) -> Mode:
    """``mode`` when it is 'paper' or 'live'; InvalidDataError otherwise."""
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
            filled_at=ts_from_ms(fill.ts_ms),
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
    mode = check_mode(mode)
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
                opened_at=ts_from_ms(entry.ts_ms),
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
    mode, side = check_mode(row.mode), Side(row.direction)
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
            "closed_at": ts_from_ms(closed.exit_ts_ms),
        }
    conn.execute(update(positions).where(positions.c.id == row.id).values(state=state, **values))
    return len(exits)


def load_open_positions(
    conn: Connection, *, exchange: str, symbols: Sequence[str] | None = None, mode: Mode = "paper"
) -> list[StoredPosition]:
    """Open positions of ``exchange`` (optionally only ``symbols``) rebuilt as domain positions, oldest first,
    each with every fill so far; stepping them continues exactly where the stored run stopped."""
    mode = check_mode(mode)
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
        Fill(row.symbol, ms_from_ts(f.filled_at), FillKind(f.kind), side, f.price, f.quantity, f.fee) for f in fill_rows
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
        mode=check_mode(row.mode),
        tier=Tier(row.tier),
        signal_id=int(row.signal_id),
        setup=state.get("setup"),
        timeframe=state.get("timeframe"),
        model=ExecutionModel(**state["model"]),
        position=position,
    )
