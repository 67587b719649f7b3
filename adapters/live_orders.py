"""Live orders over a ccxt async exchange: create, cancel, fetch. OFF unless explicitly enabled.

The paper broker (:mod:`domain.execution`) is the default and needs none of this. A
:class:`LiveOrderClient` only sends anything when it was built with ``enabled=True`` AND the exchange object
carries every credential the venue requires (ccxt's ``requiredCredentials``: apiKey, secret and, for some
venues, a password). Otherwise every call raises :class:`LiveTradingDisabled` before touching ccxt, so a
misconfigured deployment fails loudly instead of trading. Tests never enable it.

ccxt errors are translated here into the project's tree (:mod:`domain.errors`). One case is special: a
network failure after ``create_order`` was sent leaves the outcome unknown (the venue may have accepted the
order), so it raises :class:`OrderOutcomeUnknown`, a PermanentError, never a retriable one: an automatic
retry could place a second order. Reconcile with :meth:`LiveOrderClient.fetch_order` (or the venue's
order list by ``client_order_id``) first.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import ccxt

from domain.errors import (
    AuthenticationFailed,
    BadRequestError,
    BadSymbolError,
    ConfigurationError,
    ExchangeUnavailable,
    InvalidDataError,
    PermanentError,
    RateLimited,
    StrategyEngineError,
)

__all__ = ["LiveOrder", "LiveOrderClient", "LiveTradingDisabled", "OrderOutcomeUnknown"]

OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]

_HOW_TO_ENABLE = (
    "live orders are disabled. To enable them, build LiveOrderClient(exchange, enabled=True) with a ccxt "
    "exchange that carries the venue's required credentials (apiKey, secret, and password where the venue "
    "needs one), loaded from the encrypted credential store. Paper trading (domain.execution) needs no "
    "live client."
)


class LiveTradingDisabled(ConfigurationError):
    """A live-order call on a client that is not enabled (or lacks credentials)."""


class OrderOutcomeUnknown(PermanentError):
    """The order request may or may not have reached the venue; reconcile before trying again."""


@dataclass(frozen=True, slots=True)
class LiveOrder:
    """The venue's view of an order. Amounts in base units, prices in quote currency, ``ts_ms`` epoch ms."""

    id: str
    client_order_id: str | None
    symbol: str
    side: str | None
    type: str | None
    status: str | None
    amount: float | None
    filled: float | None
    remaining: float | None
    price: float | None
    average: float | None
    ts_ms: int | None

    @classmethod
    def from_ccxt(cls, order: Mapping[str, Any]) -> LiveOrder:
        """Build from a ccxt unified order structure."""

        def num(key: str) -> float | None:
            value = order.get(key)
            return None if value is None else float(value)

        ts = order.get("timestamp")
        return cls(
            id=str(order["id"]),
            client_order_id=order.get("clientOrderId"),
            symbol=str(order["symbol"]),
            side=order.get("side"),
            type=order.get("type"),
            status=order.get("status"),
            amount=num("amount"),
            filled=num("filled"),
            remaining=num("remaining"),
            price=num("price"),
            average=num("average"),
            ts_ms=None if ts is None else int(ts),
        )


def _translate(exc: Exception, action: str, *, sent_order: bool) -> StrategyEngineError:
    """Map one ccxt error to ours; ``sent_order`` marks a create call whose outcome a network error hides."""
    message = f"{action}: {type(exc).__name__}: {exc}"
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return RateLimited(message)  # refused before processing: nothing was placed
    if isinstance(exc, ccxt.NetworkError):
        return OrderOutcomeUnknown(message) if sent_order else ExchangeUnavailable(message)
    if isinstance(exc, ccxt.AuthenticationError):
        return AuthenticationFailed(message)
    if isinstance(exc, ccxt.BadSymbol):
        return BadSymbolError(message)
    if isinstance(exc, ccxt.ExchangeError):
        # InvalidOrder, InsufficientFunds, OrderNotFound, BadRequest...: the venue answered and said no.
        return BadRequestError(message)
    return PermanentError(message)


