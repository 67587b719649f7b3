"""`evaluate_signals`: per-symbol signal evaluation as retriable batch tasks."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import batches, gather, now_ms, raise_if, resolve, table
from tasks.steps import evaluate_task, warm_cache_task


@flow(name="evaluate_signals", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def evaluate_signals(
    exchange: str | None = None,
    symbols: list[str] | None = None,
    signal_timeframe: str | None = None,
    timeframe: str | None = None,
    block: str | None = None,
    symbols_per_task: int | None = None,
    equity: float = 10_000.0,
) -> list[dict[str, Any]]:
    """Warm the cache, evaluate every symbol (batched; a symbol's failure fails only its batch), store signals.
    `timeframe` is the stored base timeframe the signal timeframe's candles are derived from."""
    scope = resolve(exchange, symbols, timeframe, signal_timeframe=signal_timeframe, block=block)
    at = now_ms()
    warmed = warm_cache_task(
        exchange=scope.exchange,
        symbols=scope.symbols,
        base_timeframe=scope.timeframe,
        timeframe=scope.signal_timeframe,
        now_ms=at,
        block=scope.block,
    )
    futures = [
        evaluate_task.submit(
            exchange=scope.exchange,
            symbols=batch,
            base_timeframe=scope.timeframe,
            timeframe=scope.signal_timeframe,
            now_ms=at,
            block=scope.block,
            equity=equity,
        )
        for batch in batches(scope.symbols, symbols_per_task)
    ]
    results, errors = gather(futures)
    rows = [row for batch in results for row in batch]
    hits = sum(r["cache"]["hits"] for batch in results for r in batch[:1])
    misses = sum(r["cache"]["misses"] for batch in results for r in batch[:1])
    rate = hits / (hits + misses) if hits + misses else 0.0
    table(
        "signals",
        scope.exchange,
        [{k: v for k, v in r.items() if k not in ("cache", "transient")} for r in rows],
        f"Signals on {scope.signal_timeframe}: score, tier, conditions passed, decision. Cache: {warmed} windows "
        f"warmed, hit rate {rate:.1%} ({hits} hits, {misses} misses).",
    )
    raise_if(errors, "evaluate_signals")
    return rows
