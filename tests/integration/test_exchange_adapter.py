"""The exchange adapter driving the REAL ccxt binance client over HTTP against the loopback emulator.

No mocks: every request goes through ccxt, aiohttp and a socket to tests/emulator/binance.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import ccxt.async_support as ccxt_async
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import SecretStr

from adapters.exchange import OHLCV_SCHEMA, ExchangeClient, OhlcvPage
from adapters.rate_limit import (
    BINANCE_KLINES_WEIGHT_BY_LIMIT,
    BINANCE_SPOT_WEIGHTS,
    WeightLimiter,
    WeightTable,
    forget_shared_limiters,
    retry_transient,
)
from domain.candles import RECEIVED_SCHEMA
from domain.errors import (
    AuthenticationFailed,
    BadRequestError,
    BadSymbolError,
    ExchangeUnavailable,
    PermanentError,
    RateLimited,
    SuspiciousEmptyPage,
    TransientError,
)
from domain.timeframes import MINUTE_MS
from tests.emulator import BinanceEmulator, random_walk_candles, read_candle_csv, run_binance_emulator

pytestmark = pytest.mark.integration

T0 = 1_699_999_980_000  # a minute boundary in Nov 2023, long closed
CANDLES = 2_600
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
KEY, SECRET = "emulator-api-key-7f3a", "emulator-secret-9c1d"


@pytest.fixture
def emulator() -> Iterator[BinanceEmulator]:
    with run_binance_emulator(api_key=KEY, secret=SECRET) as emu:
        for i, symbol in enumerate(SYMBOLS):
            emu.add_market(symbol, candles=random_walk_candles(T0, CANDLES, seed=i, start_price=100.0 * (i + 1)))
        yield emu


def client_for(emu: BinanceEmulator, **kwargs: object) -> ExchangeClient:
    """A client on its own unbounded limiter unless the test passes one."""
    kwargs.setdefault("limiter", WeightLimiter(1e9))
    kwargs.setdefault("timeout_ms", 3_000)
    return ExchangeClient("binance", api_url=emu.url, **kwargs)  # type: ignore[arg-type]


async def collect(client: ExchangeClient, symbol: str, start: int, end: int, **kw: int) -> list[OhlcvPage]:
    return [page async for page in client.iter_ohlcv_pages(symbol, "1m", start, end, **kw)]


def served_candles(pages: list[OhlcvPage]) -> pl.DataFrame:
    """The candle columns of pages of clean klines, checking that nothing needed a raw value kept."""
    frame = pl.concat([p.frame for p in pages])
    assert frame.schema == RECEIVED_SCHEMA
    assert frame.select(pl.col("raw", "parse_error", "parse_detail").null_count()).row(0) == (frame.height,) * 3
    return frame.select(OHLCV_SCHEMA.names())


# paging ----------------------------------------------------------------------------------------------------------
def test_pages_cover_a_range_across_exchange_side_holes(emulator: BinanceEmulator) -> None:
    emulator.omit_candles("BTC/USDT", "1m", T0 + 100 * MINUTE_MS, T0 + 130 * MINUTE_MS)
    emulator.omit_candles("BTC/USDT", "1m", T0 + 999 * MINUTE_MS, T0 + 1_001 * MINUTE_MS)  # across a page edge
    emulator.omit_candles("BTC/USDT", "1m", T0 + 2_000 * MINUTE_MS, T0 + 2_001 * MINUTE_MS)
    end = T0 + CANDLES * MINUTE_MS

    async def run() -> tuple[list[OhlcvPage], ExchangeClient]:
        async with client_for(emulator) as client:
            return await collect(client, "BTC/USDT", T0, end), client

    pages, client = asyncio.run(run())

    assert [(p.start_ms, p.end_ms) for p in pages] == [
        (T0, T0 + 1_000 * MINUTE_MS),
        (T0 + 1_000 * MINUTE_MS, T0 + 2_000 * MINUTE_MS),
        (T0 + 2_000 * MINUTE_MS, end),
    ]
    assert not any(p.confirmed_empty for p in pages)
    assert_frame_equal(served_candles(pages), emulator.candles("BTC/USDT", "1m"))
    klines = emulator.requests("klines")
    assert [(r.params["startTime"], r.params["endTime"], r.params["limit"]) for r in klines] == [
        (str(T0), str(T0 + 1_000 * MINUTE_MS - 1), "1000"),
        (str(T0 + 1_000 * MINUTE_MS), str(T0 + 2_000 * MINUTE_MS - 1), "1000"),
        (str(T0 + 2_000 * MINUTE_MS), str(end - 1), "600"),
    ]
    btc = client.latency("BTC/USDT")
    markets = client.latency()
    assert btc is not None and btc.count == 3 and btc.p95_ms >= btc.p50_ms > 0
    assert markets is not None and markets.count == 1  # exchangeInfo, booked exchange-wide


@pytest.mark.shared_data
def test_real_candles_with_real_holes_page_back_unchanged(shared_candles: Path) -> None:
    real = read_candle_csv(shared_candles / "UNITTEST-BTC_1m.csv")
    with run_binance_emulator() as emu:
        emu.add_market("UNIT/BTC", candles=real)

        async def run() -> list[OhlcvPage]:
            async with client_for(emu) as client:
                return await collect(client, "UNIT/BTC", real["ts"][0], real["ts"][-1] + MINUTE_MS)

        pages = asyncio.run(run())
    expected_holes = (real["ts"].diff().drop_nulls() // MINUTE_MS - 1).sum()
    assert expected_holes > 500  # the file's documented exchange-side holes are really there
    assert_frame_equal(served_candles(pages), real)


def test_page_inside_a_hole_is_suspicious_then_confirmed_empty(emulator: BinanceEmulator) -> None:
    emulator.omit_candles("ETH/USDT", "1m", T0 + 1_000 * MINUTE_MS, T0 + 2_000 * MINUTE_MS)
    end = T0 + CANDLES * MINUTE_MS

    async def run() -> tuple[list[OhlcvPage], list[OhlcvPage]]:
        async with client_for(emulator) as client:
            pages = client.iter_ohlcv_pages("ETH/USDT", "1m", T0, end)
            first = [await anext(pages)]
            with pytest.raises(SuspiciousEmptyPage, match=r"ETH/USDT 1m: empty answer"):
                await anext(pages)
            # Resume where it failed, on the same client: the second empty answer confirms the hole.
            rest = await collect(client, "ETH/USDT", first[-1].end_ms, end)
            return first, rest

    first, rest = asyncio.run(run())
    assert len(first) == 1 and first[0].frame.height == 1_000
    assert rest[0].confirmed_empty and rest[0].is_empty
    assert (rest[0].start_ms, rest[0].end_ms) == (T0 + 1_000 * MINUTE_MS, T0 + 2_000 * MINUTE_MS)
    assert rest[1].frame.height == 600 and not rest[1].confirmed_empty
    asked = [r for r in emulator.requests("klines") if r.params["startTime"] == str(T0 + 1_000 * MINUTE_MS)]
    assert [r.status for r in asked] == [200, 200]  # really asked twice, really empty twice


def test_confirm_empty_flag_and_uncovered_windows(emulator: BinanceEmulator) -> None:
    emulator.omit_candles("SOL/USDT", "1m", T0, T0 + 10 * MINUTE_MS)
    now_ms = T0 + CANDLES * MINUTE_MS + 30 * MINUTE_MS

    async def run() -> tuple[OhlcvPage, OhlcvPage, OhlcvPage]:
        async with client_for(emulator, clock_ms=lambda: now_ms) as client:
            # A fresh client (e.g. a retried Prefect task) confirms with the flag.
            confirmed = await client.fetch_ohlcv_page("SOL/USDT", "1m", T0, 10, confirm_empty=True)
            future = await client.fetch_ohlcv_page("SOL/USDT", "1m", now_ms, 10)  # not closed yet
            before_listing = await client.fetch_ohlcv_page(
                "SOL/USDT", "1m", T0 - 20 * MINUTE_MS, 10, first_candle_ms=T0
            )
            return confirmed, future, before_listing

    confirmed, future, before_listing = asyncio.run(run())
    assert confirmed.confirmed_empty and confirmed.is_empty
    assert future.is_empty and not future.confirmed_empty
    assert before_listing.is_empty and not before_listing.confirmed_empty


def test_first_candle_is_found_from_the_exchange(emulator: BinanceEmulator) -> None:
    async def run() -> int | None:
        async with client_for(emulator) as client:
            return await client.first_candle_ms("BTC/USDT", "1m")

    assert asyncio.run(run()) == T0
    assert emulator.requests("klines")[0].params["startTime"] == "0"


# the maintenance-page trap ---------------------------------------------------------------------------------------
def test_plain_ccxt_reads_a_maintenance_page_as_no_candles(emulator: BinanceEmulator) -> None:
    """Why the adapter refuses non-JSON 200 answers: unwrapped ccxt returns [] and raises nothing."""

    async def run() -> list[list[float]]:
        ex = ccxt_async.binance({"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}})
        ex.urls["api"] = {k: emulator.url + v.split(".com", 1)[1] for k, v in ex.urls["api"].items()}
        try:
            await ex.load_markets()
            emulator.maintenance_next(endpoint="klines")
            return await ex.fetch_ohlcv("BTC/USDT", "1m", T0, 10)  # type: ignore[no-any-return]
        finally:
            await ex.close()

    assert asyncio.run(run()) == []


def test_maintenance_page_is_an_outage_never_a_confirmed_empty_page(emulator: BinanceEmulator) -> None:
    emulator.maintenance_next(2, endpoint="klines")

    async def run() -> OhlcvPage:
        async with client_for(emulator) as client:
            for _ in range(2):
                with pytest.raises(ExchangeUnavailable, match="non-JSON body"):
                    await client.fetch_ohlcv_page("BTC/USDT", "1m", T0, 10)
            return await client.fetch_ohlcv_page("BTC/USDT", "1m", T0, 10)

    page = asyncio.run(run())
    assert page.frame.height == 10 and not page.confirmed_empty


# error translation -----------------------------------------------------------------------------------------------
def test_429_with_retry_after_is_rate_limited_and_pauses_the_shared_limiter(emulator: BinanceEmulator) -> None:
    emulator.rate_limit_next(retry_after_s=7, endpoint="klines")
    limiter = WeightLimiter(1e9)

    async def run() -> RateLimited:
        async with client_for(emulator, limiter=limiter) as client:
            with pytest.raises(RateLimited) as caught:
                await client.fetch_ohlcv_page("BTC/USDT", "1m", T0, 10)
            return caught.value

    error = asyncio.run(run())
    assert error.retry_after_s == 7.0
    assert isinstance(error, TransientError)
    assert "binance fetch_ohlcv BTC/USDT" in str(error) and "429" in str(error)
    assert limiter.pause_remaining_s() > 5.0  # everyone sharing the limiter now waits for the server


def test_418_ban_is_rate_limited_with_its_retry_after(emulator: BinanceEmulator) -> None:
    emulator.ban_next(retry_after_s=120, endpoint="depth")

    async def run() -> RateLimited:
        async with client_for(emulator) as client:
            with pytest.raises(RateLimited) as caught:
                await client.fetch_order_book("BTC/USDT", 5)
            return caught.value

    error = asyncio.run(run())
    assert error.retry_after_s == 120.0 and "418" in str(error)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_exchange_unavailable(emulator: BinanceEmulator, status: int) -> None:
    emulator.server_error_next(status=status, endpoint="klines")

    async def run() -> None:
        async with client_for(emulator) as client:
            with pytest.raises(ExchangeUnavailable, match="binance fetch_ohlcv BTC/USDT"):
                await client.fetch_ohlcv_page("BTC/USDT", "1m", T0, 10)

    asyncio.run(run())


def test_slow_answer_beyond_the_timeout_is_exchange_unavailable(emulator: BinanceEmulator) -> None:
    emulator.slow_next(delay_s=5.0, endpoint="klines")

    async def run() -> None:
        async with client_for(emulator, timeout_ms=300) as client:
            with pytest.raises(ExchangeUnavailable, match="RequestTimeout"):
                await client.fetch_ohlcv_page("BTC/USDT", "1m", T0, 10)

    asyncio.run(run())


def test_error_codes_map_on_loopback_like_on_the_real_host(emulator: BinanceEmulator) -> None:
    # -1008 (server busy) is only in Binance's per-host spot table: without the URL mapping ccxt raises a
    # bare ExchangeError, which would be a permanent error here.
    emulator.error_code_next(status=400, code=-1008, msg="Server is currently overloaded.", endpoint="klines")
    emulator.error_code_next(status=400, code=-1003, msg="Too much request weight used.", endpoint="klines")
    emulator.error_code_next(status=400, code=-1100, msg="Illegal characters found.", endpoint="klines")

    async def run() -> list[type[BaseException]]:
        out: list[type[BaseException]] = []
        async with client_for(emulator) as client:
            for _ in range(3):
                try:
                    await client.fetch_ohlcv_page("BTC/USDT", "1m", T0, 10)
                except (ExchangeUnavailable, RateLimited, BadRequestError) as exc:
                    out.append(type(exc))
        return out

    assert asyncio.run(run()) == [ExchangeUnavailable, RateLimited, BadRequestError]


def test_invalid_symbol_is_a_permanent_bad_symbol_error(emulator: BinanceEmulator) -> None:
    emulator.reject_symbol("ETH/USDT")  # listed, but the server answers -1121

    async def run() -> tuple[BadSymbolError, BadSymbolError]:
        async with client_for(emulator) as client:
            with pytest.raises(BadSymbolError) as remote:
                await client.fetch_ohlcv_page("ETH/USDT", "1m", T0, 10)
            with pytest.raises(BadSymbolError) as unlisted:
                await client.fetch_ohlcv_page("DOGE/USDT", "1m", T0, 10)
            return remote.value, unlisted.value

    remote, unlisted = asyncio.run(run())
    assert isinstance(remote, PermanentError)
    assert "-1121" in str(remote) and "ETH/USDT" in str(remote)
    assert "DOGE/USDT" in str(unlisted)
    assert emulator.requests("klines")[0].status == 400


# order book, balance, credentials --------------------------------------------------------------------------------
def test_order_book_snapshot(emulator: BinanceEmulator) -> None:
    emulator.set_order_book("BTC/USDT", bids=[(99.5, 2.0), (99.0, 3.0)], asks=[(100.5, 1.0), (101.0, 4.0)])

    async def run() -> tuple[object, object]:
        async with client_for(emulator) as client:
            explicit = await client.fetch_order_book("BTC/USDT", 50)
            synthetic = await client.fetch_order_book("ETH/USDT", 100)
            return explicit, synthetic

    explicit, synthetic = asyncio.run(run())
    assert np.array_equal(explicit.bids, [[99.5, 2.0], [99.0, 3.0]])  # type: ignore[attr-defined]
    assert explicit.best_ask == 100.5 and explicit.spread_fraction == pytest.approx(1.0 / 100.0)  # type: ignore[attr-defined]
    assert synthetic.bids.shape == (100, 2) and synthetic.asks.shape == (100, 2)  # type: ignore[attr-defined]
    assert [r.params["limit"] for r in emulator.requests("depth")] == ["50", "100"]
    assert [r.weight for r in emulator.requests("depth")] == [5.0, 5.0]


def test_balance_with_credentials_that_never_leak(emulator: BinanceEmulator, caplog: pytest.LogCaptureFixture) -> None:
    emulator.set_balances({"USDT": (900.0, 100.0), "BTC": (0.25, 0.0), "ETH": (0.0, 0.0)})
    caplog.set_level(logging.DEBUG)

    async def run() -> tuple[dict[str, object], str, AuthenticationFailed, AuthenticationFailed]:
        async with client_for(emulator, api_key=SecretStr(KEY), secret=SecretStr(SECRET)) as client:
            balances = await client.fetch_balance()
            shown = repr(client)
        async with client_for(emulator, api_key=SecretStr("wrong-key-0000"), secret=SecretStr(SECRET)) as bad:
            with pytest.raises(AuthenticationFailed) as rejected:
                await bad.fetch_balance()
        async with client_for(emulator) as anonymous:
            with pytest.raises(AuthenticationFailed) as missing:
                await anonymous.fetch_balance()
        return balances, shown, rejected.value, missing.value  # type: ignore[return-value]

    balances, shown, rejected, missing = asyncio.run(run())
    assert set(balances) == {"USDT", "BTC"}
    assert balances["USDT"].total == 1000.0 and balances["USDT"].used == 100.0  # type: ignore[attr-defined]
    assert "-2015" in str(rejected) and "no API key" in str(missing)
    account_calls = emulator.requests("account")
    assert [r.status for r in account_calls] == [200, 401]  # the anonymous client never sent one
    leaked = [KEY, SECRET, "wrong-key-0000"]
    assert not any(s in shown or s in str(rejected) for s in leaked)
    assert not any(s in record.getMessage() for record in caplog.records for s in leaked)


# the shared weight limiter ---------------------------------------------------------------------------------------
TEST_WEIGHTS = BINANCE_SPOT_WEIGHTS.with_bands("klines", BINANCE_KLINES_WEIGHT_BY_LIMIT).with_bands(
    "exchangeInfo", ((math.inf, 4.0),)
)


async def fetch_concurrently(emu: BinanceEmulator, limiter: WeightLimiter, pages: int) -> list[BaseException]:
    """One client per symbol (like parallel tasks), all drawing from `limiter`; returns what failed."""

    async def one(symbol: str) -> None:
        async with client_for(emu, limiter=limiter, weights=TEST_WEIGHTS) as client:
            await collect(client, symbol, T0, T0 + pages * 200 * MINUTE_MS, page_limit=200)

    results = await asyncio.gather(*(one(s) for s in SYMBOLS), return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


@pytest.mark.slow
def test_shared_limiter_keeps_concurrent_symbols_inside_the_weight_budget() -> None:
    budget, window_s, pages = 24.0, 1.0, 8  # 3 x 4 (exchangeInfo) + 3 x 8 x 2 (klines, limit 200) = 60
    with run_binance_emulator(weight_budget=budget, weight_window_s=window_s, weights=TEST_WEIGHTS) as emu:
        for i, symbol in enumerate(SYMBOLS):
            emu.add_market(symbol, candles=random_walk_candles(T0, pages * 200, seed=i))

        # Control: with ccxt's own limiter only, the same work blows the budget (so this test can fail).
        failures = asyncio.run(fetch_concurrently(emu, WeightLimiter(1e9), pages))
        assert emu.rate_limited(), "control run stayed inside the budget: the scenario proves nothing"
        assert failures and all(isinstance(f, RateLimited) for f in failures)

        emu.reset_log()
        emu.reset_weight()
        shared = WeightLimiter(budget, window_s=window_s, headroom=0.25, burst=5.0)
        failures = asyncio.run(fetch_concurrently(emu, shared, pages))
        served = emu.requests()

    assert failures == []
    assert [r for r in served if r.status != 200] == []  # zero 429s answered
    assert len([r for r in served if r.endpoint == "klines"]) == len(SYMBOLS) * pages
    by_window: dict[int, float] = {}
    for r in served:
        by_window[r.window] = by_window.get(r.window, 0.0) + r.weight
    assert sum(by_window.values()) == 60.0
    assert max(by_window.values()) <= budget
    assert shared.accounting.total_weight == 60.0 and shared.accounting.waited_s > 0


def test_default_limiter_is_shared_per_exchange_and_url(emulator: BinanceEmulator) -> None:
    forget_shared_limiters()

    async def run() -> tuple[WeightLimiter, WeightLimiter, WeightLimiter]:
        async with (
            ExchangeClient("binance", api_url=emulator.url) as a,
            ExchangeClient("binance", api_url=emulator.url) as b,
            ExchangeClient("binance", api_url="http://127.0.0.1:9") as c,
        ):
            return a.limiter, b.limiter, c.limiter

    a, b, c = asyncio.run(run())
    forget_shared_limiters()
    assert a is b and a is not c
    assert a.budget == 6000.0


# the limiter and retry helper in virtual time --------------------------------------------------------------------
class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_limiter_never_grants_more_than_the_budget_in_any_window_and_uses_most_of_it() -> None:
    vt = VirtualTime()
    limiter = WeightLimiter(1200.0, window_s=60.0, headroom=0.03, clock=vt.clock, sleep=vt.sleep)
    weights = np.random.default_rng(7).choice([1.0, 2.0, 5.0, 20.0], size=4_000)

    async def run() -> None:
        for w in weights:
            await limiter.acquire(float(w))

    asyncio.run(run())
    grants = limiter.accounting.grants()
    times = np.array([t for t, _ in grants])
    cumulative = np.concatenate([[0.0], np.cumsum([w for _, w in grants])])
    # Weight granted in every 60 s window starting at a grant.
    ends = np.searchsorted(times, times + 60.0, side="left")
    in_window = cumulative[ends] - cumulative[np.arange(len(times))]
    assert in_window.max() <= 1200.0 * 0.97 + 1e-9
    assert limiter.accounting.weight_per_minute(skip_first_s=60.0) >= 0.90 * 1200.0


def test_retry_transient_honours_retry_after_and_stops_on_permanent_errors() -> None:
    vt = VirtualTime()
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RateLimited("binance fetch_ohlcv BTC/USDT: rate limited", retry_after_s=3.0)
        return "ok"

    async def broken() -> str:
        calls.append(1)
        raise BadSymbolError("binance fetch_ohlcv NOPE/USDT: unknown")

    assert asyncio.run(retry_transient(flaky, attempts=5, base_delay_s=0.1, sleep=vt.sleep)) == "ok"
    assert len(calls) == 3 and len(vt.slept) == 2 and min(vt.slept) >= 3.0
    calls.clear()
    with pytest.raises(BadSymbolError):
        asyncio.run(retry_transient(broken, attempts=5, sleep=vt.sleep))
    assert len(calls) == 1
    with pytest.raises(RateLimited):
        asyncio.run(retry_transient(flaky, attempts=1, sleep=vt.sleep))


def test_weight_table_bands() -> None:
    table = WeightTable({"depth": ((100, 5.0), (500, 25.0))}, default_limits={"depth": 100})
    assert [table.weight("depth", n) for n in (None, 5, 100, 101, 500, 5000)] == [5, 5, 5, 25, 25, 25]
    assert table.weight("ping") == 1.0
    assert [BINANCE_SPOT_WEIGHTS.weight("klines", n) for n in (None, 1000)] == [2.0, 2.0]
    assert [TEST_WEIGHTS.weight("klines", n) for n in (100, 200, 1000, 1500)] == [1.0, 2.0, 5.0, 10.0]
