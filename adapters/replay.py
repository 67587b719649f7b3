"""An offline exchange: the async interface of `adapters.exchange.ExchangeClient` over stored or simulated candles.

It serves `make run` with no internet and the tests. Sources:

- `FileCandleSource`: CSV/Parquet files with columns ``timestamp`` (or ``ts``; epoch ms, candle open), open,
  high, low, close, volume, named ``BASE-QUOTE_TIMEFRAME.csv`` (``BTC-USDT_1m.csv`` -> "BTC/USDT", "1m") as
  in ../shared/data/candles, or given explicitly.
- `SimulatedCandleSource`: `domain.market_sim` candles per symbol (seeded per symbol), with regimes, holes and
  bad rows; `ReplayExchange.simulated(...)` builds the usual setup (N days of 1m history up to now).

Rules that make it behave like an exchange:

- No future: only candles that have CLOSED at ``clock_ms()`` are served (ts + timeframe <= now); the clock is
  injectable, so a test can step time.
- Higher timeframes are aggregated from the finest native timeframe that divides them (1m -> 5m/15m/1h/...,
  open first, high max, low min, close last, volume sum, on the epoch-aligned grid); each series is built
  once and cached, pages are slices found by binary search (the candle columns zero-copy).
- Raw data is served raw: holes stay holes, bad rows stay bad (validation's job). Pages have the ccxt
  adapter's `domain.candles.RECEIVED_SCHEMA`; the stored values are already typed, so ``raw``,
  ``parse_error`` and ``parse_detail`` are null (the typed columns are the values as served). An empty page
  inside the covered range raises SuspiciousEmptyPage the first time and comes back ``confirmed_empty`` when
  asked again, exactly like the ccxt adapter.
- Order books are synthetic around the last closed 1m close; balances are configured paper balances.
- `inject_fault` queues errors for the next calls concerning a symbol (retry and isolation tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from adapters.exchange import (
    OHLCV_SCHEMA,
    AssetBalance,
    LatencyStats,
    LatencyTracker,
    MarketInfo,
    OhlcvPage,
    OrderBook,
    judge_page,
)
from adapters.rate_limit import WeightLimiter
from domain.candles import CANDLE_SCHEMA
from domain.errors import (
    BadRequestError,
    BadSymbolError,
    InvalidDataError,
    StrategyEngineError,
)
from domain.market_sim import MarketSimConfig, series_seed, simulate_candles, synthetic_order_book
from domain.timeframes import DAY_MS, align_down, last_closed_open, timeframe_ms

__all__ = [
    "CandleSource",
    "FileCandleSource",
    "ReplayExchange",
    "SimulatedCandleSource",
    "aggregate_candles",
]

_EXCHANGE_WIDE = "*"
_FILE_NAME = re.compile(r"^(?P<base>[A-Za-z0-9]+)-(?P<quote>[A-Za-z0-9]+)_(?P<tf>\d+[smhdw])\.(csv|parquet)$")
#: Typical prices, so simulated markets look like the ones they are named after (quote units).
_TYPICAL_PRICE = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "BNB": 600.0, "XRP": 0.6, "ADA": 0.45}


class CandleSource(Protocol):
    """Where a replay exchange gets candles: native timeframes per symbol, loaded whole."""

    def symbols(self) -> list[str]:
        """Unified symbols ("BTC/USDT") the source holds."""
        ...

    def timeframes(self, symbol: str) -> list[str]:
        """Native timeframes stored for `symbol`."""
        ...

    def load(self, symbol: str, timeframe: str) -> pl.DataFrame:
        """OHLCV_SCHEMA candles of a native timeframe, raw (holes and bad rows included), sorted by ts."""
        ...


def _read_candle_file(path: Path) -> pl.DataFrame:
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    if "ts" not in frame.columns:
        for alias in ("timestamp", "date", "time"):
            if alias in frame.columns:
                frame = frame.rename({alias: "ts"})
                break
    missing = [c for c in OHLCV_SCHEMA.names() if c not in frame.columns]
    if missing:
        raise InvalidDataError(f"candle file {path} lacks column(s) {missing}; has {frame.columns}")
    ts = pl.col("ts")
    if isinstance(frame.schema["ts"], pl.Datetime | pl.Date):
        ts = ts.dt.epoch("ms")
    return frame.select(
        ts.cast(pl.Int64).alias("ts"), *(pl.col(c).cast(pl.Float64, strict=False) for c in OHLCV_SCHEMA.names()[1:])
    ).sort("ts")


class FileCandleSource:
    """Candles from CSV/Parquet files, read on first use."""

    def __init__(self, files: Mapping[tuple[str, str], Path]) -> None:
        """`files`: (symbol, native timeframe) -> path."""
        self._files = dict(files)
        self._cache: dict[tuple[str, str], pl.DataFrame] = {}

    @classmethod
    def from_directory(cls, directory: Path | str) -> FileCandleSource:
        """Every ``BASE-QUOTE_TF.csv|parquet`` in `directory` (Parquet wins over CSV for the same series)."""
        root = Path(directory)
        if not root.is_dir():
            raise InvalidDataError(f"candle directory {root} does not exist")
        files: dict[tuple[str, str], Path] = {}
        for path in sorted(root.iterdir(), key=lambda p: p.suffix != ".csv"):  # CSV first, Parquet overrides
            match = _FILE_NAME.match(path.name)
            if match:
                files[(f"{match['base']}/{match['quote']}", match["tf"])] = path
        if not files:
            raise InvalidDataError(f"no BASE-QUOTE_TF.csv/.parquet candle files in {root}")
        return cls(files)

    def symbols(self) -> list[str]:
        return sorted({symbol for symbol, _ in self._files})

    def timeframes(self, symbol: str) -> list[str]:
        return sorted((tf for s, tf in self._files if s == symbol), key=timeframe_ms)

    def load(self, symbol: str, timeframe: str) -> pl.DataFrame:
        key = (symbol, timeframe)
        if key not in self._cache:
            self._cache[key] = _read_candle_file(self._files[key])
        return self._cache[key]


class SimulatedCandleSource:
    """Seeded `domain.market_sim` candles for [start_ms, end_ms) per symbol, generated on first use."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        start_ms: int,
        end_ms: int,
        seed: int = 0,
        timeframe: str = "1m",
        config: MarketSimConfig | None = None,
        start_prices: Mapping[str, float] | None = None,
    ) -> None:
        if end_ms <= start_ms:
            raise InvalidDataError(f"simulated range [{start_ms}, {end_ms}) is empty")
        self._symbols = list(dict.fromkeys(symbols))
        self.start_ms, self.end_ms, self.seed, self.timeframe = start_ms, end_ms, seed, timeframe
        self._config = config or MarketSimConfig()
        self._start_prices = dict(start_prices or {})
        self._truth: dict[str, pl.DataFrame] = {}

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def timeframes(self, symbol: str) -> list[str]:
        return [self.timeframe]

    def start_price(self, symbol: str) -> float:
        """The simulated market's first open: configured, typical for the base asset, or seeded."""
        if symbol in self._start_prices:
            return self._start_prices[symbol]
        base = symbol.split("/")[0]
        if base in _TYPICAL_PRICE:
            return _TYPICAL_PRICE[base]
        rng = np.random.default_rng(series_seed(self.seed, symbol, "price"))
        return float(10 ** rng.uniform(-1.0, 3.0))

    def truth(self, symbol: str) -> pl.DataFrame:
        """The generated candles with their ``regime`` and ``corruption`` columns (what tests check against)."""
        if symbol not in self._truth:
            if symbol not in self._symbols:
                raise BadSymbolError(f"replay: no simulated market {symbol}")
            config = dataclasses.replace(self._config, start_price=self.start_price(symbol))
            self._truth[symbol] = simulate_candles(
                start_ms=self.start_ms,
                end_ms=self.end_ms,
                timeframe=self.timeframe,
                seed=series_seed(self.seed, symbol),
                config=config,
            )
        return self._truth[symbol]

    def load(self, symbol: str, timeframe: str) -> pl.DataFrame:
        return self.truth(symbol).select(OHLCV_SCHEMA.names())


