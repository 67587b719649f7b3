"""Seeded 1m candles, an unnest-array upsert, and a pure-Python reference for higher-timeframe candles.

Shared by the Timescale lane and the plain-PostgreSQL integration tests. Prices are multiples of 0.25 and
volumes multiples of 0.5, so sums are exact in float64 whatever order the database adds them in.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, text

from db.timescale import AggregatedCandle

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # Timescale's default time_bucket origin (a Monday)
WIDTHS = {
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "1d": timedelta(days=1),
}


@dataclass(frozen=True, slots=True)
class Candle:
    exchange: str
    symbol: str
    timeframe: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


def make_candles(
    exchange: str,
    symbol: str,
    start: datetime,
    slots: int,
    *,
    seed: int,
    missing: float = 0.1,
    timeframe: str = "1m",
) -> list[Candle]:
    """`slots` candle slots from `start`, each present with probability 1 - `missing`; a seeded random walk."""
    rng = random.Random(seed)
    step = timedelta(minutes=1) if timeframe == "1m" else WIDTHS[timeframe]
    price = 1000.0
    out: list[Candle] = []
    for i in range(slots):
        price = max(10.0, price + rng.choice((-0.75, -0.25, 0.0, 0.25, 0.5)))
        if rng.random() < missing:
            continue
        open_ = price
        close = max(10.0, price + rng.choice((-0.5, -0.25, 0.25, 0.5)))
        high = max(open_, close) + rng.choice((0.0, 0.25, 1.0))
        low = min(open_, close) - rng.choice((0.0, 0.25, 0.5))
        volume = rng.randrange(1, 200) * 0.5
        out.append(Candle(exchange, symbol, timeframe, start + i * step, open_, high, low, close, volume))
        price = close
    return out


UPSERT = text(
    """
    INSERT INTO candles AS c (exchange, symbol, timeframe, ts, open, high, low, close, volume)
    SELECT * FROM unnest(
        CAST(:exchange AS text[]), CAST(:symbol AS text[]), CAST(:timeframe AS text[]),
        CAST(:ts AS timestamptz[]), CAST(:open AS float8[]), CAST(:high AS float8[]),
        CAST(:low AS float8[]), CAST(:close AS float8[]), CAST(:volume AS float8[]))
    ON CONFLICT (exchange, symbol, timeframe, ts) DO UPDATE SET
        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
        volume = EXCLUDED.volume, revision = c.revision + 1, ingested_at = now()
    WHERE (c.open, c.high, c.low, c.close, c.volume)
        IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
    RETURNING (xmax = 0) AS inserted
    """
)


def upsert(conn: Connection, candles: Sequence[Candle]) -> tuple[int, int]:
    """Upsert via unnest arrays (the WASM server cannot take COPY FROM STDIN); returns (inserted, updated)."""
    columns = ("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    params = {name: [getattr(c, name) for c in candles] for name in columns}
    flags = conn.execute(UPSERT, params).scalars().all()
    inserted = sum(1 for f in flags if f)
    return inserted, len(flags) - inserted


def reference_aggregate(
    candles: Iterable[Candle], timeframe: str, start: datetime, end: datetime
) -> list[AggregatedCandle]:
    """Higher-timeframe candles from the 1m ones, buckets opening in [start, end), computed in Python."""
    width = WIDTHS[timeframe]
    buckets: dict[datetime, list[Candle]] = {}
    for c in sorted((c for c in candles if c.timeframe == "1m"), key=lambda c: c.ts):
        bucket = ORIGIN + ((c.ts - ORIGIN) // width) * width
        if start <= bucket < end:
            buckets.setdefault(bucket, []).append(c)
    return [
        AggregatedCandle(
            ts=bucket,
            open=rows[0].open,
            high=max(r.high for r in rows),
            low=min(r.low for r in rows),
            close=rows[-1].close,
            volume=sum(r.volume for r in rows),
            candle_count=len(rows),
        )
        for bucket, rows in sorted(buckets.items())
    ]
