"""The ccxt edge: one async exchange client with paging, pacing, latency and ONE error translation.

Everything above this module sees plain values (polars frames, frozen dataclasses) and `domain.errors`:

=====================================================  ===============================================
ccxt                                                   domain.errors
=====================================================  ===============================================
RateLimitExceeded, DDoSProtection (HTTP 429/418)       RateLimited (``retry_after_s`` from Retry-After)
NetworkError, RequestTimeout, ExchangeNotAvailable,    ExchangeUnavailable
OperationFailed, HTTP 200 with a non-JSON body
BadSymbol                                              BadSymbolError
AuthenticationError, PermissionDenied                  AuthenticationFailed
BadRequest and every other ExchangeError               BadRequestError
=====================================================  ===============================================

Two traps are handled here. A maintenance page (HTTP 200, HTML) makes ccxt return ``[]`` from fetch_ohlcv; the
client refuses non-JSON 200 answers outright (ExchangeUnavailable). And a genuinely empty JSON page inside a
range the market covers raises SuspiciousEmptyPage the first time; asking again for the same page on the same
client (or with ``confirm_empty=True``) returns a page with ``confirmed_empty=True``, which the backfill may
record so it never asks again.

Nothing the exchange sent is lost on the way to validation. ccxt's ``parse_ohlcv`` turns a value it cannot
convert (``"abc"``, an object, ``""``, ``true``) into None, and ``parse_ohlcvs`` then silently drops every row
whose timestamp did not convert. So the client takes the rows from ccxt's parser itself, every row of the answer
in the exchange's order, and re-reads a row that came out with a None with ccxt's accessors handing back the
value as received instead of None: the page holds ``"abc"`` where plain ccxt says None, and holds the row whose
timestamp is ``"abc"``. `domain.candles.parse_ccxt_rows` then keeps such rows' raw values for the quarantine.
A value the exchange did not send at all (a short row, a missing key) can only be null.

Credentials travel as `SecretStr` and are unwrapped only into the ccxt instance; they are never logged (the
ccxt instance gets a logger that drops DEBUG, where ccxt prints request headers) nor shown in ``repr``, and
error messages are scrubbed of them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import numpy as np
import polars as pl
from ccxt.base import errors as ccxt_errors
from pydantic import SecretStr

from adapters.rate_limit import (
    BINANCE_SPOT_WEIGHT_BUDGET,
    BINANCE_SPOT_WEIGHTS,
    WeightLimiter,
    WeightTable,
    shared_limiter,
)
from domain.candles import CANDLE_SCHEMA, parse_ccxt_rows
from domain.errors import (
    AuthenticationFailed,
    BadRequestError,
    BadSymbolError,
    ConfigurationError,
    ExchangeUnavailable,
    InvalidDataError,
    RateLimited,
    StrategyEngineError,
    SuspiciousEmptyPage,
)
from domain.timeframes import last_closed_open, timeframe_ms

T = TypeVar("T")

OHLCV_SCHEMA = CANDLE_SCHEMA
"""Typed candle columns (`domain.candles.CANDLE_SCHEMA`): ts = candle open in epoch ms (UTC), Int64; open, high,
low, close in quote currency and volume in base currency, Float64. An `OhlcvPage` frame has these columns
(nullable) inside `domain.candles.RECEIVED_SCHEMA`."""

_EXCHANGE_WIDE = "*"  # latency key for calls that concern no symbol (markets, balance)
_QUIET_CCXT_LOGGER = logging.getLogger("adapters.exchange.ccxt")
_QUIET_CCXT_LOGGER.setLevel(logging.INFO)  # ccxt logs request headers (API keys) at DEBUG


@dataclass(frozen=True)
class OhlcvPage:
    """Candles the exchange returned for [start_ms, end_ms), as received (not validated).

    `frame` has `domain.candles.RECEIVED_SCHEMA`, ready for `validate_frame` as it is: ``row_index`` (position
    in the exchange's answer), the candle columns (ts epoch ms; prices in quote, volume in base currency),
    null where a value did not parse, and for such rows ``raw`` (the row as received, QuarantinePayload
    JSON) and ``parse_error``/``parse_detail``. Sorted by ts, rows whose ts did not parse last. Rows whose ts
    falls outside the window are trimmed; rows whose ts did not parse are kept (they are part of the answer
    and must reach the quarantine). `ReplayExchange` pages have the same schema, with no raw values.

    `confirmed_empty` is True only when the range is covered by the market and the exchange answered empty
    twice: the caller may record it as an empty range (no trades).
    """

    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    frame: pl.DataFrame
    confirmed_empty: bool = False

    @property
    def is_empty(self) -> bool:
        return self.frame.height == 0


@dataclass(frozen=True, eq=False)
class OrderBook:
    """Order book snapshot. `bids`/`asks`: float64 arrays of shape (n, 2) = (price, amount), best first."""

    symbol: str
    timestamp_ms: int | None
    bids: np.ndarray
    asks: np.ndarray

    @property
    def best_bid(self) -> float | None:
        return float(self.bids[0, 0]) if len(self.bids) else None

    @property
    def best_ask(self) -> float | None:
        return float(self.asks[0, 0]) if len(self.asks) else None

    @property
    def spread_fraction(self) -> float | None:
        """(ask - bid) / mid as a fraction (0.001 = 0.1 %); None when a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        if bid is None or ask is None:
            return None
        return (ask - bid) / ((ask + bid) / 2)


@dataclass(frozen=True)
class AssetBalance:
    """Balance of one asset, in units of that asset."""

    asset: str
    free: float
    used: float
    total: float


@dataclass(frozen=True)
class MarketInfo:
    """A market as listed. `listed_ms`: listing time in epoch ms when the exchange says (often None)."""

    symbol: str
    market_id: str
    base: str
    quote: str
    active: bool
    listed_ms: int | None


@dataclass(frozen=True)
class LatencyStats:
    """HTTP round-trip latency over the last `count` requests (at most the tracker's window), in ms."""

    count: int
    last_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float


class LatencyTracker:
    """Recent HTTP latencies per key (symbol, or "*" for exchange-wide calls), measured on a monotonic clock."""

    def __init__(self, window: int = 200) -> None:
        self._window = window
        self._samples: dict[str, deque[float]] = {}

    def record(self, key: str, seconds: float) -> None:
        self._samples.setdefault(key, deque(maxlen=self._window)).append(seconds * 1000.0)

    def stats(self, key: str) -> LatencyStats | None:
        samples = self._samples.get(key)
        if not samples:
            return None
        values = np.fromiter(samples, dtype=np.float64)
        p50, p95 = np.percentile(values, [50, 95])
        return LatencyStats(len(values), samples[-1], float(p50), float(p95), float(values.max()))

    def snapshot(self) -> dict[str, LatencyStats]:
        return {key: stats for key in list(self._samples) if (stats := self.stats(key)) is not None}


@dataclass
class _CallTrace:
    """What the ccxt hooks learn during one adapter call (same asyncio context)."""

    latencies_s: list[float] = field(default_factory=list)
    retry_after_s: float | None = None


_TRACE: ContextVar[_CallTrace | None] = ContextVar("se_exchange_call_trace", default=None)
# Set by fetch_ohlcv_page around its request: every row ccxt's parse_ohlcv produced, in the exchange's order.
_RECEIVED_OHLCV: ContextVar[list[Any] | None] = ContextVar("se_exchange_received_ohlcv", default=None)


@dataclass
class _EdgeHooks:
    limiter: WeightLimiter
    weigh: Callable[[Any, str, Any, str, Any, Any], float]
    url_map: list[tuple[str, str]]  # (loopback prefix, original prefix), longest first


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date. None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now_s is None else now_s))


