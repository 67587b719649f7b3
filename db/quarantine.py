"""Rejected candles: every row validation refuses is stored here with its raw values and reason."""

from __future__ import annotations

import polars as pl
from sqlalchemy import Connection, text


def quarantine_rows(
    conn: Connection, rejected: pl.DataFrame, *, exchange: str, symbol: str, timeframe: str, source: str
) -> int:
    """Store rejected rows (columns ts, reason, detail, raw JSON text) in one statement; returns rows stored."""
    if rejected.is_empty():
        return 0
    conn.execute(
        text(
            "INSERT INTO candle_quarantine (exchange, symbol, timeframe, ts, raw, reason, detail, source)"
            " SELECT :exchange, :symbol, :timeframe,"
            " CASE WHEN r.ts IS NULL THEN NULL ELSE to_timestamp(r.ts / 1000.0) END,"
            " CAST(r.raw AS jsonb), r.reason, coalesce(r.detail, ''), :source"
            " FROM unnest(CAST(:ts AS bigint[]), CAST(:raw AS text[]), CAST(:reason AS text[]),"
            " CAST(:detail AS text[])) AS r(ts, raw, reason, detail)"
        ),
        {
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": timeframe,
            "source": source,
            # A timestamp outside what PostgreSQL can hold stays in `raw` only.
            "ts": [t if t is not None and -(2**47) < t < 2**47 else None for t in rejected["ts"].to_list()],
            "raw": rejected["raw"].to_list(),
            "reason": rejected["reason"].to_list(),
            "detail": rejected["detail"].to_list(),
        },
    )
    return rejected.height


def quarantine_counts(
    conn: Connection, *, exchange: str | None = None, since_ms: int | None = None
) -> dict[tuple[str, str], int]:
    """Quarantined rows per (symbol, reason)."""
    rows = conn.execute(
        text(
            "SELECT symbol, reason, count(*) FROM candle_quarantine"
            " WHERE (CAST(:exchange AS text) IS NULL OR exchange = :exchange)"
            " AND (CAST(:since AS bigint) IS NULL OR received_at >= to_timestamp(CAST(:since AS bigint) / 1000.0))"
            " GROUP BY symbol, reason ORDER BY symbol, reason"
        ),
        {"exchange": exchange, "since": since_ms},
    ).all()
    return {(str(s), str(r)): int(n) for s, r, n in rows}
