"""Gap detection in SQL, confirmed-empty ranges, market first candles and completeness watermarks.

One query for a set of symbols: per-bucket candle counts (kept by every upsert) rule out the complete stretches,
then a `lag(ts)` window over the primary-key index (one row per hole, PERF_NOTES: fastest of the SQL variants)
walks only the incomplete buckets, plus their edges, which `lag` cannot see. Each series keeps a
watermark [complete_from, complete_until): a scan of a range starting inside it begins at complete_until, so a
routine scan after an ingest reads only the newest candles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from db.candles import BUCKET_CANDLES, bucket_ms
from domain.gaps import Gap, subtract_ranges
from domain.timeframes import timeframe_ms

_MS = "(extract(epoch FROM {0}) * 1000)::bigint"
_TS = "to_timestamp({0} / 1000.0)"


@dataclass(frozen=True, slots=True)
class ScanResult:
    gaps: list[Gap]
    scanned_from: dict[str, int]  # per symbol, where this scan actually began (after watermark/listing)


_IN_BUCKET = (
    "c.exchange = :exchange AND c.symbol = i.symbol AND c.timeframe = :timeframe AND c.ts >= i.lo AND c.ts < i.hi"
)
_STEP = "CAST(:step AS bigint) * interval '1 millisecond'"
_WIDTH = "CAST(:bucket_ms AS bigint) * interval '1 millisecond'"
# 1. `s`: where each series' scan begins (range start, market listing, watermark).
# 2. `inc`: the buckets of BUCKET_CANDLES candles holding fewer candles than they should, by candle_counts
#    (kept by every upsert): all buckets EXCEPT the complete ones (one index range scan per series). Complete
#    buckets cannot hold a gap and are skipped; the first and last (partial) buckets are always verified.
# 3. Inside each incomplete bucket, one index-ordered walk with lag/lead; only candles next to a hole leave it,
#    each with the hole before it (from the bucket's start for the first) and/or after it (to the bucket's end
#    for the last); an empty bucket is one hole. Gaps crossing bucket edges come out in pieces that find_gaps
#    joins back together.
_GAP_SQL = f"""
WITH s AS MATERIALIZED (
    SELECT u.symbol,
           greatest({_TS.format(":start")}, m.first_candle_ts,
                    CASE WHEN :use_watermark AND w.complete_from <= {_TS.format(":start")}
                              AND w.complete_until >= {_TS.format(":start")}
                         THEN w.complete_until END) AS lo
    FROM unnest(CAST(:symbols AS text[])) AS u(symbol)
    LEFT JOIN markets m ON m.exchange = :exchange AND m.symbol = u.symbol AND m.timeframe = :timeframe
    LEFT JOIN series_watermarks w
           ON w.exchange = :exchange AND w.symbol = u.symbol AND w.timeframe = :timeframe
),
inc AS MATERIALIZED (
    SELECT s.symbol, greatest(b.b_lo, s.lo) AS lo, least(b.b_lo + {_WIDTH}, {_TS.format(":end")}) AS hi
    FROM s CROSS JOIN LATERAL (
        SELECT date_bin({_WIDTH}, s.lo, to_timestamp(0)) AS first_b,
               date_bin({_WIDTH}, {_TS.format(":end")} - {_STEP}, to_timestamp(0)) AS last_b
    ) e CROSS JOIN LATERAL (
        SELECT g.b_lo FROM generate_series(e.first_b, e.last_b, {_WIDTH}) AS g(b_lo)
        EXCEPT
        SELECT k.bucket FROM candle_counts k
        WHERE k.exchange = :exchange AND k.symbol = s.symbol AND k.timeframe = :timeframe
          AND k.bucket > e.first_b AND k.bucket < e.last_b AND k.n >= :bucket_candles
    ) b
    WHERE s.lo < {_TS.format(":end")}
)
SELECT 'gap' AS kind, i.symbol,
       CASE WHEN w.ts IS NULL THEN {_MS.format("i.lo")}
            WHEN w.prev IS NULL THEN CASE WHEN w.ts > i.lo THEN {_MS.format("i.lo")} END
            WHEN w.ts - w.prev > {_STEP} THEN {_MS.format("w.prev")} + :step END AS before_start,
       CASE WHEN w.ts IS NULL THEN {_MS.format("i.hi")} ELSE {_MS.format("w.ts")} END AS before_end,
       CASE WHEN w.next IS NULL AND w.ts + {_STEP} < i.hi THEN {_MS.format("w.ts")} + :step END AS after_start,
       {_MS.format("i.hi")} AS after_end