def _value_as_received(container: Any, keys: Sequence[Any]) -> Any:
    """The first value present (not None) under `keys` in a list or dict row, as the exchange sent it."""
    for key in keys:
        if key is None:
            continue
        try:
            value = container[key]
        except (LookupError, TypeError):
            continue
        if value is not None:
            return value
    return None


# ccxt's static accessors that parse_ohlcv implementations read values with -> where their keys are among the
# arguments after the row. While a row is parsed again, one that cannot convert a value returns the value as
# received instead of None (and parse_number, behind the safe_number family, leaves it as it is).
_RAW_ACCESSORS: dict[str, Callable[[tuple[Any, ...]], Sequence[Any]]] = {
    "safe_string": lambda args: args[:1],
    "safe_integer": lambda args: args[:1],
    "safe_timestamp": lambda args: args[:1],
    "safe_integer_product": lambda args: args[:1],
    "safe_string_2": lambda args: args[:2],
    "safe_integer_2": lambda args: args[:2],
    "safe_timestamp_2": lambda args: args[:2],
    "safe_string_n": lambda args: list(args[0]) if args and isinstance(args[0], list) else [],
    "safe_integer_n": lambda args: list(args[0]) if args and isinstance(args[0], list) else [],
}


def _keeping_raw(
    original: Callable[..., Any], keys_of: Callable[[tuple[Any, ...]], Sequence[Any]]
) -> Callable[..., Any]:
    def accessor(container: Any, *args: Any) -> Any:
        value = original(container, *args)
        return _value_as_received(container, keys_of(args)) if value is None else value

    return accessor


