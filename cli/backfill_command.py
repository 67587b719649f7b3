"""`strategy-engine backfill`: fill the gaps of the last N days, highest priority first, with progress bars."""

from __future__ import annotations

import asyncio
import time

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.sources import open_source
from cli.common import console, friendly_errors, settings
from db.engine import make_engine
from db.migrate import require_head
from domain.errors import InvalidDataError
from domain.gaps import Priority, PriorityPolicy
from domain.timeframes import DAY_MS, last_closed_open, timeframe_ms
from tasks.backfill import BackfillOptions, BackfillReport, SymbolProgress, backfill, continuity_report


@friendly_errors
def backfill_command(
    exchange: str = typer.Option(None, help="ccxt exchange id, or replay (default: SE_EXCHANGE)."),
    symbols: str = typer.Option(None, help="Comma-separated symbols (default: SE_SYMBOLS)."),
    timeframe: str = typer.Option(None, help="Candle timeframe (default: SE_TIMEFRAME)."),
    days: int = typer.Option(30, min=1, help="How far back to make history complete, in days."),
    priority: str = typer.Option(
        None, help="Only gaps of these priorities, comma-separated (CRITICAL,HIGH,MEDIUM,LOW); default all."
    ),
    concurrency: int = typer.Option(4, min=1, help="Symbols fetched at once (inside the exchange's rate budget)."),
    api_url: str = typer.Option(None, hidden=True, help="Override the exchange's REST base URL (test emulators)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Detect gaps, create prioritised jobs, fetch them (resuming jobs a killed run left), then report continuity."""
    cfg = settings()
    exchange = exchange or cfg.exchange
    timeframe = timeframe or cfg.timeframe
    names = [s.strip() for s in (symbols or cfg.symbols).split(",") if s.strip()]
    try:
        wanted = [Priority[p.strip().upper()] for p in priority.split(",")] if priority else None
    except KeyError as exc:
        raise InvalidDataError(f"unknown priority {exc.args[0]!r}: use CRITICAL, HIGH, MEDIUM or LOW") from None
    now_ms = int(time.time() * 1000)
    end_ms = last_closed_open(now_ms, timeframe) + timeframe_ms(timeframe)
    start_ms = end_ms - days * DAY_MS
    engine = make_engine(cfg.database_url.get_secret_value())
    try:
        require_head(engine)
        progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        )
        bars: dict[str, TaskID] = {}

        def on_page(symbol: str, state: SymbolProgress) -> None:
            done = state.inserted + state.revised + state.duplicates + state.quarantined + state.empty_candles
            if symbol not in bars:
                bars[symbol] = progress.add_task(symbol, total=max(state.candles_expected, 1))
            progress.update(bars[symbol], completed=done)

        async def run() -> BackfillReport:
            async with open_source(exchange, api_url=api_url) as source:
                return await backfill(
                    engine,
                    source,
                    symbols=names,
                    timeframe=timeframe,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    now_ms=now_ms,
                    policy=PriorityPolicy(signal_timeframe=cfg.signal_timeframe),
                    priorities=wanted,
                    options=BackfillOptions(concurrency=concurrency),
                    on_page=on_page,
                )

        started = time.perf_counter()
        with progress:
            report = asyncio.run(run())
        elapsed = time.perf_counter() - started
        rows = continuity_report(
            engine, exchange=exchange, symbols=names, timeframe=timeframe, start_ms=start_ms, end_ms=end_ms
        )
    finally:
        engine.dispose()
    console.print(
        f"{report.gaps_found} gap(s), {report.candles_missing:,} candles missing; jobs: {report.jobs_created} new, "
        f"{report.jobs_resumed} resumed; {elapsed:.1f} s"
    )
    table = Table(
        "symbol", "coverage %", "stored", "confirmed empty", "expected", "remaining gaps", "quarantined", "errors"
    )
    for row in rows:
        errors = report.symbols.get(row.symbol)
        table.add_row(
            row.symbol,
            f"{row.coverage_pct:.2f}",
            f"{row.stored:,}",
            f"{row.confirmed_empty:,}",
            f"{row.expected:,}",
            f"{row.remaining_gaps} ({row.remaining_missing:,} candles)",
            f"{row.quarantined:,}",
            "; ".join(errors.errors)[:80] if errors else "",
        )
    console.print(table)
