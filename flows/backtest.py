"""`backtest`: replay the signal path over stored candles and report whether the score predicts P&L."""

from __future__ import annotations

from typing import Any

from prefect import flow

from domain.timeframes import DAY_MS, last_closed_open, timeframe_ms
from flows.common import now_ms, resolve
from tasks.backtest import backtest_task


@flow(name="backtest")
def backtest(
    exchange: str | None = None,
    symbols: list[str] | None = None,
    timeframe: str = "15m",
    days: int = 365,
    controls: int = 5,
    reports_dir: str = "reports",
    audit_cuts: int = 3,
    block: str | None = None,
) -> dict[str, Any]:
    """Backtest the last `days` of stored history on `timeframe` (derived from the stored base timeframe), with
    `controls` seeded random walks as the no-edge control; report files go to `reports_dir`."""
    scope = resolve(exchange, symbols, block=block)
    end = last_closed_open(now_ms(), timeframe) + timeframe_ms(timeframe)
    return backtest_task(
        exchange=scope.exchange,
        symbols=scope.symbols,
        base_timeframe=scope.timeframe,
        timeframe=timeframe,
        start_ms=end - days * DAY_MS,
        end_ms=end,
        controls=controls,
        reports_dir=reports_dir,
        audit_cuts=audit_cuts,
        block=scope.block,
    )