FROM inc i
LEFT JOIN LATERAL (
    SELECT c.ts, lag(c.ts) OVER o AS prev, lead(c.ts) OVER o AS next
    FROM candles c WHERE {_IN_BUCKET} WINDOW o AS (ORDER BY c.ts)
) w ON true
WHERE w.ts IS NULL OR (w.prev IS NULL AND w.ts > i.lo) OR w.ts - w.prev > {_STEP}
   OR (w.next IS NULL AND w.ts + {_STEP} < i.hi)
UNION ALL
SELECT 'scan', s.symbol, NULL, {_MS.format("s.lo")}, NULL, NULL FROM s
"""


def _join_adjacent(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def find_gaps(
    conn: Connection,
    *,
    exchange: str,
    symbols: Sequence[str],
    timeframe: str,
    start_ms: int,
    end_ms: int,
    use_watermark: bool = True,
    update_watermark: bool = True,
) -> ScanResult:
    """Missing candle ranges of [start_ms, end_ms) for every symbol, minus confirmed-empty ranges and anything
    before a market's first candle. With `update_watermark`, advances each series' completeness watermark."""
    step = timeframe_ms(timeframe)
    start_ms -= start_ms % step
    end_ms -= end_ms % step
    if end_ms <= start_ms or not symbols:
        return ScanResult([], {})
    # A scan is one long index walk: JIT compilation costs more (~0.6 s) than it saves.
    conn.execute(text("SET LOCAL jit = off"))
    rows = conn.execute(
        text(_GAP_SQL),
        {
            "exchange": exchange,
            "symbols": list(symbols),
            "timeframe": timeframe,
            "start": start_ms,
            "end": end_ms,
            "step": step,
            "use_watermark": use_watermark,
            "bucket_ms": bucket_ms(timeframe),
            "bucket_candles": BUCKET_CANDLES,
        },
    ).all()
    raw: dict[str, list[tuple[int, int]]] = {s: [] for s in symbols}
    scanned_from: dict[str, int] = {}
    for kind, symbol, before_start, before_end, after_start, after_end in rows:
        if kind == "scan":
            scanned_from[symbol] = min(int(before_end), end_ms)
            continue
        # one walked candle (or an empty bucket) yields the hole before it and/or the one after it
        if before_start is not None:
            raw[symbol].append((int(before_start), int(before_end)))
        if after_start is not None:
            raw[symbol].append((int(after_start), int(after_end)))
    empty = _empty_ranges(conn, exchange, timeframe, scanned_from, end_ms)
    gaps: list[Gap] = []
    for symbol, ranges in raw.items():
        for lo, hi in _join_adjacent(ranges):
            gaps.extend(Gap(symbol, a, b) for a, b in subtract_ranges(lo, hi, empty.get(symbol, [])))
    if update_watermark:
        _advance_watermarks(conn, exchange, timeframe, start_ms, end_ms, scanned_from, gaps)
    return ScanResult(gaps, scanned_from)


def _empty_ranges(
    conn: Connection, exchange: str, timeframe: str, scanned_from: dict[str, int], end_ms: int
) -> dict[str, list[tuple[int, int]]]:
    """Confirmed-empty ranges overlapping what this scan looked at (per symbol from where it began)."""
    if not scanned_from:
        return {}
    rows = conn.execute(
        text(
            f"SELECT r.symbol, {_MS.format('r.range_start')}, {_MS.format('r.range_end')}"
            " FROM unnest(CAST(:symbols AS text[]), CAST(:los AS bigint[])) AS s(symbol, lo)"
            " JOIN empty_ranges r ON r.exchange = :exchange AND r.symbol = s.symbol AND r.timeframe = :timeframe"
            f" AND r.range_end > {_TS.format('s.lo')} AND r.range_start < {_TS.format(':end')}"
        ),
        {
            "exchange": exchange,
            "timeframe": timeframe,
            "symbols": list(scanned_from),
            "los": list(scanned_from.values()),
            "end": end_ms,
        },
    ).all()
    out: dict[str, list[tuple[int, int]]] = {}
    for symbol, lo, hi in rows:
        out.setdefault(symbol, []).append((int(lo), int(hi)))
    return out


def _advance_watermarks(
    conn: Connection,
    exchange: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    scanned_from: dict[str, int],
    gaps: Sequence[Gap],
) -> None:
    first_gap: dict[str, int] = {}
    for gap in gaps:
        first_gap[gap.symbol] = min(first_gap.get(gap.symbol, gap.start_ms), gap.start_ms)
    params = [
        {"symbol": symbol, "from": start_ms, "until": first_gap.get(symbol, end_ms)}
        for symbol in scanned_from
        if first_gap.get(symbol, end_ms) > start_ms
    ]
    if not params:
        return
    # A new watermark [start, first gap) merges with a stored one it touches; otherwise the further one wins.
    conn.execute(
        text(
            f"""
            INSERT INTO series_watermarks AS w (exchange, symbol, timeframe, complete_from, complete_until)
            VALUES (:exchange, :symbol, :timeframe, {_TS.format(":from")}, {_TS.format(":until")})
            ON CONFLICT (exchange, symbol, timeframe) DO UPDATE SET
                complete_from = CASE WHEN EXCLUDED.complete_from <= w.complete_until
                                      AND EXCLUDED.complete_until >= w.complete_from
                                     THEN least(w.complete_from, EXCLUDED.complete_from)
                                     ELSE EXCLUDED.complete_from END,
                complete_until = CASE WHEN EXCLUDED.complete_from <= w.complete_until
                                       AND EXCLUDED.complete_until >= w.complete_from
                                      THEN greatest(w.complete_until, EXCLUDED.complete_until)
                                      ELSE EXCLUDED.complete_until END,
                updated_at = now()
            WHERE EXCLUDED.complete_until > w.complete_until OR EXCLUDED.complete_from < w.complete_from
            """
        ),
        [{"exchange": exchange, "timeframe": timeframe, **p} for p in params],
    )


def reset_watermarks(conn: Connection, *, exchange: str, symbols: Sequence[str], timeframe: str) -> None:
    """Forget completeness (e.g. after deleting candles) so the next scan is a full one."""
    conn.execute(
        text(
            "DELETE FROM series_watermarks WHERE exchange = :exchange AND timeframe = :timeframe"
            " AND symbol = ANY(CAST(:symbols AS text[]))"
        ),
        {"exchange": exchange, "timeframe": timeframe, "symbols": list(symbols)},
    )


def record_empty_range(
    conn: Connection,
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    reason: str = "no_candles",
) -> None:
    """Remember that the exchange answered twice without a usable candle in [start, end): `no_candles` (no
    trades) or `quarantined` (only broken candles, kept in candle_quarantine). Gap scans skip the range."""
    conn.execute(
        text(
            "INSERT INTO empty_ranges (exchange, symbol, timeframe, range_start, range_end, reason)"
            f" VALUES (:exchange, :symbol, :timeframe, {_TS.format(':start')}, {_TS.format(':end')}, :reason)"
            f" ON CONFLICT (exchange, symbol, timeframe, range_start) DO UPDATE"
            " SET range_end = greatest(empty_ranges.range_end, EXCLUDED.range_end), confirmed_at = now(),"
            " reason = EXCLUDED.reason"
        ),
        {
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": timeframe,
            "start": start_ms,
            "end": end_ms,
            "reason": reason,
        },
    )


def record_first_candle(
    conn: Connection, *, exchange: str, symbol: str, timeframe: str, first_candle_ms: int | None
) -> None:
    """Store where a market's history begins (None: the exchange returned nothing at all)."""
    conn.execute(
        text(
            "INSERT INTO markets (exchange, symbol, timeframe, first_candle_ts)"
            " VALUES (:exchange, :symbol, :timeframe,"
            " CASE WHEN CAST(:first AS bigint) IS NULL THEN NULL ELSE to_timestamp(:first / 1000.0) END)"
            " ON CONFLICT (exchange, symbol, timeframe) DO UPDATE"
            " SET first_candle_ts = EXCLUDED.first_candle_ts, checked_at = now()"
        ),
        {"exchange": exchange, "symbol": symbol, "timeframe": timeframe, "first": first_candle_ms},
    )


def known_first_candles(
    conn: Connection, *, exchange: str, symbols: Sequence[str], timeframe: str
) -> dict[str, int | None]:
    """Markets whose first candle was already looked up (value None: the exchange had none)."""
    rows = conn.execute(
        text(
            f"SELECT symbol, {_MS.format('first_candle_ts')} FROM markets WHERE exchange = :exchange"
            " AND timeframe = :timeframe AND symbol = ANY(CAST(:symbols AS text[]))"
        ),
        {"exchange": exchange, "timeframe": timeframe, "symbols": list(symbols)},
    ).all()
    return {symbol: None if first is None else int(first) for symbol, first in rows}
