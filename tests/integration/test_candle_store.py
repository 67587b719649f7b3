from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import Engine, text

from db.candles import read_candles, read_windows, upsert_candles
from domain.errors import InvalidDataError

pytestmark = pytest.mark.integration
T0 = 1_700_000_040_000  # a minute boundary


def make_frame(symbol: str, n: int, *, start: int = T0, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 0.5, n))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "ts": start + np.arange(n, dtype=np.int64) * 60_000,
            "open": open_,
            "high": np.maximum(open_, close) + 0.1,
            "low": np.minimum(open_, close) - 0.1,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        }
    )


def ingest(engine: Engine, frame: pl.DataFrame, **kw):
    with engine.begin() as conn:
        return upsert_candles(conn, frame, exchange="binance", timeframe="1m", **kw)


@pytest.mark.parametrize("fast_path", [True, False])
def test_fresh_insert_then_reingest_changes_nothing(db: Engine, fast_path: bool) -> None:
    frame = pl.concat([make_frame("BTC/USDT", 500), make_frame("ETH/USDT", 300, seed=2)])
    first = ingest(db, frame, fast_path=fast_path)
    assert (first.received, first.inserted, first.revised, first.duplicates) == (800, 800, 0, 0)
    with db.connect() as conn:
        before = conn.execute(text("SELECT count(*), max(ingested_at), sum(revision) FROM candles")).one()
    again = ingest(db, frame.sample(fraction=1.0, shuffle=True, seed=3), fast_path=fast_path)
    assert (again.received, again.inserted, again.revised, again.duplicates) == (800, 0, 0, 800)
    with db.connect() as conn:
        after = conn.execute(text("SELECT count(*), max(ingested_at), sum(revision) FROM candles")).one()
    assert before == after


def test_changed_values_are_revisions_and_new_rows_inserts(db: Engine) -> None:
    base = make_frame("BTC/USDT", 100)
    ingest(db, base)
    corrected = base.with_columns(
        pl.when(pl.col("ts") < T0 + 10 * 60_000).then(pl.col("volume") + 1).otherwise(pl.col("volume")).alias("volume")
    )
    extended = pl.concat([corrected, make_frame("BTC/USDT", 20, start=T0 + 100 * 60_000)])
    counts = ingest(db, extended).per_symbol["BTC/USDT"]
    assert (counts.received, counts.inserted, counts.revised, counts.duplicates) == (120, 20, 10, 90)
    with db.connect() as conn:
        revs = conn.execute(text("SELECT revision, count(*) FROM candles GROUP BY 1 ORDER BY 1")).all()
    assert [tuple(r) for r in revs] == [(0, 110), (1, 10)]


def test_partial_overlap_takes_the_merge_path_per_symbol(db: Engine) -> None:
    btc = make_frame("BTC/USDT", 100)
    ingest(db, btc.head(50))
    batch = pl.concat([btc, make_frame("SOL/USDT", 100, seed=5)])
    counts = ingest(db, batch)
    assert counts.per_symbol["BTC/USDT"].inserted == 50
    assert counts.per_symbol["BTC/USDT"].duplicates == 50
    assert counts.per_symbol["SOL/USDT"].inserted == 100


def test_read_back_exact_values_and_windows(db: Engine) -> None:
    btc, eth = make_frame("BTC/USDT", 400), make_frame("ETH/USDT", 50, seed=9)
    ingest(db, pl.concat([btc, eth]))
    with db.connect() as conn:
        full = read_candles(conn, exchange="binance", symbol="BTC/USDT", timeframe="1m")
        ranged = read_candles(
            conn,
            exchange="binance",
            symbol="BTC/USDT",
            timeframe="1m",
            start_ms=T0 + 60_000,
            end_ms=T0 + 11 * 60_000,
        )
        newest = read_candles(conn, exchange="binance", symbol="BTC/USDT", timeframe="1m", newest=7)
        windows = read_windows(
            conn, exchange="binance", symbols=["ETH/USDT", "BTC/USDT", "NONE/X"], timeframe="1m", newest=100
        )
    assert_frame_equal(full, btc.drop("symbol"))
    assert ranged["ts"].to_list() == [T0 + i * 60_000 for i in range(1, 11)]
    assert_frame_equal(newest, btc.drop("symbol").tail(7))
    assert windows.group_by("symbol", maintain_order=True).len().rows() == [
        ("ETH/USDT", 50),
        ("BTC/USDT", 100),
    ]
    assert_frame_equal(windows.filter(pl.col("symbol") == "BTC/USDT").drop("symbol"), btc.drop("symbol").tail(100))


def test_batch_with_duplicate_keys_is_refused(db: Engine) -> None:
    frame = make_frame("BTC/USDT", 5)
    with pytest.raises(InvalidDataError, match="twice"):
        ingest(db, pl.concat([frame, frame.head(1)]))


def test_bucket_counts_match_the_stored_candles_after_any_mix_of_writes(db: Engine) -> None:
    btc = make_frame("BTC/USDT", 500)
    ingest(db, btc.head(130))  # fast path
    ingest(db, btc.slice(100, 200).with_columns(pl.col("volume") + 1))  # merge: 30 revisions, 170 inserts
    ingest(db, btc, fast_path=False)  # merge: inserts the rest, duplicates/revisions for the others
    ingest(db, make_frame("ETH/USDT", 77, seed=4))
    with db.connect() as conn:
        counted = conn.execute(text("SELECT symbol, bucket, n FROM candle_counts ORDER BY 1, 2")).all()
        actual = conn.execute(
            text(
                "SELECT symbol, date_bin(interval '60 minutes', ts, to_timestamp(0)) AS b, count(*)"
                " FROM candles GROUP BY 1, 2 ORDER BY 1, 2"
            )
        ).all()
    assert [tuple(r) for r in counted] == [tuple(r) for r in actual]