def aggregate_candles(candles: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Candles of a finer timeframe -> `timeframe` on the epoch-aligned grid (open first, high max, low min,
    close last, volume sum). Buckets with any base candle appear, as an exchange builds them from the trades
    it has; whether a bucket has closed is the caller's concern."""
    step = timeframe_ms(timeframe)
    return (
        candles.sort("ts")
        .group_by((pl.col("ts") - pl.col("ts") % step).alias("bucket"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .rename({"bucket": "ts"})
        .select(OHLCV_SCHEMA.names())
    )


def _as_received(candles: pl.DataFrame) -> pl.DataFrame:
    """Typed candles -> RECEIVED_SCHEMA: row_index = position in the page, no raw values or parse errors."""
    return candles.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row_index"),
        *(pl.col(name).cast(dtype) for name, dtype in CANDLE_SCHEMA.items()),
        *(pl.lit(None, pl.String).alias(name) for name in ("raw", "parse_error", "parse_detail")),
    )


@dataclass
class _Series:
    frame: pl.DataFrame
    ts: np.ndarray = field(repr=False)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ReplayExchange:
    """The `ExchangeClient` interface over a `CandleSource`. Use as ``async with ReplayExchange(...) as ex``."""

    def __init__(
        self,
        source: CandleSource,
        *,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        exchange_id: str = "replay",
        max_page: int = 1000,
        seed: int = 0,
        balances: Mapping[str, float] | None = None,
        book_spread_bps: float = 2.0,
        simulated_latency_ms: float = 0.0,
        limiter: WeightLimiter | None = None,
    ) -> None:
        """`clock_ms`: epoch ms "now" (nothing after it is served). `max_page`: candles per request.
        `balances`: paper balances by asset (default 10,000 USDT). `simulated_latency_ms`: awaited per call.
        `limiter`: weight accounting (default: a private one that never waits; 1 weight per request)."""
        if max_page < 1:
            raise InvalidDataError("max_page must be >= 1")
        self.exchange_id = exchange_id
        self.api_url: str | None = None
        self._source = source
        self._clock_ms = clock_ms
        self._max_page = max_page
        self._seed = seed
        self._balances = dict(balances) if balances is not None else {"USDT": 10_000.0}
        self._spread_bps = book_spread_bps
        self._delay_s = simulated_latency_ms / 1000.0
        self._limiter = limiter or WeightLimiter(1e12, window_s=60.0)
        self._latency = LatencyTracker()
        self._series: dict[tuple[str, str], _Series] = {}
        self._suspicious: set[tuple[str, str, int, int]] = set()
        self._faults: dict[str, deque[StrategyEngineError]] = {}
        self._closed = False

    @classmethod
    def simulated(
        cls,
        symbols: Sequence[str],
        *,
        days: int = 30,
        seed: int = 0,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        horizon_ms: int = DAY_MS,
        config: MarketSimConfig | None = None,
        max_page: int = 1000,
        balances: Mapping[str, float] | None = None,
        simulated_latency_ms: float = 0.0,
    ) -> ReplayExchange:
        """Simulated 1m markets from `days` before now (aligned to a UTC midnight, so the same day gives the
        same data) to `horizon_ms` after now (as the clock advances, closed candles keep appearing)."""
        now = clock_ms()
        start = align_down(now - days * DAY_MS, "1d")
        source = SimulatedCandleSource(symbols, start_ms=start, end_ms=now + horizon_ms, seed=seed, config=config)
        return cls(
            source,
            clock_ms=clock_ms,
            seed=seed,
            max_page=max_page,
            balances=balances,
            simulated_latency_ms=simulated_latency_ms,
        )

    def __repr__(self) -> str:
        return f"ReplayExchange(exchange_id={self.exchange_id!r}, symbols={len(self._source.symbols())})"

    async def __aenter__(self) -> ReplayExchange:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release; kept for interface parity (idempotent)."""
        self._closed = True

    @property
    def source(self) -> CandleSource:
        return self._source

    @property
    def limiter(self) -> WeightLimiter:
        """Weight accounting of this replay (1 weight per request)."""
        return self._limiter

    @property
    def max_ohlcv_page(self) -> int:
        """Most candles served per OHLCV request."""
        return self._max_page

    def latency(self, symbol: str | None = None) -> LatencyStats | None:
        """Measured call latency for `symbol` (None: exchange-wide calls such as markets and balance)."""
        return self._latency.stats(symbol or _EXCHANGE_WIDE)

    def latency_snapshot(self) -> dict[str, LatencyStats]:
        """Latency per symbol ("*" for exchange-wide calls)."""
        return self._latency.snapshot()

    def inject_fault(self, error: StrategyEngineError, *, symbol: str | None = None, times: int = 1) -> None:
        """Raise `error` on the next `times` calls concerning `symbol` (None: on any call)."""
        queue = self._faults.setdefault(symbol or _EXCHANGE_WIDE, deque())
        queue.extend([error] * times)

    async def _enter(self, symbol: str | None) -> float:
        """Common prologue of every call: weight, simulated latency, injected faults. Returns the start."""
        started = time.monotonic()
        await self._limiter.acquire(1.0)
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        for key in (symbol, _EXCHANGE_WIDE):
            queue = self._faults.get(key) if key is not None else None
            if queue:
                error = queue.popleft()
                self._latency.record(symbol or _EXCHANGE_WIDE, time.monotonic() - started)
                raise error
        return started

    def _done(self, symbol: str | None, started: float) -> None:
        self._latency.record(symbol or _EXCHANGE_WIDE, time.monotonic() - started)

    def _known(self, symbol: str, action: str) -> None:
        if symbol not in self._source.symbols():
            raise BadSymbolError(f"{self.exchange_id} {action} {symbol}: the replay has no such market")

    def _series_for(self, symbol: str, timeframe: str) -> _Series:
        key = (symbol, timeframe)
        cached = self._series.get(key)
        if cached is not None:
            return cached
        step = timeframe_ms(timeframe)
        natives = self._source.timeframes(symbol)
        usable = [tf for tf in natives if step % timeframe_ms(tf) == 0]
        if not usable:
            raise BadRequestError(
                f"{self.exchange_id} fetch_ohlcv {symbol}: cannot build {timeframe} from stored {natives}"
            )
        native = max(usable, key=timeframe_ms)
        frame = self._source.load(symbol, native)
        if native != timeframe:
            frame = aggregate_candles(frame, timeframe)
        frame = frame.rechunk()
        series = _Series(frame, frame["ts"].to_numpy())
        self._series[key] = series
        return series

    async def load_markets(self, *, reload: bool = False) -> dict[str, MarketInfo]:
        """Every market of the source, by unified symbol ("BTC/USDT")."""
        started = await self._enter(None)
        markets = {}
        for symbol in self._source.symbols():
            base, _, quote = symbol.partition("/")
            series = self._series_for(symbol, self._source.timeframes(symbol)[0])
            listed = int(series.ts[0]) if series.ts.size else None
            markets[symbol] = MarketInfo(symbol, base + quote, base, quote, True, listed)
        self._done(None, started)
        return markets

    async def market_info(self, symbol: str) -> MarketInfo:
        """One market; BadSymbolError when the source does not hold it."""
        markets = await self.load_markets()
        if symbol not in markets:
            raise BadSymbolError(f"{self.exchange_id} market_info {symbol}: not listed by the replay")
        return markets[symbol]

    async def first_candle_ms(self, symbol: str, timeframe: str) -> int | None:
        """Open time of the first `timeframe` candle that has closed by now; None when there is none yet."""
        started = await self._enter(symbol)
        self._known(symbol, "fetch_ohlcv")
        series = self._series_for(symbol, timeframe)
        self._done(symbol, started)
        if series.ts.size == 0 or int(series.ts[0]) > last_closed_open(self._clock_ms(), timeframe):
            return None
        return int(series.ts[0])

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
        """Closed candles opening in [since_ms, end_ms) (end default: since + limit candles), at most
        `max_ohlcv_page`, as stored (bad rows included), in an `OhlcvPage` with RECEIVED_SCHEMA. Empty-page
        rules as in `ExchangeClient.fetch_ohlcv_page`."""
        started = await self._enter(symbol)
        self._known(symbol, "fetch_ohlcv")
        step = timeframe_ms(timeframe)
        count = min(limit or self._max_page, self._max_page)
        end = end_ms if end_ms is not None else since_ms + count * step
        if end <= since_ms:
            raise InvalidDataError(f"empty OHLCV window [{since_ms}, {end}) for {symbol} {timeframe}")
        series = self._series_for(symbol, timeframe)
        now = self._clock_ms()
        # Only closed candles: ts + step <= now.
        upper = min(end, now - step + 1)
        lo = int(np.searchsorted(series.ts, since_ms, side="left"))
        hi = int(np.searchsorted(series.ts, upper, side="left")) if upper > since_ms else lo
        frame = _as_received(series.frame.slice(lo, min(hi - lo, count)))
        self._done(symbol, started)
        first = first_candle_ms if first_candle_ms is not None else (int(series.ts[0]) if series.ts.size else None)
        return judge_page(
            OhlcvPage(symbol, timeframe, since_ms, end, frame),
            suspicious=self._suspicious,
            covered=since_ms <= last_closed_open(now, timeframe) and (first is None or end > first),
            confirm_empty=confirm_empty,
            exchange_id=self.exchange_id,
        )

    async def iter_ohlcv_pages(
        self, symbol: str, timeframe: str, start_ms: int, end_ms: int, *, page_limit: int | None = None
    ) -> AsyncIterator[OhlcvPage]:
        """Pages covering [start_ms, end_ms) in order, each window `page_limit` candles (default and cap:
        `max_ohlcv_page`). Errors propagate, SuspiciousEmptyPage included (ask again to confirm)."""
        step = timeframe_ms(timeframe)
        size = min(page_limit or self._max_page, self._max_page)
        cursor = start_ms
        while cursor < end_ms:
            page_end = min(end_ms, cursor + size * step)
            yield await self.fetch_ohlcv_page(symbol, timeframe, cursor, size, end_ms=page_end)
            cursor = page_end

    async def fetch_order_book(self, symbol: str, limit: int | None = None) -> OrderBook:
        """A synthetic book around the last closed close (same second, same book), `limit` levels a side
        (default 100)."""
        started = await self._enter(symbol)
        self._known(symbol, "fetch_order_book")
        now = self._clock_ms()
        mid = self._last_price(symbol, now)
        book = synthetic_order_book(
            symbol=symbol,
            mid=mid,
            ts_ms=now,
            seed=series_seed(self._seed, symbol, str(now // 1000)),
            levels=limit or 100,
            spread_bps=self._spread_bps,
        )
        self._done(symbol, started)
        return OrderBook(
            symbol,
            now,
            np.asarray(book.bids, dtype=np.float64).reshape(-1, 2),
            np.asarray(book.asks, dtype=np.float64).reshape(-1, 2),
        )

    def _last_price(self, symbol: str, now: int) -> float:
        native = self._source.timeframes(symbol)[0]
        series = self._series_for(symbol, native)
        closed = int(np.searchsorted(series.ts, now - timeframe_ms(native) + 1, side="left"))
        window = series.frame.slice(max(0, closed - 500), min(closed, 500))
        prices = window.filter(pl.col("close").is_finite() & (pl.col("close") > 0))
        if prices.height == 0:
            raise BadRequestError(f"{self.exchange_id} fetch_order_book {symbol}: no closed candle before {now}")
        return float(prices["close"][-1])

    async def fetch_balance(self) -> dict[str, AssetBalance]:
        """The configured paper balances (all free), non-zero only."""
        started = await self._enter(None)
        self._done(None, started)
        return {
            asset: AssetBalance(asset, float(total), 0.0, float(total))
            for asset, total in self._balances.items()
            if total
        }