def _raw_value_shadows(ex: Any) -> dict[str, Callable[..., Any]]:
    """Instance attributes that shadow `ex`'s value accessors so they hand back what they cannot convert."""
    shadows: dict[str, Callable[..., Any]] = {}
    for name, keys_of in _RAW_ACCESSORS.items():
        if isinstance(inspect.getattr_static(type(ex), name, None), staticmethod):
            shadows[name] = _keeping_raw(getattr(type(ex), name), keys_of)
    number = ex.parse_number

    def parse_number(value: Any, default: Any = None) -> Any:
        if value is None:
            return default
        if type(value) is not str:
            return value  # handed back by an accessor above: float(True) would make a price of 1.0
        converted = number(value, None)
        return value if converted is None else converted

    shadows["parse_number"] = parse_number
    return shadows


@functools.cache
def _edge_class(base: type[Any]) -> type[Any]:
    """`base` (a ccxt async exchange class) with hooks: shared weight limiter, latency, Retry-After,
    non-JSON 200 refusal, loopback URLs mapped back for the exchange's per-host error tables, and OHLCV rows
    captured as received (see the module docstring)."""
    cls: type[Any]

    async def fetch2(
        self: Any, path: str, api: Any = None, method: str = "GET", params: Any = None, config: Any = None
    ) -> Any:
        api = ["public"] if api is None else api
        params = {} if params is None else params
        config = {} if config is None else config
        hooks: _EdgeHooks = self.se_hooks
        await hooks.limiter.acquire(hooks.weigh(self, path, api, method, params, config))
        return await super(cls, self).fetch2(path, api, method, params, config)

    async def fetch(self: Any, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        started = time.monotonic()
        try:
            return await super(cls, self).fetch(url, method, headers, body)
        finally:
            trace = _TRACE.get()
            if trace is not None:
                trace.latencies_s.append(time.monotonic() - started)

    def handle_errors(
        self: Any,
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: Any,
        body: str,
        response: Any,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        hooks: _EdgeHooks = self.se_hooks
        used = _header(headers, "x-mbx-used-weight-1m")
        if used is not None:
            with contextlib.suppress(ValueError):
                hooks.limiter.accounting.record_server_used(time.monotonic(), float(used))
        trace = _TRACE.get()
        if trace is not None:
            trace.retry_after_s = parse_retry_after(_header(headers, "retry-after"))
        if code == 200 and response is None:
            # ccxt would hand the HTML to the parser and return [] / {}: an outage posing as "no data".
            raise ccxt_errors.ExchangeNotAvailable(
                f"{self.id} {method} {url} answered HTTP 200 with a non-JSON body (maintenance page?): "
                f"{(body or '')[:120]!r}"
            )
        return super(cls, self).handle_errors(
            code, reason, url, method, headers, body, response, request_headers, request_body
        )

    def parse_ohlcv(self: Any, ohlcv: Any, market: Any = None) -> Any:
        parsed = super(cls, self).parse_ohlcv(ohlcv, market)
        received = _RECEIVED_OHLCV.get()
        if received is not None:
            complete = isinstance(parsed, list) and None not in parsed
            received.append(parsed if complete else reparse_keeping_raw(self, ohlcv, market, parsed))
        return parsed  # ccxt's own result is untouched: its sort and filters run on what they expect

    def reparse_keeping_raw(self: Any, ohlcv: Any, market: Any, parsed: Any) -> Any:
        """`parsed` with each None replaced by the value the exchange sent there, if it sent one."""
        # Shadowed on the instance for this one synchronous call only (nothing else runs on the loop meanwhile),
        # so the common path, rows that parse, pays nothing for it.
        shadows = _raw_value_shadows(self)
        vars(self).update(shadows)
        try:
            again = super(cls, self).parse_ohlcv(ohlcv, market)
        except (ccxt_errors.BaseError, TypeError, ValueError, LookupError, AttributeError, ArithmeticError):
            # An exchange parser that chokes on raw values: keep its own row (nulls); the row is not lost.
            return parsed
        finally:
            for name in shadows:
                vars(self).pop(name, None)
        if not isinstance(parsed, list) or not isinstance(again, list) or len(again) != len(parsed):
            return parsed
        # Only the Nones are taken from the second pass: ccxt's conversions of the good values stand.
        return [value if value is not None else raw for value, raw in zip(parsed, again, strict=True)]

    namespace: dict[str, Any] = {
        "fetch2": fetch2,
        "fetch": fetch,
        "handle_errors": handle_errors,
        "parse_ohlcv": parse_ohlcv,
    }
    if hasattr(base, "get_exceptions_by_url"):

        def get_exceptions_by_url(self: Any, url: Any, exact_or_broad: str) -> Any:
            # Binance picks spot/futures error tables by host; on loopback no host matches.
            for loopback, original in self.se_hooks.url_map:
                if isinstance(url, str) and url.startswith(loopback):
                    url = original + url[len(loopback) :]
                    break
            return super(cls, self).get_exceptions_by_url(url, exact_or_broad)

        namespace["get_exceptions_by_url"] = get_exceptions_by_url
    cls = type(f"Edge{base.__name__}", (base,), namespace)
    return cls


def _repoint(urls: Any, base_url: str, pairs: list[tuple[str, str]]) -> Any:
    """Every URL under `urls` re-pointed at `base_url`, keeping its path; records (new, old) pairs."""
    if isinstance(urls, str):
        new = base_url.rstrip("/") + urlsplit(urls).path
        pairs.append((new, urls))
        return new
    if isinstance(urls, dict):
        return {key: _repoint(value, base_url, pairs) for key, value in urls.items()}
    return urls


def translate_error(
    exc: BaseException,
    *,
    exchange_id: str,
    action: str,
    symbol: str | None,
    retry_after_s: float | None = None,
    redact: Sequence[str] = (),
) -> StrategyEngineError:
    """The one mapping from a ccxt error to `domain.errors` (see the module docstring). The message names
    the exchange, the action, the symbol and the cause; any string in `redact` is masked."""
    where = f"{exchange_id} {action}" + (f" {symbol}" if symbol else "")
    detail = str(exc)[:300]
    for secret in redact:
        if secret:
            detail = detail.replace(secret, "***")
    cause = f"{type(exc).__name__}: {detail}"
    if isinstance(exc, ccxt_errors.RateLimitExceeded | ccxt_errors.DDoSProtection):
        suffix = f" (retry after {retry_after_s:g} s)" if retry_after_s is not None else ""
        return RateLimited(f"{where}: rate limited{suffix}: {cause}", retry_after_s=retry_after_s)
    if isinstance(exc, ccxt_errors.OperationFailed):  # NetworkError, RequestTimeout, ExchangeNotAvailable...
        return ExchangeUnavailable(f"{where}: exchange unavailable: {cause}", retry_after_s=retry_after_s)
    if isinstance(exc, ccxt_errors.BadSymbol):
        return BadSymbolError(f"{where}: the exchange does not know this symbol: {cause}")
    if isinstance(exc, ccxt_errors.AuthenticationError):  # includes PermissionDenied
        return AuthenticationFailed(f"{where}: credentials rejected or lacking permission: {cause}")
    return BadRequestError(f"{where}: request refused: {cause}")


def _default_weigh(table: WeightTable | None, cost_to_weight: float) -> Callable[..., float]:
    def weigh(ex: Any, path: str, api: Any, method: str, params: Any, config: Any) -> float:
        api_name = api if isinstance(api, str) else api[0]
        endpoint = path.rsplit("/", 1)[-1]
        if table is not None and api_name in ("public", "private") and endpoint in table.bands:
            limit = params.get("limit") if isinstance(params, dict) else None
            return table.weight(endpoint, int(limit) if limit is not None else None)
        return float(ex.calculate_rate_limiter_cost(api, method, path, params, config)) * cost_to_weight

    return weigh


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def judge_page(
    page: OhlcvPage,
    *,
    suspicious: set[tuple[str, str, int, int]],
    covered: bool,
    confirm_empty: bool,
    exchange_id: str,
) -> OhlcvPage:
    """The empty-page rule shared by every source. A page with rows, or an empty one outside what the market
    covers (`covered` False: in the future or before listing), is returned as is. An empty page inside the
    market's history raises SuspiciousEmptyPage the first time; asked again for the same window (remembered in
    `suspicious`, per client) or with `confirm_empty`, it comes back `confirmed_empty=True`."""
    key = (page.symbol, page.timeframe, page.start_ms, page.end_ms)
    if page.frame.height or not covered:
        suspicious.discard(key)
        return page
    if confirm_empty or key in suspicious:
        suspicious.discard(key)
        return replace(page, confirmed_empty=True)
    suspicious.add(key)
    raise SuspiciousEmptyPage(
        f"{exchange_id} fetch_ohlcv {page.symbol} {page.timeframe}: empty answer for [{page.start_ms}, "
        f"{page.end_ms}) inside the market's history; ask again for the same window to confirm it is empty"
    )


class ExchangeClient:
    """An async ccxt client built from plain values. Use as ``async with ExchangeClient(...) as client``.

    One client belongs to one event loop (ccxt binds its session to the first loop it runs on); concurrent
    coroutines on that loop may share it. Clients on other loops/threads share the weight limiter instead.
    """

    def __init__(
        self,
        exchange_id: str,
        *,
        api_key: SecretStr | None = None,
        secret: SecretStr | None = None,
        password: SecretStr | None = None,
        sandbox: bool = False,
        timeout_ms: int = 10_000,
        api_url: str | None = None,
        limiter: WeightLimiter | None = None,
        weights: WeightTable | None = None,
        clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        """`api_url` re-points every REST base URL (loopback emulators). `limiter`: the weight limiter to draw
        from; by default the process-wide one for this exchange and URL. `weights`: request weights (Binance
        spot table for binance; otherwise ccxt's own request costs). `clock_ms`: wall clock in epoch ms."""
        base = getattr(ccxt_async, exchange_id, None)
        if not isinstance(base, type):
            raise ConfigurationError(f"unknown ccxt exchange id {exchange_id!r}")
        self.exchange_id = exchange_id
        self.api_url = api_url
        self._secrets = [s.get_secret_value() for s in (api_key, secret, password) if s is not None]
        self._has_credentials = api_key is not None and secret is not None
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
        for name, value in (("apiKey", api_key), ("secret", secret), ("password", password)):
            if value is not None:
                config[name] = value.get_secret_value()
        ex = _edge_class(base)(config)
        ex.logger = _QUIET_CCXT_LOGGER
        ex.options["fetchCurrencies"] = False  # currencies need private endpoints and are not used
        ex.options["adjustForTimeDifference"] = False  # no clock-sync request before every call
        ex.options["fetchMargins"] = False  # with keys, binance would also list margin pairs (sapi)
        fetch_markets = ex.options.get("fetchMarkets")
        if isinstance(fetch_markets, dict) and "types" in fetch_markets:
            ex.options["fetchMarkets"] = {**fetch_markets, "types": ["spot"]}
        if sandbox:
            ex.set_sandbox_mode(True)
        pairs: list[tuple[str, str]] = []
        if api_url is not None:
            ex.urls["api"] = _repoint(ex.urls["api"], api_url, pairs)
        is_binance = exchange_id == "binance"
        table = weights if weights is not None else (BINANCE_SPOT_WEIGHTS if is_binance else None)
        # ccxt costs are per `rateLimit` ms; Binance's are its weight / 5 (6,000 weight = 1,200 cost a minute).
        cost_to_weight = 5.0 if is_binance else 1.0
        if limiter is None:
            budget = BINANCE_SPOT_WEIGHT_BUDGET if is_binance else 60_000.0 / float(ex.rateLimit)
            key = f"{exchange_id}|{api_url or ('sandbox' if sandbox else 'live')}"
            limiter = shared_limiter(key, budget=budget)
        self._limiter = limiter
        ex.se_hooks = _EdgeHooks(limiter, _default_weigh(table, cost_to_weight), sorted(pairs, reverse=True))
        self._ex = ex
        self._clock_ms = clock_ms
        self._latency = LatencyTracker()
        self._suspicious: set[tuple[str, str, int, int]] = set()
        self._first_candle: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        creds = "set" if self._has_credentials else "none"
        return f"ExchangeClient(exchange_id={self.exchange_id!r}, credentials={creds}, api_url={self.api_url!r})"

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the HTTP session (always call it; ccxt warns about unclosed sessions)."""
        await self._ex.close()

    @property
    def limiter(self) -> WeightLimiter:
        """The weight limiter this client draws from (shared with every client of the same exchange)."""
        return self._limiter

    @property
    def max_ohlcv_page(self) -> int:
        """Most candles the exchange returns per OHLCV request (1000 on Binance spot)."""
        features = self._ex.features if isinstance(self._ex.features, dict) else {}
        limit = features.get("spot", {}).get("fetchOHLCV", {}).get("limit")
        return int(limit) if limit else 500

    def latency(self, symbol: str | None = None) -> LatencyStats | None:
        """Recent HTTP latency for `symbol` (None: exchange-wide calls such as markets and balance)."""
        return self._latency.stats(symbol or _EXCHANGE_WIDE)

    def latency_snapshot(self) -> dict[str, LatencyStats]:
        """Latency per symbol ("*" for exchange-wide calls)."""
        return self._latency.snapshot()

    async def _call(self, action: str, symbol: str | None, fn: Callable[[], Awaitable[T]]) -> T:
        trace = _CallTrace()
        token = _TRACE.set(trace)
        try:
            return await fn()
        except ccxt_errors.BaseError as exc:
            error = translate_error(
                exc,
                exchange_id=self.exchange_id,
                action=action,
                symbol=symbol,
                retry_after_s=trace.retry_after_s,
                redact=self._secrets,
            )
            if isinstance(error, RateLimited) and error.retry_after_s:
                self._limiter.pause_for(error.retry_after_s)  # every task against this exchange backs off
            raise error from exc
        finally:
            _TRACE.reset(token)
            for seconds in trace.latencies_s:
                self._latency.record(symbol or _EXCHANGE_WIDE, seconds)

    async def _ensure_markets(self) -> None:
        # Loaded in a call of its own so its latency and errors are not booked to a symbol.
        if self._ex.markets is None:
            await self.load_markets()

    async def load_markets(self, *, reload: bool = False) -> dict[str, MarketInfo]:
        """The exchange's spot markets by unified symbol ("BTC/USDT")."""
        markets = await self._call("load_markets", None, lambda: self._ex.load_markets(reload))
        return {symbol: _market_info(m) for symbol, m in markets.items()}

    async def market_info(self, symbol: str) -> MarketInfo:
        """One market (loads markets once); BadSymbolError when the exchange does not list it."""
        markets = await self.load_markets()
        if symbol not in markets:
            raise BadSymbolError(f"{self.exchange_id} market_info {symbol}: not listed by the exchange")
        return markets[symbol]

    async def first_candle_ms(self, symbol: str, timeframe: str) -> int | None:
        """Open time (epoch ms) of the market's first `timeframe` candle, from a `since=0` request (exact on
        Binance, which answers with its oldest candle); None when the exchange has none. Cached per client."""
        key = (symbol, timeframe)
        if key not in self._first_candle:
            await self._ensure_markets()
            rows = await self._call("fetch_ohlcv", symbol, lambda: self._ex.fetch_ohlcv(symbol, timeframe, 0, 1))
            if not rows:
                return None
            self._first_candle[key] = int(rows[0][0])
        return self._first_candle[key]

    async def fetch_ohlcv_page(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        limit: int | None = None,
        *,
        end_ms: int | None = None,
        confirm_empty: bool = False,
        first_candle_ms: int | None = None,
    ) -> OhlcvPage:
        """One request for candles opening in [since_ms, end_ms) (end default: since + limit candles).

        At most `max_ohlcv_page` candles. The frame is `RECEIVED_SCHEMA` (see `OhlcvPage`): rows outside the
        window are trimmed; rows inside, and rows whose ts did not parse, are kept with the values as received
        (bad ones included, for validation to quarantine). An empty answer for a window the market covers (it
        opens at or before the last closed candle and ends after `first_candle_ms`, if known) raises
        SuspiciousEmptyPage; asking again for the same window (or passing `confirm_empty=True`) returns
        `confirmed_empty=True`.
        """
        step = timeframe_ms(timeframe)
        count = min(limit or self.max_ohlcv_page, self.max_ohlcv_page)
        end = end_ms if end_ms is not None else since_ms + count * step
        if end <= since_ms:
            raise InvalidDataError(f"empty OHLCV window [{since_ms}, {end}) for {symbol} {timeframe}")
        count = min(count, math.ceil((end - since_ms) / step))
        await self._ensure_markets()
        received: list[Any] = []
        token = _RECEIVED_OHLCV.set(received)
        try:
            rows = await self._call(
                "fetch_ohlcv",
                symbol,
                lambda: self._ex.fetch_ohlcv(symbol, timeframe, since_ms, count, {"until": end - 1}),
            )
        finally:
            _RECEIVED_OHLCV.reset(token)
        # What the parser saw, unless this exchange's fetch_ohlcv parses without its parse_ohlcv.
        frame = _page_frame(received or rows, since_ms, end)
        first = first_candle_ms if first_candle_ms is not None else self._first_candle.get((symbol, timeframe))
        return judge_page(
            OhlcvPage(symbol, timeframe, since_ms, end, frame),
            suspicious=self._suspicious,
            covered=since_ms <= last_closed_open(self._clock_ms(), timeframe) and (first is None or end > first),
            confirm_empty=confirm_empty,
            exchange_id=self.exchange_id,
        )

    async def iter_ohlcv_pages(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int, *, page_limit: int | None = None
    ) -> AsyncIterator[OhlcvPage]:
        """Pages covering [start_ms, end_ms) in order, each window `page_limit` candles (default and cap: the
        exchange's maximum). Errors propagate (SuspiciousEmptyPage included): restart from the failed page's
        start on the same client to confirm an empty window."""
        step = timeframe_ms(timeframe)
        size = min(page_limit or self.max_ohlcv_page, self.max_ohlcv_page)
        cursor = start_ms
        while cursor < end_ms:
            page_end = min(end_ms, cursor + size * step)
            yield await self.fetch_ohlcv_page(symbol, timeframe, cursor, size, end_ms=page_end)
            cursor = page_end

    async def fetch_order_book(self, symbol: str, limit: int | None = None) -> OrderBook:
        """Order book snapshot with up to `limit` levels a side (exchange default when None)."""
        await self._ensure_markets()
        book = await self._call("fetch_order_book", symbol, lambda: self._ex.fetch_order_book(symbol, limit))
        return OrderBook(symbol, book.get("timestamp"), _levels(book.get("bids")), _levels(book.get("asks")))

    async def fetch_balance(self) -> dict[str, AssetBalance]:
        """Balances with a non-zero total, by asset. Needs credentials (AuthenticationFailed otherwise)."""
        if not self._has_credentials:
            raise AuthenticationFailed(f"{self.exchange_id} fetch_balance: no API key/secret configured")
        await self._ensure_markets()
        raw = await self._call("fetch_balance", None, lambda: self._ex.fetch_balance())
        out: dict[str, AssetBalance] = {}
        for asset, total in (raw.get("total") or {}).items():
            if total:
                free = raw.get("free", {}).get(asset) or 0.0
                used = raw.get("used", {}).get(asset) or 0.0
                out[asset] = AssetBalance(asset, float(free), float(used), float(total))
        return out


def _page_frame(rows: Any, since_ms: int, end_ms: int) -> pl.DataFrame:
    """ccxt rows -> RECEIVED_SCHEMA, trimmed to [since_ms, end_ms) but keeping rows whose ts did not parse."""
    frame = parse_ccxt_rows(rows if isinstance(rows, list) else [])
    ts = pl.col("ts")
    inside = ts.is_null() | ((ts >= since_ms) & (ts < end_ms))
    return frame.filter(inside).sort("ts", nulls_last=True, maintain_order=True)


def _levels(levels: Any) -> np.ndarray:
    if not levels:
        return np.empty((0, 2), dtype=np.float64)
    return np.asarray([level[:2] for level in levels], dtype=np.float64)


def _market_info(market: dict[str, Any]) -> MarketInfo:
    created = market.get("created")
    return MarketInfo(
        symbol=str(market["symbol"]),
        market_id=str(market["id"]),
        base=str(market["base"]),
        quote=str(market["quote"]),
        active=market.get("active") is not False,
        listed_ms=int(created) if created is not None else None,
    )
