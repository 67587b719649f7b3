"""`ingest`: the newest closed candles of every symbol, validated and stored; the cache updated."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import batches, gather, now_ms, raise_if, resolve, table
from tasks.steps import ensure_exchange_limit, ingest_task

DERIVED = ["5m", "15m", "1h", "4h", "1d"]


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def ingest(
    exchange: str | None = None,
    symbols: list[str] | None = None,
    timeframe: str | None = None,
    block: str | None = None,
    symbols_per_task: int | None = None,
    lookback: int = 250,
) -> list[dict[str, Any]]:
    """Validate-and-ingest the latest closed candles for all symbols (older holes are the backfill's)."""
    scope = resolve(exchange, symbols, timeframe, block=block)
    ensure_exchange_limit(scope.exchange)
    at = now_ms()
    futures = [
        ingest_task.submit(
            exchange=scope.exchange,
            symbols=batch,
            timeframe=scope.timeframe,
            derived_timeframes=[tf for tf in DERIVED if tf != scope.timeframe],
            now_ms=at,
            block=scope.block,
            lookback=lookback,
        )
        for batch in batches(scope.symbols, symbols_per_task)
    ]
    results, errors = gather(futures)
    rows = [row for batch in results for row in batch]
    table(
        "data-quality",
        scope.exchange,
        [
            {k: r[k] for k in ("symbol", "received", "inserted", "revised", "duplicates", "quarantined")}
            | {"quarantined_by_reason": ", ".join(f"{k}: {v}" for k, v in r["quarantined_by_reason"].items())}
            for r in rows
        ],
        f"Data quality of the last ingest ({scope.timeframe}): every candle received is inserted, revised, a "
        "duplicate or quarantined with its reason.",
    )
    raise_if(errors, "ingest")
    return rows
