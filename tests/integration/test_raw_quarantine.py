"""Malformed klines reach the quarantine with the values the exchange sent, through the REAL ccxt client.

The emulator serves Binance klines with a price "abc", a field missing (a short row), an object for a price and
a timestamp "abc". Plain ccxt turns each bad value into None and silently drops the row whose timestamp does not
parse (the control test shows it); the adapter keeps all of them, with the values as sent, and the backfill
quarantines every one of them each time it is served: nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import ccxt.async_support as ccxt_async
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import Engine, text

from adapters.exchange import ExchangeClient, OhlcvPage
from adapters.rate_limit import WeightLimiter
from db.candles import read_candles
from domain.candles import RECEIVED_SCHEMA
from domain.gaps import PriorityPolicy
from domain.timeframes import DAY_MS, MINUTE_MS, last_closed_open
from tasks.backfill import BackfillOptions, BackfillReport, backfill
from tests.emulator.binance import BinanceEmulator, random_walk_candles, run_binance_emulator

pytestmark = pytest.mark.integration

SYMBOL = "AAA/USDT"
NOW_MS = int(time.time() * 1000)
END_MS = last_closed_open(NOW_MS, "1m") + MINUTE_MS
START_MS = END_MS - DAY_MS
ABC_PRICE = START_MS + 100 * MINUTE_MS  # open "abc"
MISSING_FIELD = START_MS + 200 * MINUTE_MS  # only [ts, open, high, low, close]: volume and the rest absent
OBJECT_PRICE = START_MS + 1_100 * MINUTE_MS  # high {"price": "1.5"}
ABC_TS = START_MS + 1_300 * MINUTE_MS  # served where this candle belongs, with the timestamp "abc"
BAD = (ABC_PRICE, MISSING_FIELD, OBJECT_PRICE, ABC_TS)


@pytest.fixture
def emulator() -> Iterator[BinanceEmulator]:
    with run_binance_emulator() as emu:
        emu.add_market(SYMBOL, candles=random_walk_candles(START_MS, DAY_MS // MINUTE_MS, seed=5))
        corrupt(emu, ABC_PRICE, 1, "abc")
        emu.corrupt_kline(SYMBOL, "1m", MISSING_FIELD, emu.kline(SYMBOL, "1m", MISSING_FIELD)[:5])
        corrupt(emu, OBJECT_PRICE, 2, {"price": "1.5"})
        corrupt(emu, ABC_TS, 0, "abc")
        yield emu


def corrupt(emu: BinanceEmulator, ts: int, field: int, value: Any) -> list[Any]:
    row = emu.kline(SYMBOL, "1m", ts)
    row[field] = value
    emu.corrupt_kline(SYMBOL, "1m", ts, row)
    return row


def client(emu: BinanceEmulator) -> ExchangeClient:
    return ExchangeClient("binance", api_url=emu.url, limiter=WeightLimiter(budget=1e9), timeout_ms=3_000)


def sent(emu: BinanceEmulator, ts: int) -> list[Any]:
    """The first six fields of the kline served at `ts`, as JSON values."""
    return emu.kline(SYMBOL, "1m", ts)[:6]


def as_numbers(row: list[Any]) -> list[Any]:
    """A kline's good fields as ccxt converts them (numeric strings -> float), the others untouched."""
    out: list[Any] = []
    for value in row:
        try:
            out.append(float(value) if isinstance(value, str) else value)
        except ValueError:
            out.append(value)
    return out