class LiveOrderClient:
    """create/cancel/fetch orders through a ccxt async exchange, refusing everything unless enabled."""

    def __init__(self, exchange: Any, *, enabled: bool = False) -> None:
        """``exchange`` is a ``ccxt.async_support`` exchange instance; the caller owns (and closes) it."""
        self._exchange = exchange
        self._refusal = self._refusal_reason(exchange, enabled)

    @staticmethod
    def _refusal_reason(exchange: Any, enabled: bool) -> str | None:
        if enabled is not True:
            return f"enabled=True was not passed; {_HOW_TO_ENABLE}"
        check = getattr(exchange, "check_required_credentials", None)
        has_credentials = (
            bool(check(False))
            if callable(check)
            else bool(getattr(exchange, "apiKey", None) and getattr(exchange, "secret", None))
        )
        if not has_credentials:
            name = getattr(exchange, "id", type(exchange).__name__)
            return f"the {name} exchange object lacks required credentials; {_HOW_TO_ENABLE}"
        return None

    @property
    def enabled(self) -> bool:
        """True only when built with ``enabled=True`` and credentials were present."""
        return self._refusal is None

    def _require_enabled(self) -> None:
        if self._refusal is not None:
            raise LiveTradingDisabled(self._refusal)

    async def _call(
        self, action: str, call: Callable[[], Awaitable[Mapping[str, Any]]], *, sent_order: bool = False
    ) -> LiveOrder:
        try:
            result = await call()
        except ccxt.BaseError as exc:
            raise _translate(exc, action, sent_order=sent_order) from exc
        return LiveOrder.from_ccxt(result)

    async def create_order(
        self,
        symbol: str,
        side: OrderSide,
        amount: float,
        *,
        order_type: OrderType = "market",
        price: float | None = None,
        client_order_id: str | None = None,
    ) -> LiveOrder:
        """Place an order of ``amount`` base units (``price`` in quote currency, required for limit orders).

        Pass a ``client_order_id`` so that an order whose outcome is unknown can be found again.

        Raises:
            LiveTradingDisabled: the client is not enabled.
            InvalidDataError: bad side, type, amount or price.
            OrderOutcomeUnknown: a network failure after sending; reconcile before retrying.
        """
        self._require_enabled()
        if side not in ("buy", "sell") or order_type not in ("market", "limit"):
            raise InvalidDataError(f"unsupported order: side={side!r}, type={order_type!r}")
        if not (math.isfinite(amount) and amount > 0):
            raise InvalidDataError(f"order amount must be a finite number > 0, got {amount!r}")
        if order_type == "limit" and (price is None or not (math.isfinite(price) and price > 0)):
            raise InvalidDataError(f"a limit order needs a finite price > 0, got {price!r}")
        params = {"clientOrderId": client_order_id} if client_order_id else {}
        return await self._call(
            f"create {order_type} {side} {amount:g} {symbol}",
            lambda: self._exchange.create_order(symbol, order_type, side, amount, price, params),
            sent_order=True,
        )

    async def cancel_order(self, order_id: str, symbol: str) -> LiveOrder:
        """Cancel one order.

        Raises:
            LiveTradingDisabled: the client is not enabled.
        """
        self._require_enabled()
        return await self._call(
            f"cancel order {order_id} on {symbol}", lambda: self._exchange.cancel_order(order_id, symbol)
        )

    async def fetch_order(self, order_id: str, symbol: str) -> LiveOrder:
        """The venue's current view of one order.

        Raises:
            LiveTradingDisabled: the client is not enabled.
        """
        self._require_enabled()
        return await self._call(
            f"fetch order {order_id} on {symbol}", lambda: self._exchange.fetch_order(order_id, symbol)
        )
