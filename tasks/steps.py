"""The Prefect tasks. Each takes block names and plain values, builds its clients, does one stage, and
returns plain, JSON-safe results. Retries: TransientError only, exponential backoff with jitter. Fetch and
write tasks never use the result cache. Exchange I/O holds a slot of the exchange's global concurrency limit.

Timeouts: tasks called in the flow's thread carry `timeout_seconds`; mapped tasks run in worker threads, where
Prefect can only enforce a timeout after the call returns (PREFECT_NOTES), so their I/O is bounded by the
clients' own timeouts instead (ccxt `timeout`, Redis socket timeout, PostgreSQL connect timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from blocks.registration import resolve_keyring
from config.settings import load_settings
from db.secrets import count_stale_rows, rotate_keys
from domain.gaps import Priority, PriorityPolicy
from domain.timeframes import DAY_MS, last_closed_open, timeframe_ms
from tasks.backfill import BackfillOptions, backfill, continuity_report
from tasks.execution import ExecutionSettings, execute_paper
from tasks.ingest import ingest_symbols
from tasks.policy import RETRIES, RETRY_DELAYS, RETRY_JITTER, raise_for_failures, retry_transient_only, slug
from tasks.resources import account_for, cache_for, engine_for
from tasks.signals import EvaluationSettings, evaluate_symbols, read_signal_windows

_COMMON: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient_only,
    "cache_policy": NO_CACHE,
}


def exchange_limit_name(exchange: str) -> str:
    return f"exchange-{slug(exchange)}"


def ensure_exchange_limit(exchange: str, limit: int = 4) -> str:
    """Create the exchange's global concurrency limit when missing (never lowers an existing one)."""
    name = exchange_limit_name(exchange)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except Exception:  # noqa: BLE001 - ObjectNotFound: create it
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
    return name


def _run_id() -> str | None:
    value = flow_run.get_id()
    return str(value) if value else None


def batch_name(parameters: dict[str, Any]) -> str:
    symbols = parameters.get("symbols") or []
    first = slug(symbols[0]) if symbols else "none"
    return f"{first}+{len(symbols) - 1}" if len(symbols) > 1 else first


@task(task_run_name="ingest-{exchange}-{symbols[0]}", **_COMMON)
def ingest_task(
    *,
    exchange: str,
    symbols: list[str],
    timeframe: str,
    derived_timeframes: list[str],
    now_ms: int,
    block: str,
    lookback: int = 250,
) -> list[dict[str, Any]]:
    """Validate-and-ingest the newest closed candles of a batch of symbols; per-symbol results."""
    engine = engine_for(block)
    cache = cache_for(block)
    account = account_for(block)
    try:
        with concurrency(exchange_limit_name(exchange), occupy=1, strict=True):

            async def run() -> list[Any]:
                async with account.open_source(symbols) as source:
                    return await ingest_symbols(
                        engine,
                        source,
                        cache,
                        symbols=symbols,
                        timeframe=timeframe,
                        now_ms=now_ms,
                        lookback=lookback,
                        derived_timeframes=derived_timeframes,
                    )

            results = asyncio.run(run())
    finally:
        cache.close()
    rows = [asdict(r) for r in results]
    raise_for_failures("ingest", [(r["symbol"], r["error"], r["transient"]) for r in rows if r["error"]])
    return rows


@task(task_run_name="backfill-{exchange}", timeout_seconds=3600, **_COMMON)
def backfill_task(
    *,
    exchange: str,
    symbols: list[str],
    timeframe: str,
    signal_timeframe: str,
    days: int,
    now_ms: int,
    priorities: list[str] | None,
    block: str,
    concurrency_per_exchange: int = 4,
) -> dict[str, Any]:
    """Gap detection and priority backfill; returns the report and the continuity per symbol."""
    engine = engine_for(block)
    account = account_for(block)
    end = last_closed_open(now_ms, timeframe) + timeframe_ms(timeframe)
    start = end - days * DAY_MS
    wanted = [Priority[p] for p in priorities] if priorities else None
    with concurrency(exchange_limit_name(exchange), occupy=1, strict=True):

        async def run() -> Any:
            async with account.open_source(symbols, history_days=days) as source:
                return await backfill(
                    engine,
                    source,
                    symbols=symbols,
                    timeframe=timeframe,
                    start_ms=start,
                    end_ms=end,
                    now_ms=now_ms,
                    policy=PriorityPolicy(signal_timeframe=signal_timeframe),
                    priorities=wanted,
                    options=BackfillOptions(concurrency=concurrency_per_exchange),
                )

        report = asyncio.run(run())
    continuity = continuity_report(
        engine, exchange=exchange, symbols=symbols, timeframe=timeframe, start_ms=start, end_ms=end
    )
    failed = {s: p.errors for s, p in report.symbols.items() if p.errors}
    return {
        "gaps_found": report.gaps_found,
        "candles_missing": report.candles_missing,
        "missing_by_priority": report.missing_by_priority,
        "jobs_created": report.jobs_created,
        "jobs_resumed": report.jobs_resumed,
        "symbols": {s: {k: v for k, v in asdict(p).items() if k != "errors"} for s, p in report.symbols.items()},
        "errors": failed,
        "continuity": [asdict(c) for c in continuity],
    }


