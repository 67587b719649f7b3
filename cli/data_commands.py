"""`strategy-engine gaps` and `strategy-engine jobs`: what is missing, and the backfill jobs filling it."""

from __future__ import annotations

import time
from collections import Counter

import typer
from rich.table import Table

from cli.common import console, friendly_errors, settings
from db.backfill import job_counts, list_jobs
from db.engine import make_engine
from db.gaps import find_gaps
from db.migrate import require_head
from domain.gaps import Priority, PriorityPolicy, prioritise
from domain.timeframes import DAY_MS, from_ms, last_closed_open, timeframe_ms


def _symbols(value: str | None) -> list[str]:
    return [s.strip() for s in (value or ",".join(settings().symbol_list)).split(",") if s.strip()]


@friendly_errors
def gaps_command(
    exchange: str = typer.Option(None, help="ccxt exchange id (default: SE_EXCHANGE)."),
    symbols: str = typer.Option(None, help="Comma-separated symbols (default: SE_SYMBOLS)."),
    timeframe: str = typer.Option(None, help="Candle timeframe (default: SE_TIMEFRAME)."),
    days: int = typer.Option(30, min=1, help="How far back to look, in days."),
    full: bool = typer.Option(False, "--full", help="Ignore completeness watermarks: scan the whole range."),
) -> None:
    """Missing candle ranges per symbol with their backfill priority (CRITICAL first)."""
    cfg = settings()
    exchange = exchange or cfg.exchange
    timeframe = timeframe or cfg.timeframe
    names = _symbols(symbols)
    now_ms = int(time.time() * 1000)
    end_ms = last_closed_open(now_ms, timeframe) + timeframe_ms(timeframe)
    start_ms = end_ms - days * DAY_MS
    engine = make_engine(cfg.database_url.get_secret_value())
    try:
        require_head(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            scan = find_gaps(
                conn,
                exchange=exchange,
                symbols=names,
                timeframe=timeframe,
                start_ms=start_ms,
                end_ms=end_ms,
                use_watermark=not full,
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        engine.dispose()
    policy = PriorityPolicy(signal_timeframe=cfg.signal_timeframe)
    ranked = prioritise(scan.gaps, now_ms=now_ms, timeframe=timeframe, policy=policy)
    table = Table("priority", "symbol", "from (UTC)", "to (UTC)", "missing candles")
    for gap in ranked[:200]:
        table.add_row(
            gap.priority.name,
            gap.symbol,
            f"{from_ms(gap.start_ms):%Y-%m-%d %H:%M}",
            f"{from_ms(gap.end_ms):%Y-%m-%d %H:%M}",
            f"{gap.candles(timeframe):,}",
        )
    if ranked:
        console.print(table)
        if len(ranked) > 200:
            console.print(f"... and {len(ranked) - 200} more")
    missing = Counter[Priority]()
    for gap in ranked:
        missing[gap.priority] += gap.candles(timeframe)
    summary = ", ".join(f"{p.name} {missing[p]:,}" for p in Priority if missing[p]) or "none"
    console.print(
        f"{exchange} {timeframe}, {len(names)} symbol(s), last {days} day(s): {len(ranked)} gap(s); "
        f"missing candles by priority: {summary} (scan {elapsed_ms:.0f} ms)"
    )


@friendly_errors
def jobs_command(
    exchange: str = typer.Option(None, help="Only this exchange."),
    status: str = typer.Option(None, help="Only these statuses, comma-separated (PENDING,IN_PROGRESS,DONE,FAILED)."),
    limit: int = typer.Option(50, min=1, help="Rows to show."),
) -> None:
    """Backfill jobs: open ones first, then by priority; FAILED jobs show their last error."""
    engine = make_engine(settings().database_url.get_secret_value())
    try:
        require_head(engine)
        with engine.connect() as conn:
            statuses = [s.strip().upper() for s in status.split(",")] if status else None
            jobs = list_jobs(conn, exchange=exchange, statuses=statuses, limit=limit)
            counts = job_counts(conn, exchange=exchange)
    finally:
        engine.dispose()
    table = Table(
        "id", "status", "priority", "exchange", "symbol", "tf", "range (UTC)", "progress", "attempts", "last error"
    )
    for job in jobs:
        span = job.end_ms - job.start_ms
        progress = 100.0 * (job.checkpoint_ms - job.start_ms) / span if span else 100.0
        table.add_row(
            str(job.id),
            job.status,
            job.priority.name,
            job.exchange,
            job.symbol,
            job.timeframe,
            f"{from_ms(job.start_ms):%m-%d %H:%M} .. {from_ms(job.end_ms):%m-%d %H:%M}",
            f"{progress:5.1f}% ({job.candles_stored:,})",
            f"{job.attempts}/{job.max_attempts}",
            (job.last_error or "")[:60],
        )
    console.print(table if jobs else "no backfill jobs")
    console.print("totals: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