def test_plain_ccxt_turns_bad_values_into_none_and_drops_a_bad_timestamp(emulator: BinanceEmulator) -> None:
    """Why the adapter reads around ccxt: its binance parse_ohlcv (safe_integer_2 / safe_number_2) loses every
    bad value, and parse_ohlcvs' since-filter drops the row whose timestamp is None without a word."""

    async def run() -> list[list[Any]]:
        ex = ccxt_async.binance({"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}})
        ex.urls["api"] = {k: emulator.url + v.split(".com", 1)[1] for k, v in ex.urls["api"].items()}
        try:
            await ex.load_markets()
            rows: list[list[Any]] = []
            for since in range(START_MS, END_MS, 1000 * MINUTE_MS):
                until = min(END_MS, since + 1000 * MINUTE_MS) - 1
                rows += await ex.fetch_ohlcv(SYMBOL, "1m", since, 1000, {"until": until})
            return rows
        finally:
            await ex.close()

    rows = {row[0]: row for row in asyncio.run(run())}
    assert sum(r.rows or 0 for r in emulator.requests("klines")) == DAY_MS // MINUTE_MS
    assert len(rows) == DAY_MS // MINUTE_MS - 1 and ABC_TS not in rows and None not in rows  # dropped
    assert rows[ABC_PRICE][1] is None  # "abc"
    assert rows[MISSING_FIELD][5] is None  # absent
    assert rows[OBJECT_PRICE][2] is None  # {"price": "1.5"}


def test_a_page_keeps_every_row_with_the_values_as_sent(emulator: BinanceEmulator) -> None:
    async def run() -> list[OhlcvPage]:
        async with client(emulator) as ex:
            return [page async for page in ex.iter_ohlcv_pages(SYMBOL, "1m", START_MS, END_MS)]

    pages = asyncio.run(run())
    frame = pl.concat([p.frame for p in pages])
    assert frame.schema == RECEIVED_SCHEMA
    assert frame.height == sum(r.rows or 0 for r in emulator.requests("klines")) == DAY_MS // MINUTE_MS
    bad = frame.filter(pl.col("parse_error").is_not_null())
    by_ts = {row["ts"]: row for row in bad.iter_rows(named=True)}
    assert set(by_ts) == {ABC_PRICE, MISSING_FIELD, OBJECT_PRICE, None}

    abc = by_ts[ABC_PRICE]
    assert json.loads(abc["raw"])["row"] == as_numbers(sent(emulator, ABC_PRICE))
    assert json.loads(abc["raw"])["row"][1] == "abc" and abc["open"] is None
    assert (abc["parse_error"], abc["parse_detail"]) == ("TYPE", "open 'abc' is not a number")
    missing = by_ts[MISSING_FIELD]
    # Absent and null look the same once in ccxt's six-value order: what survives is a null volume.
    assert json.loads(missing["raw"])["row"] == [*as_numbers(sent(emulator, MISSING_FIELD)[:5]), None]
    assert missing["parse_detail"] == "volume None is not a number"
    obj = by_ts[OBJECT_PRICE]
    assert json.loads(obj["raw"])["row"][2] == "{'price': '1.5'}"  # an object is kept as its repr
    # The row ccxt would have dropped: kept at the end of its page, ts null, the "abc" in its raw row.
    abc_ts = by_ts[None]
    assert json.loads(abc_ts["raw"])["row"] == ["abc", *as_numbers(sent(emulator, ABC_TS)[1:])]
    assert abc_ts["parse_detail"] == "timestamp 'abc' is not a number"
    assert pages[1].frame["ts"].is_null().to_list() == [False] * (pages[1].frame.height - 1) + [True]
    # Clean rows keep no raw value: the typed columns are the values.
    assert frame.filter(pl.col("parse_error").is_null())["raw"].null_count() == frame.height - 4


def test_backfill_quarantines_raw_values_and_loses_nothing(db: Engine, emulator: BinanceEmulator) -> None:
    async def go() -> BackfillReport:
        source = client(emulator)
        try:
            return await backfill(
                db,
                source,
                symbols=[SYMBOL],
                timeframe="1m",
                start_ms=START_MS,
                end_ms=END_MS,
                now_ms=NOW_MS,
                policy=PriorityPolicy(signal_timeframe="1m"),
                options=BackfillOptions(base_delay_s=0.01),
            )
        finally:
            await source.close()

    progress = asyncio.run(go()).symbols[SYMBOL]

    # Every valid candle is stored, exactly as served.
    with db.connect() as conn:
        stored = read_candles(conn, exchange="binance", symbol=SYMBOL, timeframe="1m")
        quarantined = conn.execute(
            text(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, raw, reason, detail, source FROM candle_quarantine"
                " WHERE exchange = 'binance' AND symbol = :s AND timeframe = '1m' ORDER BY id"
            ),
            {"s": SYMBOL},
        ).all()
    assert_frame_equal(stored, emulator.candles(SYMBOL, "1m"), check_exact=True)

    # Every bad row is in the quarantine with what the exchange sent, once per time it was served: the pass
    # over the range, then the re-ask for the candles its pages lacked (they were quarantined, not stored).
    pages = [r for r in emulator.requests("klines") if r.status == 200 and r.params["startTime"] != "0"]
    served_bad = {ts: sum(int(r.params["startTime"]) <= ts <= int(r.params["endTime"]) for r in pages) for ts in BAD}
    assert served_bad == dict.fromkeys(BAD, 2)
    rows_by_ts: dict[int | None, list[Any]] = {}
    for ts, raw, reason, detail, source in quarantined:
        assert (reason, source) == ("TYPE", "binance:backfill")
        rows_by_ts.setdefault(ts, []).append((raw["row"], detail))
    expected = {
        ABC_PRICE: (as_numbers(sent(emulator, ABC_PRICE)), "open 'abc' is not a number"),
        MISSING_FIELD: ([*as_numbers(sent(emulator, MISSING_FIELD)[:5]), None], "volume None is not a number"),
        OBJECT_PRICE: (
            [
                *as_numbers(sent(emulator, OBJECT_PRICE)[:2]),
                "{'price': '1.5'}",
                *as_numbers(sent(emulator, OBJECT_PRICE)[3:]),
            ],
            "high {'price': '1.5'} is not a number",
        ),
        None: (["abc", *as_numbers(sent(emulator, ABC_TS)[1:])], "timestamp 'abc' is not a number"),
    }
    assert rows_by_ts == {ts: [(row, detail)] * 2 for ts, (row, detail) in expected.items()}
    assert rows_by_ts[ABC_PRICE][0][0][1] == "abc"

    # The accounting: every kline served in a page was stored, counted as a duplicate or quarantined.
    served = sum(r.rows or 0 for r in pages)
    assert served == DAY_MS // MINUTE_MS + len(BAD)
    assert progress.inserted + progress.revised + progress.duplicates + progress.quarantined == served
    assert (progress.inserted, progress.quarantined) == (DAY_MS // MINUTE_MS - len(BAD), len(quarantined))

    # Twice answered with only broken rows: recorded as such, so the next run neither refetches nor
    # quarantines them again.
    with db.connect() as conn:
        unusable = conn.execute(
            text(
                "SELECT (extract(epoch FROM range_start) * 1000)::bigint, reason FROM empty_ranges"
                " WHERE symbol = :s ORDER BY 1"
            ),
            {"s": SYMBOL},
        ).all()
    assert {ts for ts, reason in unusable if reason == "quarantined"} == {ABC_PRICE, MISSING_FIELD, OBJECT_PRICE}
    emulator.reset_log()
    again = asyncio.run(go())
    assert again.gaps_found == 0
    assert emulator.requests("klines") == []
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM candle_quarantine")).scalar_one() == len(quarantined)
