"""Backtest over stored candles: load each symbol's history (derived from the base timeframe when needed),
replay the whole signal path without look-ahead (domain/backtest.py), write the report files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from adapters.report_files import backtest_markdown, write_report
from db.timescale import has_continuous_aggregates
from domain.backtest import BacktestResult, run_backtest
from domain.backtest_audit import audit_lookahead
from domain.errors import InvalidDataError
from domain.timeframes import timeframe_ms
from tasks.policy import slug
from tasks.resources import engine_for
from tasks.signals import read_signal_window


@dataclass(frozen=True, slots=True)
class BacktestOutcome:
    result: BacktestResult
    markdown: str
    files: list[Path]
    audit_ok: bool | None
    audit_mismatches: int | None


def load_history(
    engine: Engine,
    *,
    exchange: str,
    symbols: Sequence[str],
    base_timeframe: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
) -> dict[str, pl.DataFrame]:
    """Each symbol's `timeframe` candles opening in [start_ms, end_ms) (symbols with none are left out)."""
    newest = max(1, (end_ms - start_ms) // timeframe_ms(timeframe))
    out: dict[str, pl.DataFrame] = {}
    with engine.connect() as conn:
        continuous = has_continuous_aggregates(conn)
        for symbol in symbols:
            frame = read_signal_window(
                conn,
                exchange=exchange,
                symbol=symbol,
                base_timeframe=base_timeframe,
                timeframe=timeframe,
                newest=newest,
                now_ms=end_ms,
                continuous=continuous,
            ).filter((pl.col("ts") >= start_ms) & (pl.col("ts") < end_ms))
            if frame.height:
                out[symbol] = frame
    return out


def backtest_stored(
    engine: Engine,
    *,
    exchange: str,
    symbols: Sequence[str],
    base_timeframe: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    controls: int,
    reports_dir: Path | None,
    audit_cuts: int = 0,
    seed: int = 0,
) -> BacktestOutcome:
    """Backtest stored history; optionally write the report (markdown + PNGs) and run the look-ahead audit."""
    history = load_history(
        engine,
        exchange=exchange,
        symbols=symbols,
        base_timeframe=base_timeframe,
        timeframe=timeframe,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    if not history:
        raise InvalidDataError(
            f"no stored {timeframe} candles for {', '.join(symbols)} on {exchange}: backfill them first"
        )
    label = f"{exchange} {', '.join(sorted(history))} {timeframe} (stored candles)"
    result = run_backtest(history, timeframe=timeframe, seed=seed, controls=controls, label=label)
    files = write_report(result, reports_dir) if reports_dir is not None else []
    audit = audit_lookahead(history, timeframe=timeframe, cuts=audit_cuts, seed=seed) if audit_cuts else None
    images = [p.name for p in files if p.suffix == ".png"]
    return BacktestOutcome(
        result=result,
        markdown=backtest_markdown(result, images=images),
        files=files,
        audit_ok=None if audit is None else audit.ok,
        audit_mismatches=None if audit is None else len(audit.mismatches),
    )


@task(task_run_name="backtest-{exchange}-{timeframe}", cache_policy=NO_CACHE, timeout_seconds=3600)
def backtest_task(
    *,
    exchange: str,
    symbols: list[str],
    base_timeframe: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    controls: int,
    reports_dir: str,
    audit_cuts: int,
    block: str,
) -> dict[str, Any]:
    """Run the backtest, write the report files, publish the report as a markdown artifact."""
    outcome = backtest_stored(
        engine_for(block),
        exchange=exchange,
        symbols=symbols,
        base_timeframe=base_timeframe,
        timeframe=timeframe,
        start_ms=start_ms,
        end_ms=end_ms,
        controls=controls,
        reports_dir=Path(reports_dir),
        audit_cuts=audit_cuts,
    )
    audit = (
        ""
        if outcome.audit_ok is None
        else f"\n\nLook-ahead audit ({audit_cuts} random cuts): {'passed' if outcome.audit_ok else 'FAILED'}, "
        f"{outcome.audit_mismatches} mismatches.\n"
    )
    create_markdown_artifact(
        outcome.markdown + audit + "\n\nFiles: " + ", ".join(str(p) for p in outcome.files),
        key=f"backtest-{slug(exchange)}-{slug(timeframe)}",
        description="Backtest: trades, equity, tiers, calibration, score vs realised R with bootstrap intervals.",
    )
    return {
        "files": [str(p) for p in outcome.files],
        "audit_ok": outcome.audit_ok,
        "audit_mismatches": outcome.audit_mismatches,
    }
