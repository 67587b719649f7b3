"""`execute`: paper trading on the newest ENTER signals; open positions stepped through new candles."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import markdown, now_ms, resolve, table
from tasks.steps import ensure_exchange_limit, execute_task


@flow(name="execute")
def execute(
    exchange: str | None = None,
    symbols: list[str] | None = None,
    block: str | None = None,
    equity: float = 10_000.0,
) -> dict[str, Any]:
    """Paper broker: scheduler gate, order-book check, tier sizing, entry at the next open, TP1/TP2/stop."""
    scope = resolve(exchange, symbols, block=block)
    ensure_exchange_limit(scope.exchange)
    report = execute_task(
        exchange=scope.exchange,
        symbols=scope.symbols,
        base_timeframe=scope.timeframe,
        signal_timeframe=scope.signal_timeframe,
        now_ms=now_ms(),
        block=scope.block,
        equity=equity,
    )
    table("paper-entries", scope.exchange, report["entered"] + report["skipped"], "Signals acted on or skipped (why).")
    pnl = report["pnl"]
    markdown(
        "paper-pnl",
        scope.exchange,
        "## Paper P&L\n\n"
        + "\n".join(f"- {k.replace('_', ' ')}: {v}" for k, v in pnl.items())
        + f"\n- fills this run: {report['fills']}, positions closed this run: {report['closed']}\n",
        "Paper trading P&L (realised net of fees).",
    )
    return report
