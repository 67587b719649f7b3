"""Paper execution: position sizing, entry at the next candle's open, TP1/TP2 partial exits, stops, P&L.

Units: prices in quote currency per base unit; quantities in base units; equity, notional, fees and P&L in
quote currency; timestamps in epoch milliseconds (a candle's open); ``*_bps`` in basis points (1 bps =
0.0001); ``*_fraction`` as a fraction of 1 (0.05 = 5%).

Fill rules (also those of the vectorised :func:`domain.trade_simulation.simulate_trades`, which a test holds
equal to :func:`step`):

- entry: a market order at the open of the candle after the signal, plus ``slippage_bps`` against us and
  ``fee_bps`` of the notional. When that price is already at or beyond the stop, or at or beyond TP1, the
  setup is void and nothing fills (a long bought under its stop has no defined risk).
- stop: a market exit at the stop, or at the open when the candle opens beyond it (a gap fills worse),
  with slippage and fee.
- targets: limit exits at the target price exactly (a gap beyond a target is not credited), with the fee.
- in one candle the stop is checked first: when stop and target both lie in its range, the stop is assumed
  to have come first (conservative).
- TP1 closes ``tp1_fraction`` (default 50%, rounded down to the lot step; all of it when that rounds to
  nothing) and moves the stop to break-even, i.e. the entry fill price. The moved stop acts from the next
  candle: inside the TP1 candle the order of its low and high is unknown and the original stop was not
  touched. TP2 may fill in the TP1 candle itself.
- the R-multiple is net P&L (after all fees) divided by the initial risk, quantity x |entry fill - stop|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from domain.errors import InvalidDataError
from domain.tiers import TIER_SIZE_MULTIPLIER, Tier

__all__ = [
    "Bar",
    "ClosedTrade",
    "ExecutionModel",
    "Fill",
    "FillKind",
    "Order",
    "Position",
    "RiskLimits",
    "Side",
    "Sizing",
    "StepResult",
    "enter",
    "size_position",
    "step",
]

_BPS: Final = 10_000.0


class Side(StrEnum):
    """Direction of a position."""

    LONG = "LONG"
    SHORT = "SHORT"

    @property
    def sign(self) -> int:
        """+1 for long, -1 for short: P&L per unit is ``sign * (exit - entry)``."""
        return 1 if self is Side.LONG else -1


class FillKind(StrEnum):
    """What a fill did."""

    ENTRY = "ENTRY"
    TP1 = "TP1"
    TP2 = "TP2"
    STOP = "STOP"
    BREAKEVEN_STOP = "BREAKEVEN_STOP"


def _finite_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InvalidDataError(f"{name} must be a finite number > 0, got {value!r}")


def _fraction(name: str, value: float, *, allow_zero: bool = True) -> None:
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0) and value <= 1):
        raise InvalidDataError(f"{name} must be a fraction in {'[0' if allow_zero else '(0'}, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Risk budget and caps for sizing.

    ``risk_per_trade``: fraction of equity lost if the stop is hit (before fees and slippage);
    ``max_position_fraction``: cap on the position notional as a fraction of equity;
    ``lot_step``: quantities are rounded down to a multiple of this (base units; 0 = no rounding);
    ``min_quantity``: smaller sizes become no trade (base units).
    """

    risk_per_trade: float = 0.01
    max_position_fraction: float = 0.05
    max_open_positions: int = 5
    lot_step: float = 0.0
    min_quantity: float = 0.0

    def __post_init__(self) -> None:
        _fraction("risk_per_trade", self.risk_per_trade, allow_zero=False)
        _fraction("max_position_fraction", self.max_position_fraction, allow_zero=False)
        if self.max_open_positions < 0:
            raise InvalidDataError("max_open_positions must be >= 0")
        for name, value in (("lot_step", self.lot_step), ("min_quantity", self.min_quantity)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidDataError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class ExecutionModel:
    """Costs and exit split: slippage and taker fee in bps of price/notional; TP1's share of the quantity."""

    slippage_bps: float = 5.0
    fee_bps: float = 10.0
    tp1_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name, value in (("slippage_bps", self.slippage_bps), ("fee_bps", self.fee_bps)):
            if not (math.isfinite(value) and 0 <= value < _BPS):
                raise InvalidDataError(f"{name} must be in [0, 10000) bps, got {value!r}")
        _fraction("tp1_fraction", self.tp1_fraction, allow_zero=False)

    @property
    def slip(self) -> float:
        """Slippage as a fraction of price."""
        return self.slippage_bps / _BPS

    @property
    def fee_rate(self) -> float:
        """Fee as a fraction of notional."""
        return self.fee_bps / _BPS


@dataclass(frozen=True, slots=True)
class Sizing:
    """A sized position: ``quantity`` (base units; 0 = no trade), its ``notional`` at the entry price and the
    ``risk_amount`` lost at the stop (quote), against the tier-scaled ``risk_budget`` (quote). ``reasons``
    says what capped or zeroed the size."""

    quantity: float
    notional: float
    risk_amount: float
    risk_budget: float
    equity: float
    reasons: tuple[str, ...]

    @property
    def notional_fraction(self) -> float:
        """Notional as a fraction of equity (condition 6 compares this with 0.05)."""
        return self.notional / self.equity


def _floor_to_step(quantity: float, step: float) -> float:
    if step <= 0:
        return quantity
    rounded = math.floor(quantity / step) * step
    # quantity/step can round up to an integer the true quotient does not reach
    return rounded - step if rounded > quantity else rounded


def size_position(
    *,
    equity: float,
    entry_price: float,
    stop_price: float,
    tier: Tier,
    limits: RiskLimits | None = None,
    open_positions: int = 0,
) -> Sizing:
    """Size a position: risk budget (``equity x risk_per_trade``) over the per-unit distance to the stop,
    times the tier multiplier, then capped by the notional limit, the open-position limit and the lot step.

    The notional never exceeds ``max_position_fraction x equity`` (up to float rounding).
    """
    limits = limits or RiskLimits()
    _finite_positive("equity", equity)
    _finite_positive("entry_price", entry_price)
    _finite_positive("stop_price", stop_price)
    per_unit = abs(entry_price - stop_price)
    if per_unit == 0:
        raise InvalidDataError("stop_price equals entry_price: the risk per unit would be zero")
    budget = equity * limits.risk_per_trade * TIER_SIZE_MULTIPLIER[tier]

    def none(reason: str) -> Sizing:
        return Sizing(0.0, 0.0, 0.0, budget, equity, (reason,))

    if budget == 0:
        return none(f"tier {tier} trades no size")
    if open_positions >= limits.max_open_positions:
        return none(f"{open_positions} open positions; the limit is {limits.max_open_positions}")
    reasons: list[str] = []
    quantity = budget / per_unit
    cap = equity * limits.max_position_fraction / entry_price
    if quantity > cap:
        quantity = cap
        reasons.append(f"capped at {limits.max_position_fraction:.2%} of equity in notional")
    quantity = _floor_to_step(quantity, limits.lot_step)
    if quantity <= 0 or quantity < limits.min_quantity:
        return none(f"size {quantity:g} below the minimum {max(limits.min_quantity, limits.lot_step):g}")
    return Sizing(quantity, quantity * entry_price, quantity * per_unit, budget, equity, tuple(reasons))


@dataclass(frozen=True, slots=True)
class Order:
    """An entry order from a signal whose candle opened at ``signal_ts_ms``; it fills at the next candle.

    ``quantity`` in base units (from :func:`size_position`); ``lot_step`` rounds the TP1 split.
    Long: ``stop < tp1 <= tp2``; short: ``stop > tp1 >= tp2``.
    """

    symbol: str
    side: Side
    quantity: float
    stop_price: float
    tp1_price: float
    tp2_price: float
    signal_ts_ms: int
    lot_step: float = 0.0

    def __post_init__(self) -> None:
        _finite_positive("quantity", self.quantity)
        for name in ("stop_price", "tp1_price", "tp2_price"):
            _finite_positive(name, getattr(self, name))
        d = self.side.sign
        if not (d * self.stop_price < d * self.tp1_price <= d * self.tp2_price):
            raise InvalidDataError(
                f"{self.side} order needs stop {'<' if d > 0 else '>'} tp1 {'<=' if d > 0 else '>='} tp2; "
                f"got stop={self.stop_price}, tp1={self.tp1_price}, tp2={self.tp2_price}"
            )


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed candle (prices in quote currency; ``ts_ms`` its open time)."""

    ts_ms: int
    open: float
    high: float
    low: float
    close: float


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: ``price`` includes slippage, ``fee`` (quote, >= 0) is charged on ``price x quantity``."""

    symbol: str
    ts_ms: int
    kind: FillKind
    side: Side
    price: float
    quantity: float
    fee: float


@dataclass(frozen=True, slots=True)
class Position:
    """An open position. ``realised_pnl`` is gross P&L of the exits so far; ``fees`` all fees paid so far."""

    symbol: str
    side: Side
    entry_ts_ms: int
    entry_price: float
    quantity: float
    open_quantity: float
    initial_stop: float
    stop_price: float
    tp1_price: float
    tp2_price: float
    tp1_done: bool
    lot_step: float
    realised_pnl: float
    fees: float
    last_ts_ms: int
    fills: tuple[Fill, ...]

    @property
    def initial_risk(self) -> float:
        """Quote amount lost if the initial stop filled exactly: quantity x |entry - initial stop|."""
        return self.quantity * abs(self.entry_price - self.initial_stop)

    def unrealised_pnl(self, mark_price: float) -> float:
        """Gross P&L of the open quantity marked at ``mark_price`` (no exit fee or slippage)."""
        return self.side.sign * (mark_price - self.entry_price) * self.open_quantity


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A finished trade; ``net_pnl = gross_pnl - fees``; ``r_multiple = net_pnl / initial_risk``."""

    symbol: str
    side: Side
    entry_ts_ms: int
    exit_ts_ms: int
    entry_price: float
    quantity: float
    avg_exit_price: float
    gross_pnl: float
    fees: float
    net_pnl: float
    initial_risk: float
    r_multiple: float
    exit_kind: FillKind
    fills: tuple[Fill, ...]


@dataclass(frozen=True, slots=True)
class StepResult:
    """``position`` is None once closed (``closed`` is set) or when the entry was void (``void_reason``)."""

    position: Position | None
    fills: tuple[Fill, ...]
    closed: ClosedTrade | None = None
    void_reason: str | None = None


def _tp1_quantity(quantity: float, fraction: float, lot_step: float) -> float:
    part = _floor_to_step(quantity * fraction, lot_step)
    return quantity if part <= 0 or part >= quantity else part


def enter(order: Order, bar: Bar, model: ExecutionModel | None = None) -> StepResult:
    """Fill ``order`` at the open of ``bar`` (the candle after the signal), then apply the rest of ``bar``.

    Raises:
        InvalidDataError: ``bar`` is not later than the signal candle (that would be look-ahead).
    """
    model = model or ExecutionModel()
    if bar.ts_ms <= order.signal_ts_ms:
        raise InvalidDataError(f"entry candle {bar.ts_ms} must open after the signal candle {order.signal_ts_ms}")
    d = order.side.sign
    price = bar.open * (1.0 + d * model.slip)
    if d * (price - order.stop_price) <= 0 or d * (price - order.tp1_price) >= 0:
        reason = (
            f"entry {price:g} is not between stop {order.stop_price:g} and tp1 {order.tp1_price:g}; the setup is void"
        )
        return StepResult(None, (), None, reason)
    fee = price * order.quantity * model.fee_rate
    fill = Fill(order.symbol, bar.ts_ms, FillKind.ENTRY, order.side, price, order.quantity, fee)
    position = Position(
        symbol=order.symbol,
        side=order.side,
        entry_ts_ms=bar.ts_ms,
        entry_price=price,
        quantity=order.quantity,
        open_quantity=order.quantity,
        initial_stop=order.stop_price,
        stop_price=order.stop_price,
        tp1_price=order.tp1_price,
        tp2_price=order.tp2_price,
        tp1_done=False,
        lot_step=order.lot_step,
        realised_pnl=0.0,
        fees=fee,
        last_ts_ms=bar.ts_ms - 1,
        fills=(fill,),
    )
    return _apply_bar(position, bar, model, (fill,))


def step(position: Position, bar: Bar, model: ExecutionModel | None = None) -> StepResult:
    """Advance an open ``position`` through one later closed candle.

    Raises:
        InvalidDataError: ``bar`` is not newer than the last candle the position saw.
    """
    if bar.ts_ms <= position.last_ts_ms:
        raise InvalidDataError(f"candle {bar.ts_ms} is not after the last one applied ({position.last_ts_ms})")
    return _apply_bar(position, bar, model or ExecutionModel(), ())


def _exit(pos: Position, bar: Bar, kind: FillKind, price: float, qty: float, model: ExecutionModel) -> Position:
    fill = Fill(pos.symbol, bar.ts_ms, kind, pos.side, price, qty, price * qty * model.fee_rate)
    return replace(
        pos,
        open_quantity=pos.open_quantity - qty,
        realised_pnl=pos.realised_pnl + pos.side.sign * (price - pos.entry_price) * qty,
        fees=pos.fees + fill.fee,
        fills=(*pos.fills, fill),
    )


def _apply_bar(pos: Position, bar: Bar, model: ExecutionModel, fills: tuple[Fill, ...]) -> StepResult:
    d = pos.side.sign
    pos = replace(pos, last_ts_ms=bar.ts_ms)
    before = len(pos.fills)
    adverse = bar.low if d > 0 else bar.high
    favourable = bar.high if d > 0 else bar.low
    done = False
    if d * adverse <= d * pos.stop_price:  # stop first: conservative when a target is also in range
        reference = d * min(d * bar.open, d * pos.stop_price)  # a gap through the stop fills at the open
        kind = FillKind.BREAKEVEN_STOP if pos.tp1_done else FillKind.STOP
        pos = _exit(pos, bar, kind, reference * (1.0 - d * model.slip), pos.open_quantity, model)
        done = True
    else:
        if not pos.tp1_done and d * favourable >= d * pos.tp1_price:
            qty = _tp1_quantity(pos.quantity, model.tp1_fraction, pos.lot_step)
            pos = _exit(pos, bar, FillKind.TP1, pos.tp1_price, qty, model)
            pos = replace(pos, tp1_done=True, stop_price=pos.entry_price)
            done = qty == pos.quantity
        if not done and pos.tp1_done and d * favourable >= d * pos.tp2_price:
            pos = _exit(pos, bar, FillKind.TP2, pos.tp2_price, pos.open_quantity, model)
            done = True
    new_fills = fills + pos.fills[before:]
    if not done:
        return StepResult(pos, new_fills)
    return StepResult(None, new_fills, _close(pos))


def _close(pos: Position) -> ClosedTrade:
    exits = pos.fills[1:]
    exit_qty = sum(f.quantity for f in exits)
    net = pos.realised_pnl - pos.fees
    return ClosedTrade(
        symbol=pos.symbol,
        side=pos.side,
        entry_ts_ms=pos.entry_ts_ms,
        exit_ts_ms=exits[-1].ts_ms,
        entry_price=pos.entry_price,
        quantity=pos.quantity,
        avg_exit_price=sum(f.price * f.quantity for f in exits) / exit_qty,
        gross_pnl=pos.realised_pnl,
        fees=pos.fees,
        net_pnl=net,
        initial_risk=pos.initial_risk,
        r_multiple=net / pos.initial_risk,
        exit_kind=exits[-1].kind,
        fills=pos.fills,
    )
