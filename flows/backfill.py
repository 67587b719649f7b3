"""`backfill`: gap detection and priority backfill for a symbol set, with a continuity report."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import markdown, now_ms, resolve, table
from tasks.steps import backfill_task, ensure_exchange_limit


@flow(name="backfill")
def backfill(
    exchange: str | None = None,
    symbols: list[str] | None = None,
    timeframe: str | None = None,
    days: int | None = None,
    priorities: list[str] | None = None,
    block: str | None = None,
    concurrency_per_exchange: int = 4,
) -> dict[str, Any]:
    """Find missing candles of the last `days`, create prioritised jobs (CRITICAL first), fetch them."""
    scope = resolve(exchange, symbols, timeframe, block=block)
    ensure_exchange_limit(scope.exchange)
    report = backfill_task(
        exchange=scope.exchange,
        symbols=scope.symbols,
        timeframe=scope.timeframe,
        signal_timeframe=scope.signal_timeframe,
        days=days or scope.history_days,
        now_ms=now_ms(),
        priorities=priorities,
        block=scope.block,
        concurrency_per_exchange=concurrency_per_exchange,
    )
    table("continuity", scope.exchange, report["continuity"], "Coverage per symbol after the backfill.")
    missing = ", ".join(f"{k} {v:,}" for k, v in report["missing_by_priority"].items()) or "none"
    errors = "\n".join(f"- {s}: {'; '.join(e)[:300]}" for s, e in report["errors"].items()) or "none"
    markdown(
        "backfill",
        scope.exchange,
        f"## Backfill {scope.exchange} {scope.timeframe}\n\n"
        f"- gaps found: {report['gaps_found']} ({report['candles_missing']:,} candles; by priority: {missing})\n"
        f"- jobs: {report['jobs_created']} new, {report['jobs_resumed']} resumed\n\n### Errors\n{errors}\n",
        "Gaps and backfill progress.",
    )
    return report
