"""`strategy-engine run` (what `make run` calls): the main job on embedded defaults, offline by default.

Migrates (creating the database, or starting an embedded PostgreSQL when none answers), registers the blocks
from settings, runs the `pipeline` flow (ingest, backfill of the history, signals, paper execution) on the
replay exchange, and prints a summary and where to look in the Prefect UI.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import text

from cli.common import console, friendly_errors, settings
from db.embedded import EmbeddedServer, ensure_local_database
from db.engine import ensure_database, make_engine, safe_url
from db.migrate import current_revision, upgrade
from db.signals import signal_counts
from db.trading_stats import pnl_summary

UI_HOST, UI_PORT = "127.0.0.1", 4200


def _ui_running() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((UI_HOST, UI_PORT)) == 0


def _prepare_database() -> tuple[str, EmbeddedServer | None]:
    explicit = "DATABASE_URL" in os.environ or "SE_DATABASE_URL" in os.environ
    server = ensure_local_database(not explicit, Path(".data"))
    if server is not None:
        os.environ["DATABASE_URL"] = server.url
        console.print(f"[yellow]{server.message}[/yellow]")
    url = settings().database_url.get_secret_value()
    ensure_database(url)
    engine = make_engine(url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        if before != current_revision(engine):
            console.print(f"migrated {safe_url(url)} to {current_revision(engine)}")
    finally:
        engine.dispose()
    return url, server


@friendly_errors
def run_command(
    exchange: str = typer.Option(None, help="ccxt exchange id for real data (needs internet); default: replay."),
    symbols: str = typer.Option(None, help="Comma-separated symbols (default: SE_SYMBOLS)."),
    days: int = typer.Option(None, min=1, help="Days of 1m history to make complete (default: SE_HISTORY_DAYS)."),
) -> None:
    """Run the main job: migrate, register blocks, run the pipeline, print what happened."""
    if "PREFECT_API_URL" not in os.environ and _ui_running():
        os.environ["PREFECT_API_URL"] = f"http://{UI_HOST}:{UI_PORT}/api"
    url, server = _prepare_database()
    try:
        _run(url, exchange, symbols, days)
    finally:
        if server is not None and server.started:
            server.stop()  # the data stays under .data/postgres; the next run starts it again in ~0.1 s


def _run(url: str, exchange: str | None, symbols: str | None, days: int | None) -> None:
    if exchange:
        os.environ["SE_EXCHANGE"] = exchange
    cfg = settings()
    names = [s.strip() for s in (symbols or cfg.symbols).split(",") if s.strip()]
    history = days or cfg.history_days

    # Imported here: Prefect reads PREFECT_API_URL when it is imported.
    from blocks.registration import register_block_types, sync_documents
    from flows.pipeline import pipeline

    register_block_types()
    for change in sync_documents(cfg):  # the flows must use the database just migrated
        console.print(change)

    console.print(
        f"running pipeline on [bold]{cfg.exchange}[/bold] for {', '.join(names)}: {history} days of "
        f"{cfg.timeframe} history, signals on {cfg.signal_timeframe}"
    )
    started = time.perf_counter()
    state = pipeline(
        exchange=cfg.exchange,
        symbols=names,
        block=cfg.block_prefix,
        backfill_priorities=["CRITICAL", "HIGH", "MEDIUM", "LOW"],
        days=history,
        return_state=True,
    )
    elapsed = time.perf_counter() - started
    _print_summary(url, cfg.exchange, names, elapsed)
    if _ui_running():
        console.print(
            f"Prefect UI: http://{UI_HOST}:{UI_PORT} (flow runs, and artifacts: data-quality, signals, paper-pnl)"
        )
    else:
        console.print(
            "Runs were recorded by a temporary Prefect server. To browse them, start the UI with `make ui` "
            f"(http://{UI_HOST}:{UI_PORT}) and run `make run` again; its runs and artifacts appear there."
        )
    if state.is_failed():
        console.print(f"[red]pipeline failed:[/red] {state.message}")
        raise typer.Exit(1)


def _print_summary(url: str, exchange: str, symbols: list[str], elapsed: float) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            stored: dict[str, int] = dict(
                conn.execute(  # type: ignore[arg-type]
                    text(
                        "SELECT symbol, count(*) FROM candles WHERE exchange = :e AND symbol = ANY(:s) GROUP BY symbol"
                    ),
                    {"e": exchange, "s": symbols},
                ).all()
            )
            quarantine = conn.execute(
                text(
                    "SELECT reason, count(*) FROM candle_quarantine WHERE exchange = :e GROUP BY reason ORDER BY 2 DESC"
                ),
                {"e": exchange},
            ).all()
            jobs: dict[str, int] = dict(
                conn.execute(  # type: ignore[arg-type]
                    text("SELECT status, count(*) FROM backfill_jobs WHERE exchange = :e GROUP BY status"),
                    {"e": exchange},
                ).all()
            )
            filled = conn.execute(
                text("SELECT coalesce(sum(candles_stored), 0) FROM backfill_jobs WHERE exchange = :e"), {"e": exchange}
            ).scalar_one()
            empty = conn.execute(
                text("SELECT count(*) FROM empty_ranges WHERE exchange = :e"), {"e": exchange}
            ).scalar_one()
            tiers = signal_counts(conn, exchange=exchange)
            pnl = pnl_summary(conn, exchange=exchange)
    finally:
        engine.dispose()
    table = Table("what", "figure", title=f"pipeline finished in {elapsed:.0f} s")
    table.add_row("candles stored", f"{sum(stored.values()):,} ({', '.join(f'{s} {n:,}' for s, n in stored.items())})")
    table.add_row("backfill jobs", ", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none")
    table.add_row("candles filled by backfill", f"{int(filled):,}; ranges confirmed empty by the exchange: {empty}")
    table.add_row("quarantined rows by reason", ", ".join(f"{r} {n}" for r, n in quarantine) or "none")
    table.add_row(
        "signals by tier/decision", ", ".join(f"{t}/{d} {n}" for (t, d), n in sorted(tiers.items())) or "none"
    )
    table.add_row(
        "paper trades",
        f"{pnl.closed_trades} closed, {pnl.open_positions} open; realised net P&L {pnl.net_realised_pnl:,.2f} "
        f"(fees {pnl.fees:,.2f})",
    )
    console.print(table)
