"""`strategy-engine backtest`: replay stored history through the whole signal path; print the tables."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markdown import Markdown

from cli.common import console, friendly_errors, settings
from db.engine import make_engine
from db.migrate import require_head
from domain.timeframes import DAY_MS, last_closed_open, timeframe_ms
from tasks.backtest import backtest_stored


@friendly_errors
def backtest_command(
    exchange: str = typer.Option(None, help="Exchange whose stored candles to replay (default: SE_EXCHANGE)."),
    symbols: str = typer.Option(None, help="Comma-separated symbols (default: SE_SYMBOLS)."),
    timeframe: str = typer.Option("15m", help="Timeframe to trade on (derived from the stored base timeframe)."),
    days: int = typer.Option(365, min=1, help="Days of history to replay."),
    controls: int = typer.Option(5, min=0, help="Seeded random walks run through the same backtest as a control."),
    reports: str = typer.Option("reports", help="Where the markdown report and PNG plots go."),
    audit: int = typer.Option(3, min=0, help="Look-ahead audit: random cut points (0 to skip)."),
) -> None:
    """Backtest stored candles: trades, equity, per-tier expectancy, calibration by score bucket, score vs R."""
    cfg = settings()
    exchange = exchange or cfg.exchange
    names = [s.strip() for s in (symbols or cfg.symbols).split(",") if s.strip()]
    end = last_closed_open(int(time.time() * 1000), timeframe) + timeframe_ms(timeframe)
    engine = make_engine(cfg.database_url.get_secret_value())
    try:
        require_head(engine)
        started = time.perf_counter()
        outcome = backtest_stored(
            engine,
            exchange=exchange,
            symbols=names,
            base_timeframe=cfg.timeframe,
            timeframe=timeframe,
            start_ms=end - days * DAY_MS,
            end_ms=end,
            controls=controls,
            reports_dir=Path(reports),
            audit_cuts=audit,
        )
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    console.print(Markdown(outcome.markdown))
    if outcome.audit_ok is not None:
        verdict = "passed" if outcome.audit_ok else "[red]FAILED[/red]"
        console.print(f"look-ahead audit ({audit} cuts): {verdict}, {outcome.audit_mismatches} mismatches")
    console.print(f"report: {', '.join(str(p) for p in outcome.files)} ({elapsed:.1f} s)")