@task(task_run_name="warm-cache-{timeframe}", timeout_seconds=300, **_COMMON)
def warm_cache_task(
    *,
    exchange: str,
    symbols: list[str],
    base_timeframe: str,
    timeframe: str,
    now_ms: int,
    block: str,
    window: int = 1000,
) -> int:
    """Load every configured symbol's candle window into Redis in one pass; returns windows written."""
    engine = engine_for(block)
    cache = cache_for(block)
    try:
        with engine.connect() as conn:
            windows = read_signal_windows(
                conn,
                exchange=exchange,
                symbols=symbols,
                base_timeframe=base_timeframe,
                timeframe=timeframe,
                newest=window,
                now_ms=now_ms,
            )
        return cache.warm(exchange, timeframe, windows) if windows.height else 0
    finally:
        cache.close()


@task(task_run_name="evaluate-{exchange}-{symbols[0]}", **_COMMON)
def evaluate_task(
    *,
    exchange: str,
    symbols: list[str],
    base_timeframe: str,
    timeframe: str,
    now_ms: int,
    block: str,
    equity: float = 10_000.0,
) -> list[dict[str, Any]]:
    """Evaluate a batch of symbols; per-symbol results, failures isolated (then the task fails)."""
    engine = engine_for(block)
    cache = cache_for(block)
    try:
        results = evaluate_symbols(
            engine,
            cache,
            exchange=exchange,
            symbols=symbols,
            base_timeframe=base_timeframe,
            timeframe=timeframe,
            now_ms=now_ms,
            settings=EvaluationSettings(equity=equity),
            run_id=_run_id(),
        )
        stats = cache.stats.as_dict()
    finally:
        cache.close()
    rows = [
        {**r.summary(), "signal_id": r.signal_id, "error": r.error, "transient": r.transient, "cache": stats}
        for r in results
    ]
    raise_for_failures("evaluate", [(r.symbol, r.error, r.transient) for r in results if r.error])
    return rows


@task(task_run_name="execute-paper-{exchange}", timeout_seconds=600, **_COMMON)
def execute_task(
    *,
    exchange: str,
    symbols: list[str],
    base_timeframe: str,
    signal_timeframe: str,
    now_ms: int,
    block: str,
    equity: float = 10_000.0,
) -> dict[str, Any]:
    """Paper execution: enter pending signals through the scheduler and book checks; step open positions."""
    engine = engine_for(block)
    account = account_for(block)

    async def run() -> Any:
        async with account.open_source(symbols) as source:
            return await execute_paper(
                engine,
                source,
                exchange=exchange,
                base_timeframe=base_timeframe,
                signal_timeframe=signal_timeframe,
                now_ms=now_ms,
                settings=ExecutionSettings(equity=equity),
                symbols=symbols,
            )

    with concurrency(exchange_limit_name(exchange), occupy=1, strict=True):
        report = asyncio.run(run())
    return asdict(report)


@task(task_run_name="rotate-keys", timeout_seconds=3600, **_COMMON)
def rotate_keys_task(*, block: str, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every stored secret under the newest key (resumable)."""
    settings = load_settings(block_prefix=block)
    keyring = resolve_keyring(settings)
    engine = engine_for(block)
    report = rotate_keys(engine, keyring, batch_size=batch_size)
    remaining = sum(count_stale_rows(engine, keyring).values())
    return {"rotated": report.rotated, "already_current": report.already_current, "remaining": remaining}


def chunk(symbols: Sequence[str], per_task: int) -> list[list[str]]:
    per_task = max(1, per_task)
    return [list(symbols[i : i + per_task]) for i in range(0, len(symbols), per_task)]
