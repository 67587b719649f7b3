from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sqlalchemy import Engine

from db.candles import upsert_candles
from db.gaps import find_gaps, record_empty_range, record_first_candle
from domain.gaps import missing_from_sorted

pytestmark = pytest.mark.integration
M = 60_000
T0 = 1_700_000_040_000


def frame(symbol: str, ts: np.ndarray) -> pl.DataFrame:
    n = len(ts)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "ts": ts.astype(np.int64),
            "open": np.full(n, 1.0),
            "high": np.full(n, 2.0),
            "low": np.full(n, 0.5),
            "close": np.full(n, 1.5),
            "volume": np.full(n, 3.0),
        }
    )


def store(engine: Engine, f: pl.DataFrame) -> None:
    with engine.begin() as conn:
        upsert_candles(conn, f, exchange="x", timeframe="1m")


def scan(engine: Engine, symbols, start, end, **kw):
    with engine.begin() as conn:
        return find_gaps(conn, exchange="x", symbols=symbols, timeframe="1m", start_ms=start, end_ms=end, **kw)


def test_sql_matches_the_reference_on_random_holes(db: Engine) -> None:
    rng = np.random.default_rng(4)
    n = 5_000
    expected = {}
    for i, symbol in enumerate(["A/B", "C/D", "E/F"]):
        keep = rng.random(n) > 0.03 * (i + 1)
        keep[:3] = i != 1  # C/D starts with a hole
        keep[-2:] = i != 2  # E/F ends with one
        ts = T0 + np.arange(n, dtype=np.int64)[keep] * M
        store(db, frame(symbol, ts))
        expected[symbol] = missing_from_sorted(ts.tolist(), start_ms=T0, end_ms=T0 + n * M, timeframe="1m")
    expected["EMPTY/X"] = [(T0, T0 + n * M)]
    result = scan(db, list(expected), T0, T0 + n * M, update_watermark=False)
    got: dict[str, list[tuple[int, int]]] = {s: [] for s in expected}
    for g in result.gaps:
        got[g.symbol].append((g.start_ms, g.end_ms))
    assert got == expected


def test_confirmed_empty_ranges_and_first_candle_are_not_gaps(db: Engine) -> None:
    ts = T0 + np.array([100, 101, 102, 150, 151], dtype=np.int64) * M
    store(db, frame("A/B", ts))
    with db.begin() as conn:
        record_empty_range(conn, exchange="x", symbol="A/B", timeframe="1m", start_ms=T0 + 103 * M, end_ms=T0 + 140 * M)
        record_first_candle(conn, exchange="x", symbol="A/B", timeframe="1m", first_candle_ms=T0 + 100 * M)
    result = scan(db, ["A/B"], T0, T0 + 152 * M, update_watermark=False)
    assert [(g.start_ms, g.end_ms) for g in result.gaps] == [(T0 + 140 * M, T0 + 150 * M)]


def test_watermark_makes_routine_scans_start_at_the_newest_data(db: Engine) -> None:
    ts = T0 + np.arange(1_000, dtype=np.int64) * M
    store(db, frame("A/B", ts))
    first = scan(db, ["A/B"], T0, T0 + 1_000 * M)
    assert first.gaps == []
    assert first.scanned_from["A/B"] == T0
    store(db, frame("A/B", T0 + np.arange(1_000, 1_010, dtype=np.int64) * M))
    routine = scan(db, ["A/B"], T0, T0 + 1_012 * M)
    assert routine.scanned_from["A/B"] == T0 + 1_000 * M
    assert [(g.start_ms, g.end_ms) for g in routine.gaps] == [(T0 + 1_010 * M, T0 + 1_012 * M)]
    # the watermark stops at the first remaining gap: the next scan re-checks from there
    again = scan(db, ["A/B"], T0, T0 + 1_012 * M)
    assert again.scanned_from["A/B"] == T0 + 1_010 * M
    # a range starting before the watermark is scanned in full
    wider = scan(db, ["A/B"], T0 - 10 * M, T0 + 1_012 * M)
    assert wider.scanned_from["A/B"] == T0 - 10 * M
    assert (wider.gaps[0].start_ms, wider.gaps[0].end_ms) == (T0 - 10 * M, T0)


@pytest.mark.shared_data
def test_real_holes_of_unittest_btc_are_found(db: Engine, shared_candles) -> None:
    raw = pl.read_csv(shared_candles / "UNITTEST-BTC_1m.csv")
    ts = raw["timestamp"].cast(pl.Int64).to_numpy()
    store(db, frame("UNITTEST/BTC", np.sort(ts)))
    start, end = int(ts.min()), int(ts.max()) + M
    expected = missing_from_sorted(np.sort(ts).tolist(), start_ms=start, end_ms=end, timeframe="1m")
    result = scan(db, ["UNITTEST/BTC"], start, end, update_watermark=False)
    assert [(g.start_ms, g.end_ms) for g in result.gaps] == expected
    missing = sum((b - a) // M for a, b in expected)
    assert missing == (end - start) // M - len(ts)
