from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from adapters.exchange import OHLCV_SCHEMA, ExchangeClient, OhlcvPage
from adapters.replay import FileCandleSource, ReplayExchange, SimulatedCandleSource, aggregate_candles
from domain.candles import RECEIVED_SCHEMA, validate_frame
from domain.errors import BadRequestError, BadSymbolError, ExchangeUnavailable, SuspiciousEmptyPage
from domain.market_sim import MarketSimConfig
from domain.timeframes import DAY_MS, timeframe_ms

T = TypeVar("T")
M = 60_000
START = 1_700_006_400_000  # a UTC midnight
SYMBOLS = ["BTC/USDT", "ETH/USDT", "DOGE/USDT"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Clock:
    """A settable epoch-ms clock: tests step time instead of sleeping."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def replay(clock: Clock, *, days: int = 3, config: MarketSimConfig | None = None, **kw: Any) -> ReplayExchange:
    source = SimulatedCandleSource(SYMBOLS, start_ms=START, end_ms=START + days * DAY_MS, seed=11, config=config)
    return ReplayExchange(source, clock_ms=clock, **kw)


def candles_of(pages: list[OhlcvPage]) -> pl.DataFrame:
    """The candle columns of replay pages: RECEIVED_SCHEMA, with nothing the typed columns cannot hold."""
    frame = pl.concat([p.frame for p in pages])
    assert frame.schema == RECEIVED_SCHEMA
    assert frame.select(pl.col("raw", "parse_error", "parse_detail").null_count()).row(0) == (frame.height,) * 3
    return frame.select(OHLCV_SCHEMA.names())


async def collect(ex: ReplayExchange, symbol: str, timeframe: str, start: int, end: int, **kw: Any) -> list[OhlcvPage]:
    pages = []
    cursor = start
    while True:
        try:
            async for page in ex.iter_ohlcv_pages(symbol, timeframe, cursor, end, **kw):
                pages.append(page)
                cursor = page.end_ms
            return pages
        except SuspiciousEmptyPage:
            continue  # asking again for the same window confirms it empty


def test_paging_over_a_range_serves_exactly_the_closed_candles() -> None:
    clock = Clock(START + 2 * DAY_MS + 17 * M + 30_000)
    ex = replay(clock, max_page=500)
    pages = run(collect(ex, "BTC/USDT", "1m", START + 100 * M, START + 3 * DAY_MS))
    assert all(p.frame.height <= 500 for p in pages)
    assert [p.start_ms for p in pages[1:]] == [p.end_ms for p in pages[:-1]]
    served = candles_of(pages)
    truth = ex.source.load("BTC/USDT", "1m")
    expected = truth.filter((pl.col("ts") >= START + 100 * M) & (pl.col("ts") + M <= clock.now_ms))
    assert_frame_equal(served, expected)


def test_no_candle_from_the_future_and_new_ones_appear_as_time_passes() -> None:
    clock = Clock(START + DAY_MS + 30_000)  # mid-candle
    ex = replay(clock, config=MarketSimConfig(gap_rate=0.0))

    async def newest(timeframe: str) -> int:
        page = await ex.fetch_ohlcv_page("ETH/USDT", timeframe, clock.now_ms - 10 * timeframe_ms(timeframe), 100)
        return int(page.frame["ts"].max())  # type: ignore[arg-type]

    assert run(newest("1m")) == START + DAY_MS - M
    assert run(newest("5m")) == START + DAY_MS - 5 * M
    clock.now_ms += 4 * M + 30_000  # START + DAY + 5m: the first 5m candle of the day has just closed
    assert run(newest("1m")) == START + DAY_MS + 4 * M
    assert run(newest("5m")) == START + DAY_MS
    early = Clock(START + 30_000)
    assert run(replay(early).first_candle_ms("BTC/USDT", "1m")) is None
    future = run(replay(early, config=MarketSimConfig(gap_rate=0.0)).fetch_ohlcv_page("BTC/USDT", "1m", START + M, 10))
    assert future.frame.height == 0 and not future.confirmed_empty  # not covered yet: an honest empty page


def test_higher_timeframes_are_aggregated_from_1m() -> None:
    clock = Clock(START + 3 * DAY_MS)
    ex = replay(clock)
    pages = run(collect(ex, "DOGE/USDT", "15m", START, START + DAY_MS))
    served = candles_of(pages)
    base = ex.source.load("DOGE/USDT", "1m").filter(pl.col("ts") < START + DAY_MS)
    assert served.height == 96
    first = base.filter(pl.col("ts") < START + 15 * M)
    assert served.row(0) == (
        START,
        first["open"][0],
        first["high"].max(),
        first["low"].min(),
        first["close"][-1],
        pytest.approx(first["volume"].sum()),
    )
    assert_frame_equal(served, aggregate_candles(base, "15m"))
    with pytest.raises(BadRequestError, match="cannot build 90s"):
        run(ex.fetch_ohlcv_page("DOGE/USDT", "90s", START, 10))


def test_an_empty_window_inside_history_is_suspicious_then_confirmed() -> None:
    clock = Clock(START + 3 * DAY_MS)
    ex = replay(clock, config=MarketSimConfig(gap_rate=0.01, mean_gap_bars=6.0))
    ts = ex.source.load("BTC/USDT", "1m")["ts"].to_numpy()
    hole = int(np.flatnonzero(np.diff(ts) > M)[0])
    since = int(ts[hole]) + M  # first missing candle
    with pytest.raises(SuspiciousEmptyPage):
        run(ex.fetch_ohlcv_page("BTC/USDT", "1m", since, 1))
    page = run(ex.fetch_ohlcv_page("BTC/USDT", "1m", since, 1))
    assert page.confirmed_empty and page.is_empty


def test_order_books_are_sane_and_near_the_last_close() -> None:
    clock = Clock(START + 2 * DAY_MS + 12_345)
    ex = replay(clock, config=MarketSimConfig(bad_row_rate=0.0))
    for symbol in SYMBOLS:
        book = run(ex.fetch_order_book(symbol, 25))
        assert book.bids.shape == book.asks.shape == (25, 2)
        assert book.bids[:, 0].max() < book.asks[:, 0].min()
        assert np.all(np.diff(book.bids[:, 0]) < 0) and np.all(np.diff(book.asks[:, 0]) > 0)
        assert np.all(book.bids[:, 1] > 0) and np.all(book.asks[:, 1] > 0)
        last = ex.source.load(symbol, "1m").filter(pl.col("ts") + M <= clock.now_ms)["close"][-1]
        mid = (book.best_bid + book.best_ask) / 2  # type: ignore[operator]
        assert abs(mid / last - 1) < 1e-3
        assert book.timestamp_ms == clock.now_ms
    again = run(ex.fetch_order_book("BTC/USDT", 25))
    assert np.array_equal(again.bids, run(ex.fetch_order_book("BTC/USDT", 25)).bids)


def test_markets_balance_latency_faults_and_bad_symbols() -> None:
    clock = Clock(START + DAY_MS)
    ex = replay(clock, balances={"USDT": 5_000.0, "BTC": 0.0})
    markets = run(ex.load_markets())
    assert set(markets) == set(SYMBOLS)
    assert (markets["BTC/USDT"].base, markets["BTC/USDT"].quote, markets["BTC/USDT"].listed_ms) == (
        "BTC",
        "USDT",
        START,
    )
    assert set(run(ex.fetch_balance())) == {"USDT"}
    with pytest.raises(BadSymbolError):
        run(ex.fetch_ohlcv_page("NOPE/USDT", "1m", START, 10))
    with pytest.raises(BadSymbolError):
        run(ex.market_info("NOPE/USDT"))
    ex.inject_fault(ExchangeUnavailable("maintenance"), symbol="ETH/USDT", times=2)
    for _ in range(2):
        with pytest.raises(ExchangeUnavailable):
            run(ex.fetch_ohlcv_page("ETH/USDT", "1m", START, 10))
    assert run(ex.fetch_ohlcv_page("BTC/USDT", "1m", START, 10)).frame.height == 10  # other symbols unaffected
    assert run(ex.fetch_ohlcv_page("ETH/USDT", "1m", START, 10)).frame.height == 10  # then it recovers
    stats = ex.latency("ETH/USDT")
    assert stats is not None and stats.count == 3
    assert ex.latency() is not None and "BTC/USDT" in ex.latency_snapshot()
    assert ex.limiter.accounting.request_count >= 6
    run(ex.close())


def test_public_interface_matches_the_ccxt_client() -> None:
    def public(cls: type) -> dict[str, Any]:
        return {name: member for name, member in inspect.getmembers(cls) if not name.startswith("_")}

    ours, theirs = public(ReplayExchange), public(ExchangeClient)
    assert set(theirs) <= set(ours)
    for name, member in theirs.items():
        if callable(member):
            assert list(inspect.signature(member).parameters) == list(inspect.signature(ours[name]).parameters), name
            assert inspect.iscoroutinefunction(member) == inspect.iscoroutinefunction(ours[name]), name


def test_file_source_reads_csv_and_parquet(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "timestamp": [START + i * M for i in (2, 0, 1, 4)],  # unsorted, with a hole at 3
            "open": [1.0, 1.0, 1.0, 1.0],
            "high": [2.0, 2.0, 2.0, 2.0],
            "low": [0.5, 0.5, 0.5, 0.5],
            "close": [1.5, 1.5, 1.5, 1.5],
            "volume": [1, 2, 3, 4],
        }
    )
    frame.write_csv(tmp_path / "AAA-USDT_1m.csv")
    frame.rename({"timestamp": "ts"}).write_parquet(tmp_path / "BBB-BTC_1m.parquet")
    (tmp_path / "notes.txt").write_text("not candles")
    source = FileCandleSource.from_directory(tmp_path)
    assert source.symbols() == ["AAA/USDT", "BBB/BTC"]
    ex = ReplayExchange(source, clock_ms=Clock(START + DAY_MS))
    for symbol in source.symbols():
        page = run(ex.fetch_ohlcv_page(symbol, "1m", START, 10))
        assert page.frame["ts"].to_list() == [START + i * M for i in (0, 1, 2, 4)]
        assert page.frame["row_index"].to_list() == [0, 1, 2, 3]
        assert candles_of([page]).schema == OHLCV_SCHEMA


# ------------------------------------------------------------------------------- real data (../shared)


@pytest.mark.shared_data
def test_real_candles_pass_validation_and_their_holes_show(shared_candles: Path) -> None:
    source = FileCandleSource.from_directory(shared_candles)
    ex = ReplayExchange(source, clock_ms=Clock(2_000_000_000_000))
    files = sorted(shared_candles.glob("*_*.csv"))
    assert len(files) >= 9
    served: dict[tuple[str, str], pl.DataFrame] = {}
    for path in files:
        pair, timeframe = path.stem.rsplit("_", 1)
        symbol = pair.replace("-", "/")
        raw = pl.read_csv(path)
        stamps = raw["timestamp"].to_numpy()
        pages = run(collect(ex, symbol, timeframe, int(stamps.min()), int(stamps.max()) + 1))
        frame = pl.concat([p.frame for p in pages])
        assert frame.height == raw.height, path.name
        result = validate_frame(frame, timeframe=timeframe, now_ms=2_000_000_000_000)
        assert result.rejected.height == 0, (path.name, result.rejected.head())
        assert result.flagged.height == 0, (path.name, result.flagged.head())
        assert result.duplicates_in_batch == 0
        served[(symbol, timeframe)] = result.accepted

    ts = served[("UNITTEST/BTC", "1m")]["ts"].to_numpy()
    missing = np.setdiff1d(np.arange(ts.min(), ts.max() + M, M), ts)
    runs = int((np.diff(missing) != M).sum()) + (1 if missing.size else 0)
    assert runs == 538  # the README's holes
    assert missing.size == 717
    # Higher timeframes built from the real 1m data are valid too.
    result = validate_frame(
        pl.concat([p.frame for p in run(collect(ex, "UNITTEST/BTC", "1h", int(ts.min()), int(ts.max())))]),
        timeframe="1h",
        now_ms=2_000_000_000_000,
    )
    assert result.rejected.height == 0 and result.accepted.height > 200
