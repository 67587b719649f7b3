"""Validation-and-ingest of the newest closed candles, per symbol, in batches of symbols per task.

For each symbol: fetch from just after the newest stored candle (at most `lookback` candles back; older holes
are the backfill's) to the last closed candle, validate, store (candles upserted, rejects quarantined, one
transaction per page), then update the symbol's cached window. A symbol's failure is recorded in its result
and never stops the other symbols of the batch; the task then fails (transient -> retried) so nothing looks
successful that was not.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import Engine, text

from adapters.cache import MarketDataCache
from adapters.rate_limit import retry_transient
from db.ingest import store_batch
from domain.candles import validate_frame
from domain.errors import PermanentError, TransientError
from domain.timeframes import last_closed_open, timeframe_ms
from tasks.backfill import BackfillOptions, CandleSource


@dataclass
class SymbolIngest:
    symbol: str
    received: int = 0
    inserted: int = 0
    revised: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    error: str | None = None
    transient: bool = False


def newest_stored(engine: Engine, *, exchange: str, symbols: Sequence[str], timeframe: str) -> dict[str, int]:
    """Open time (ms) of each symbol's newest stored candle (symbols with none are absent)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT u.symbol, (extract(epoch FROM m.ts) * 1000)::bigint FROM unnest(CAST(:symbols AS text[])) AS"
                " u(symbol) CROSS JOIN LATERAL (SELECT max(ts) AS ts FROM candles c WHERE c.exchange = :exchange"
                " AND c.symbol = u.symbol AND c.timeframe = :timeframe) m WHERE m.ts IS NOT NULL"
            ),
            {"symbols": list(symbols), "exchange": exchange, "timeframe": timeframe},
        ).all()
    return {str(s): int(ts) for s, ts in rows}


async def ingest_symbols(
    engine: Engine,
    source: CandleSource,
    cache: MarketDataCache | None,
    *,
    symbols: Sequence[str],
    timeframe: str,
    now_ms: int,
    lookback: int = 250,
    derived_timeframes: Sequence[str] = (),
    options: BackfillOptions | None = None,
) -> list[SymbolIngest]:
    """Ingest the newest closed candles of `symbols`; one result per symbol, failures included."""
    # One quick retry in place; longer outages are the Prefect task's retries (with backoff).
    options = options or BackfillOptions(fetch_attempts=2, base_delay_s=0.2)
    exchange = source.exchange_id
    step = timeframe_ms(timeframe)
    end = last_closed_open(now_ms, timeframe) + step
    newest = await asyncio.to_thread(newest_stored, engine, exchange=exchange, symbols=symbols, timeframe=timeframe)
    results: list[SymbolIngest] = []
    for symbol in symbols:
        result = SymbolIngest(symbol)
        results.append(result)
        cursor = max(newest.get(symbol, end - lookback * step - step) + step, end - lookback * step)
        try:
            while cursor < end:
                page_end = min(end, cursor + source.max_ohlcv_page * step)
                since = cursor
                # The newest candles: an empty answer is believed at once (nothing traded), not recorded.
                fetch = functools.partial(
                    source.fetch_ohlcv_page, symbol, timeframe, since, None, end_ms=page_end, confirm_empty=True
                )
                page = await retry_transient(
                    fetch,
                    attempts=options.fetch_attempts,
                    base_delay_s=options.base_delay_s,
                    max_delay_s=options.max_delay_s,
                )
                validation = validate_frame(page.frame, timeframe=timeframe, now_ms=now_ms)
                with engine.begin() as conn:
                    report = store_batch(
                        conn,
                        validation,
                        exchange=exchange,
                        symbol=symbol,
                        timeframe=timeframe,
                        source=f"{exchange}:ingest",
                    )
                if cache is not None and validation.accepted.height:
                    fresh = validation.accepted.with_columns(pl.lit(symbol, pl.String).alias("symbol"))
                    cache.on_ingest(exchange, timeframe, fresh, derived_timeframes=derived_timeframes)
                result.pages += 1
                for name in ("received", "inserted", "revised", "duplicates", "quarantined"):
                    setattr(result, name, getattr(result, name) + getattr(report, name))
                result.quarantined_by_reason = dict(
                    Counter(result.quarantined_by_reason) + Counter(report.quarantined_by_reason)
                )
                cursor = page_end
        except (TransientError, PermanentError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            result.transient = isinstance(exc, TransientError)
    return results
