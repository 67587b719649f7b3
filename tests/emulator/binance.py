"""A loopback Binance spot REST emulator for tests and benchmarks.

A stdlib `ThreadingHTTPServer` on 127.0.0.1 (random free port) answers the endpoints ccxt's binance client
calls for markets, candles, order books and balances (/api/v3/ping, time, exchangeInfo, klines, depth, account)
from candles held in memory. It behaves like Binance where tests depend on it:

- klines honour startTime/endTime (both inclusive, on the candle open time) and limit (default 500, max 1000);
  candles missing from the loaded series are simply absent (exchange-side holes), as on Binance;
- request weight is metered per fixed window (`weight_window_s`, 60 s like Binance) from the same
  `WeightTable` the adapter paces itself with; over budget -> HTTP 429 {"code":-1003} with Retry-After to the
  end of the window; every answer carries X-MBX-USED-WEIGHT-1M;
- unknown or rejected symbols -> HTTP 400 {"code":-1121,"msg":"Invalid symbol."};
- signed /account checks X-MBX-APIKEY and the HMAC-SHA256 signature.

Scripted faults (429/418 with Retry-After, 5xx HTML, slow answers, HTTP 200 maintenance pages, any error code)
are queued with `inject` and friends and served to the next matching requests. Malformed klines ("abc" for a
price, a missing field, an object) are served in place of a candle with `corrupt_kline`, every time its range is
asked for. Every switch is thread-safe and may be flipped while clients are running. Every request is logged
(`requests()`), with the weight charged and the klines answered, so tests count weight and rows from the
emulator's own point of view.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import polars as pl
import pytest

from adapters.exchange import OHLCV_SCHEMA
from adapters.rate_limit import BINANCE_SPOT_WEIGHT_BUDGET, BINANCE_SPOT_WEIGHTS, WeightTable
from domain.timeframes import timeframe_ms

KLINE_INTERVALS = frozenset(
    {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
)
CANDLE_SCHEMA = OHLCV_SCHEMA
_API = "/api/v3/"
_MAINTENANCE_HTML = "<html><body><h1>System maintenance</h1><p>Back soon.</p></body></html>"


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, served to the next request that matches `endpoint` (None: any)."""

    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    retry_after_s: int | None = None
    delay_s: float = 0.0
    passthrough: bool = False  # after the delay, answer normally (a slow but correct response)
    endpoint: str | None = None  # last path segment, e.g. "klines"
    label: str = "fault"


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it. `at_s` is on the emulator clock (epoch seconds by default)."""

    at_s: float
    method: str
    path: str
    endpoint: str
    params: Mapping[str, str]
    status: int
    weight: float  # weight charged to the window (0 for faults and 429s)
    used_weight: float  # weight used in the window after this request
    window: int
    fault: str | None
    rows: int | None = None  # klines in the answer (klines requests answered 200 only)


@dataclass
class _Series:
    """Candles of one (symbol, timeframe): ts (n,) int64 sorted, values (n, 5) float64 = OHLCV."""

    ts: np.ndarray
    values: np.ndarray
    step_ms: int
    rows_json: list[str] | None = None  # Binance kline rows, encoded once on first request
    corrupted: dict[int, str] = field(default_factory=dict)  # ts -> JSON served instead of that candle

    def encoded(self) -> list[str]:
        # Encoding once keeps the emulator cheap next to the client it serves (same process, same GIL).
        if self.rows_json is None:
            self.rows_json = [
                f'[{t},"{o!r}","{h!r}","{lo!r}","{c!r}","{v!r}",{t + self.step_ms - 1},"{v * c!r}",100,"0","0","0"]'
                for t, (o, h, lo, c, v) in zip(self.ts.tolist(), self.values.tolist(), strict=True)
            ]
            for ts, row in self.corrupted.items():
                self.rows_json[int(np.searchsorted(self.ts, ts))] = row
        return self.rows_json


class _Encoded(str):
    """A response body that is already JSON."""


class _Klines(_Encoded):
    """A klines answer, already JSON, that knows how many klines it holds."""

    rows: int = 0


def _step_ms(timeframe: str) -> int:
    return timeframe_ms(timeframe) if timeframe[-1] != "M" else 30 * 86_400_000  # 1M: close time is nominal


_NO_SERIES = _Series(np.empty(0, np.int64), np.empty((0, 5)), 1)


@dataclass
class _Market:
    symbol: str
    market_id: str
    base: str
    quote: str
    status: str = "TRADING"
    series: dict[str, _Series] = field(default_factory=dict)
    book: tuple[list[tuple[float, float]], list[tuple[float, float]]] | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: BinanceEmulator

    def __init__(self, emulator: BinanceEmulator) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.connections_lock:
            self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, closed sessions) are part of the tests, not errors.
        return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real thing
    server: _Server
    timeout = 30  # idle keep-alive connections are dropped after this many seconds

    def do_GET(self) -> None:
        self.server.emulator._handle(self)

    def do_POST(self) -> None:
        self.server.emulator._handle(self)

    def do_DELETE(self) -> None:
        self.server.emulator._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        return


class BinanceEmulator:
    """The emulator. Use `run_binance_emulator()` or the `binance_emulator` fixture to start and stop it."""

    def __init__(
        self,
        *,
        weight_budget: float | None = None,
        weight_window_s: float = 60.0,
        weights: WeightTable = BINANCE_SPOT_WEIGHTS,
        api_key: str | None = None,
        secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`weight_budget`: weight allowed per `weight_window_s` (None: unmetered, but still counted)."""
        self._lock = threading.Lock()
        self._clock = clock
        self._weights = weights
        self._budget = weight_budget
        self._window_s = weight_window_s
        self._window = -1
        self._used = 0.0
        self._api_key = api_key
        self._secret = secret
        self._markets: dict[str, _Market] = {}
        self._rejected: set[str] = set()
        self._faults: deque[Fault] = deque()
        self._log: list[RequestRecord] = []
        self._balances: dict[str, tuple[float, float]] = {"USDT": (1000.0, 0.0), "BTC": (0.5, 0.1)}
        self._update_id = 1
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> BinanceEmulator:
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="binance-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a slow fault
        server.shutdown()
        with server.connections_lock:
            conns = list(server.connections)
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40123 (point every ccxt `urls['api']` entry's host here)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # markets and data ----------------------------------------------------------------------------------------
    def add_market(
        self, symbol: str, *, timeframe: str = "1m", candles: pl.DataFrame | None = None, status: str = "TRADING"
    ) -> None:
        """List `symbol` ("BASE/QUOTE") and optionally serve `candles` (columns ts, open..volume) for it."""
        base, quote = symbol.split("/")
        with self._lock:
            self._markets[symbol] = _Market(symbol, base + quote, base, quote, status)
        if candles is not None:
            self.set_candles(symbol, timeframe, candles)

    def set_candles(self, symbol: str, timeframe: str, candles: pl.DataFrame) -> None:
        """Serve `candles` for (symbol, timeframe), sorted by ts; replaces what was there."""
        frame = candles.select(list(CANDLE_SCHEMA)).cast(CANDLE_SCHEMA).sort("ts")
        ts = frame["ts"].to_numpy().astype(np.int64)
        values = frame.select(["open", "high", "low", "close", "volume"]).to_numpy().astype(np.float64)
        with self._lock:
            self._markets[symbol].series[timeframe] = _Series(ts, values, _step_ms(timeframe))

    def omit_candles(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> int:
        """Remove the candles opening in [start_ms, end_ms) (an exchange-side hole); returns how many."""
        with self._lock:
            series = self._markets[symbol].series[timeframe]
            keep = (series.ts < start_ms) | (series.ts >= end_ms)
            corrupted = {t: row for t, row in series.corrupted.items() if not start_ms <= t < end_ms}
            self._markets[symbol].series[timeframe] = _Series(
                series.ts[keep], series.values[keep], series.step_ms, corrupted=corrupted
            )
            return int((~keep).sum())

    def kline(self, symbol: str, timeframe: str, ts_ms: int) -> list[Any]:
        """The Binance kline served for the candle opening at `ts_ms` (12 fields; prices as strings)."""
        with self._lock:
            series = self._markets[symbol].series[timeframe]
            row: list[Any] = json.loads(series.encoded()[self._index(series, ts_ms)])
        return row

    def corrupt_kline(self, symbol: str, timeframe: str, ts_ms: int, row: Any) -> None:
        """Serve `row` (any JSON value, sent as given: a price "abc", a field missing, an object, a timestamp
        that is not a number) in place of the candle opening at `ts_ms`, whenever a request's range covers
        `ts_ms`. The candle leaves `candles()`: it is no longer served as a valid candle."""
        with self._lock:
            series = self._markets[symbol].series[timeframe]
            self._index(series, ts_ms)
            series.corrupted[ts_ms] = json.dumps(row, separators=(",", ":"))
            series.rows_json = None

    @staticmethod
    def _index(series: _Series, ts_ms: int) -> int:
        i = int(np.searchsorted(series.ts, ts_ms))
        if i == len(series.ts) or int(series.ts[i]) != ts_ms:
            raise KeyError(f"no candle opens at {ts_ms}")
        return i

    def candles(self, symbol: str, timeframe: str) -> pl.DataFrame:
        """The valid candles served for (symbol, timeframe), as a frame with the candle schema (corrupted klines
        have no such form and are left out)."""
        with self._lock:
            series = self._markets[symbol].series[timeframe]
        keep = ~np.isin(series.ts, np.fromiter(series.corrupted, dtype=np.int64, count=len(series.corrupted)))
        ts, values = series.ts[keep], series.values[keep]
        data: dict[str, Any] = {"ts": ts}
        for i, name in enumerate(["open", "high", "low", "close", "volume"]):
            data[name] = values[:, i]
        return pl.DataFrame(data, schema=CANDLE_SCHEMA)

    def set_order_book(self, symbol: str, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        """Serve this book for `symbol` instead of the synthetic one."""
        with self._lock:
            self._markets[symbol].book = (bids, asks)

    def set_balances(self, balances: Mapping[str, tuple[float, float]]) -> None:
        """Balances served by /account: asset -> (free, locked)."""
        with self._lock:
            self._balances = dict(balances)

    # switches ------------------------------------------------------------------------------------------------
    def inject(self, fault: Fault, times: int = 1) -> None:
        """Serve `fault` to the next `times` matching requests (after faults queued earlier)."""
        with self._lock:
            self._faults.extend([fault] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def rate_limit_next(self, times: int = 1, *, retry_after_s: int = 1, endpoint: str | None = None) -> None:
        """HTTP 429 {"code":-1003} with Retry-After."""
        body = json.dumps({"code": -1003, "msg": "Too many requests; please use the websocket."})
        self.inject(Fault(429, body, retry_after_s=retry_after_s, endpoint=endpoint, label="429"), times)

    def ban_next(self, times: int = 1, *, retry_after_s: int = 120, endpoint: str | None = None) -> None:
        """HTTP 418 (IP auto-banned) with Retry-After."""
        body = json.dumps({"code": -1003, "msg": "Way too much request weight used; IP banned."})
        self.inject(Fault(418, body, retry_after_s=retry_after_s, endpoint=endpoint, label="418"), times)

    def server_error_next(self, times: int = 1, *, status: int = 503, endpoint: str | None = None) -> None:
        """An HTML 5xx page, as a load balancer would send."""
        body = f"<html><body><h1>{status} Service Unavailable</h1></body></html>"
        self.inject(Fault(status, body, "text/html", endpoint=endpoint, label=str(status)), times)

    def slow_next(self, times: int = 1, *, delay_s: float, endpoint: str | None = None) -> None:
        """Answer correctly, but only after `delay_s` seconds (beyond the client timeout, usually)."""
        self.inject(Fault(delay_s=delay_s, passthrough=True, endpoint=endpoint, label="slow"), times)

    def maintenance_next(self, times: int = 1, *, endpoint: str | None = None) -> None:
        """HTTP 200 with an HTML maintenance page instead of JSON."""
        fault = Fault(200, _MAINTENANCE_HTML, "text/html", endpoint=endpoint, label="maintenance")
        self.inject(fault, times)

    def error_code_next(self, times: int = 1, *, status: int, code: int, msg: str, endpoint: str | None = None) -> None:
        """Any Binance error body, e.g. status=503, code=-1008 (server busy)."""
        body = json.dumps({"code": code, "msg": msg})
        self.inject(Fault(status, body, endpoint=endpoint, label=str(code)), times)

    def reject_symbol(self, symbol: str) -> None:
        """Keep `symbol` listed in exchangeInfo but answer -1121 for its klines/depth (delisted meanwhile)."""
        with self._lock:
            self._rejected.add(symbol)

    def set_weight_budget(self, budget: float | None, *, window_s: float | None = None) -> None:
        with self._lock:
            self._budget = budget
            if window_s is not None:
                self._window_s = window_s
                self._window = -1

    def reset_weight(self) -> None:
        """Forget the weight used in the current window."""
        with self._lock:
            self._used = 0.0

    # the log -------------------------------------------------------------------------------------------------
    def requests(self, endpoint: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._log if endpoint is None or r.endpoint == endpoint]

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def weight_by_window(self) -> dict[int, float]:
        """Weight charged per fixed window index (floor(at_s / window_s))."""
        out: dict[int, float] = {}
        for r in self.requests():
            out[r.window] = out.get(r.window, 0.0) + r.weight
        return out

    def rate_limited(self) -> list[RequestRecord]:
        """Every 429/418 answered, with its time."""
        return [r for r in self.requests() if r.status in (418, 429)]

    # request handling ----------------------------------------------------------------------------------------
    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.endpoint is None or fault.endpoint == endpoint:
                    del self._faults[i]
                    return fault
        return None

    def _charge(self, weight: float) -> tuple[bool, float, int, int]:
        """Meter `weight`: (allowed, used after, window index, seconds to the window's end)."""
        with self._lock:
            now = self._clock()
            window = int(now // self._window_s)
            if window != self._window:
                self._window, self._used = window, 0.0
            retry_after = max(1, math.ceil((window + 1) * self._window_s - now))
            if self._budget is not None and self._used + weight > self._budget:
                return False, self._used, window, retry_after
            self._used += weight
            return True, self._used, window, retry_after

    def _handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        endpoint = parts.path.rsplit("/", 1)[-1]
        at = self._clock()
        fault = self._take_fault(endpoint)
        if fault is not None and fault.delay_s:
            self._stopping.wait(fault.delay_s)
        if fault is not None and not fault.passthrough:
            headers = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else {}
            with self._lock:
                used, window = self._used, self._window
            self._record(at, handler.command, parts.path, endpoint, params, fault.status, 0.0, used, window, fault)
            self._send(handler, fault.status, fault.body, fault.content_type, headers, used)
            return
        if not parts.path.startswith(_API):
            body = "<html><body><h1>404 Not Found</h1></body></html>"
            self._record(at, handler.command, parts.path, endpoint, params, 404, 0.0, 0.0, -1, fault)
            self._send(handler, 404, body, "text/html", {}, 0.0)
            return
        limit = params.get("limit")
        weight = self._weights.weight(endpoint, int(limit) if limit and limit.isdigit() else None)
        allowed, used, window, retry_after = self._charge(weight)
        if not allowed:
            msg = (
                f"Too much request weight used; current limit is {self._budget:g} request weight per "
                f"{self._window_s:g} s. Please use WebSocket Streams for live updates to avoid polling the API."
            )
            self._record(at, handler.command, parts.path, endpoint, params, 429, 0.0, used, window, fault)
            body = json.dumps({"code": -1003, "msg": msg})
            self._send(handler, 429, body, "application/json", {"Retry-After": str(retry_after)}, used)
            return
        status, payload = self._answer(endpoint, params, parts.query, handler)
        rows = payload.rows if isinstance(payload, _Klines) else None
        self._record(at, handler.command, parts.path, endpoint, params, status, weight, used, window, fault, rows)
        body = payload if isinstance(payload, _Encoded) else json.dumps(payload, separators=(",", ":"))
        self._send(handler, status, body, "application/json", {}, used)

    def _record(
        self,
        at: float,
        method: str,
        path: str,
        endpoint: str,
        params: dict[str, str],
        status: int,
        weight: float,
        used: float,
        window: int,
        fault: Fault | None,
        rows: int | None = None,
    ) -> None:
        label = fault.label if fault is not None else None
        record = RequestRecord(at, method, path, endpoint, params, status, weight, used, window, label, rows)
        with self._lock:
            self._log.append(record)

    @staticmethod
    def _send(
        handler: _Handler, status: int, body: str, content_type: str, headers: dict[str, str], used: float
    ) -> None:
        data = body.encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("X-MBX-USED-WEIGHT-1M", f"{used:g}")
            handler.send_header("X-MBX-USED-WEIGHT", f"{used:g}")
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client gave up (timeout) or went away

    def _error(self, code: int, msg: str, status: int = 400) -> tuple[int, Any]:
        return status, {"code": code, "msg": msg}

    def _market_for(self, params: dict[str, str]) -> _Market | tuple[int, Any]:
        market_id = params.get("symbol")
        if not market_id:
            return self._error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        with self._lock:
            market = next((m for m in self._markets.values() if m.market_id == market_id), None)
            rejected = market is not None and market.symbol in self._rejected
        if market is None or rejected:
            return self._error(-1121, "Invalid symbol.")
        return market

    def _answer(self, endpoint: str, params: dict[str, str], query: str, handler: _Handler) -> tuple[int, Any]:
        if endpoint == "ping":
            return 200, {}
        if endpoint == "time":
            return 200, {"serverTime": int(self._clock() * 1000)}
        if endpoint == "exchangeInfo":
            return 200, self._exchange_info()
        if endpoint == "klines":
            return self._klines(params)
        if endpoint == "depth":
            return self._depth(params)
        if endpoint == "account":
            return self._account(query, handler)
        return 404, {"code": -1000, "msg": f"Unknown endpoint {endpoint}."}

    def _exchange_info(self) -> dict[str, Any]:
        with self._lock:
            markets = list(self._markets.values())
            budget = self._budget if self._budget is not None else BINANCE_SPOT_WEIGHT_BUDGET
        return {
            "timezone": "UTC",
            "serverTime": int(self._clock() * 1000),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": budget},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(m) for m in markets],
        }

    def _klines(self, params: dict[str, str]) -> tuple[int, Any]:
        market = self._market_for(params)
        if isinstance(market, tuple):
            return market
        interval = params.get("interval", "")
        if interval not in KLINE_INTERVALS:
            return self._error(-1120, "Invalid interval.")
        try:
            limit = int(params.get("limit", "500"))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return self._error(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return self._error(-1130, "Data sent for parameter 'limit' is not valid.")
        with self._lock:
            series = market.series.get(interval, _NO_SERIES)
            rows = series.encoded()
        lo = int(np.searchsorted(series.ts, start, "left")) if start is not None else 0
        hi = int(np.searchsorted(series.ts, end, "right")) if end is not None else len(series.ts)
        if start is None:
            lo = max(lo, hi - limit)  # no startTime: the newest `limit` candles up to endTime
        else:
            hi = min(hi, lo + limit)
        answer = _Klines("[" + ",".join(rows[lo:hi]) + "]")
        answer.rows = max(0, hi - lo)
        return 200, answer

    def _depth(self, params: dict[str, str]) -> tuple[int, Any]:
        market = self._market_for(params)
        if isinstance(market, tuple):
            return market
        limit = int(params.get("limit", "100"))
        if not 1 <= limit <= 5000:
            return self._error(-1130, "Data sent for parameter 'limit' is not valid.")
        with self._lock:
            self._update_id += 1
            update_id = self._update_id
            book = market.book
            last_close = next((float(s.values[-1, 3]) for s in market.series.values() if len(s.ts)), 100.0)
        if book is None:
            tick = last_close * 1e-4
            bids = [(last_close - tick * (i + 1), 1.0 + (i % 7) * 0.5) for i in range(limit)]
            asks = [(last_close + tick * (i + 1), 1.0 + (i % 5) * 0.5) for i in range(limit)]
        else:
            bids, asks = book[0][:limit], book[1][:limit]
        return 200, {
            "lastUpdateId": update_id,
            "bids": [[repr(p), repr(q)] for p, q in bids],
            "asks": [[repr(p), repr(q)] for p, q in asks],
        }

    def _account(self, query: str, handler: _Handler) -> tuple[int, Any]:
        key = handler.headers.get("X-MBX-APIKEY")
        if self._api_key is None or self._secret is None or key != self._api_key:
            return self._error(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
        unsigned, _, signature = query.rpartition("&signature=")
        expected = hmac.new(self._secret.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return self._error(-1022, "Signature for this request is not valid.")
        with self._lock:
            balances = dict(self._balances)
        return 200, {
            "makerCommission": 10,
            "takerCommission": 10,
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": True,
            "updateTime": int(self._clock() * 1000),
            "accountType": "SPOT",
            "balances": [{"asset": a, "free": repr(f), "locked": repr(lk)} for a, (f, lk) in balances.items()],
            "permissions": ["SPOT"],
        }


def _symbol_info(market: _Market) -> dict[str, Any]:
    return {
        "symbol": market.market_id,
        "status": market.status,
        "baseAsset": market.base,
        "baseAssetPrecision": 8,
        "quoteAsset": market.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.00000001",
                "maxPrice": "1000000.00",
                "tickSize": "0.00000001",
            },
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.0", "stepSize": "0.00001"},
            {"filterType": "NOTIONAL", "minNotional": "5.0", "applyMinToMarket": True, "maxNotional": "9000000.0"},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


# fixtures and data -----------------------------------------------------------------------------------------------
@contextmanager
def run_binance_emulator(**kwargs: Any) -> Iterator[BinanceEmulator]:
    """Start an emulator (keyword arguments as `BinanceEmulator`), yield it, stop it."""
    emulator = BinanceEmulator(**kwargs).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def binance_emulator() -> Iterator[BinanceEmulator]:
    """A started, unmetered emulator with no markets (register with `pytest_plugins` or import it)."""
    with run_binance_emulator() as emulator:
        yield emulator


def random_walk_candles(
    start_ms: int,
    count: int,
    *,
    timeframe: str = "1m",
    start_price: float = 100.0,
    volatility: float = 0.002,
    seed: int = 0,
) -> pl.DataFrame:
    """`count` valid candles from `start_ms` on the `timeframe` grid: a seeded geometric random walk."""
    rng = np.random.default_rng(seed)
    closes = start_price * np.exp(np.cumsum(rng.normal(0.0, volatility, count)))
    opens = np.concatenate([[start_price], closes[:-1]])
    wick = np.abs(rng.normal(0.0, volatility / 2, (2, count)))
    return pl.DataFrame(
        {
            "ts": start_ms + np.arange(count, dtype=np.int64) * timeframe_ms(timeframe),
            "open": opens,
            "high": np.maximum(opens, closes) * (1 + wick[0]),
            "low": np.minimum(opens, closes) * (1 - wick[1]),
            "close": closes,
            "volume": rng.lognormal(3.0, 0.5, count),
        },
        schema=CANDLE_SCHEMA,
    )


def read_candle_csv(path: Path) -> pl.DataFrame:
    """A ../shared/data/candles CSV (timestamp,open,high,low,close,volume) as a frame with the candle schema."""
    frame = pl.read_csv(path).rename({"timestamp": "ts"})
    return frame.select(list(CANDLE_SCHEMA)).cast(CANDLE_SCHEMA)
