"""Shared by the flows: parameters resolved from settings, batching, collecting mapped results, artifacts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture

from config.settings import load_settings
from domain.errors import StrategyEngineError
from tasks.policy import slug


@dataclass(frozen=True, slots=True)
class Scope:
    exchange: str
    symbols: list[str]
    timeframe: str
    signal_timeframe: str
    block: str
    history_days: int


def resolve(
    exchange: str | None,
    symbols: Sequence[str] | None,
    timeframe: str | None = None,
    signal_timeframe: str | None = None,
    block: str | None = None,
) -> Scope:
    """Flow parameters, with settings (SE_* variables) filling what was not given."""
    cfg = load_settings()
    return Scope(
        exchange=exchange or cfg.exchange,
        symbols=list(symbols) if symbols else cfg.symbol_list,
        timeframe=timeframe or cfg.timeframe,
        signal_timeframe=signal_timeframe or cfg.signal_timeframe,
        block=block or cfg.block_prefix,
        history_days=cfg.history_days,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def batches(symbols: Sequence[str], per_task: int | None, *, max_tasks: int = 4) -> list[list[str]]:
    """Symbols split into at most `max_tasks` batches, one per worker thread of the flows' task runner. Prefect
    costs ~30-60 ms of server recording per task run here (PREFECT_NOTES); `make bench` (signals, 500 symbols,
    2.9-3.0 s without Prefect) measured 4 tasks at 4.1 s in two runs, 8 or 16 tasks at 4.1-5.1 s."""
    if per_task is None:
        per_task = max(1, -(-len(symbols) // max_tasks))
    return [list(symbols[i : i + per_task]) for i in range(0, len(symbols), per_task)]


class StageFailed(StrategyEngineError):
    """A stage finished with failed tasks (their successes are stored and reported)."""


def gather(futures: Sequence[PrefectFuture[Any]]) -> tuple[list[Any], list[str]]:
    """Wait for mapped tasks; returns (results of the ones that completed, error texts of the ones that failed)."""
    results: list[Any] = []
    errors: list[str] = []
    for future in futures:
        future.wait()
        state = future.state
        if state.is_completed():
            results.append(future.result())
        else:
            try:
                state.result()
            except Exception as exc:  # noqa: BLE001 - reported, and the flow fails at the end (see raise_if)
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                errors.append(f"task ended {state.type.value}")
    return results, errors


def raise_if(errors: Sequence[str], stage: str) -> None:
    if errors:
        raise StageFailed(f"{stage}: {len(errors)} task(s) failed: " + " | ".join(e[:300] for e in errors))


def table(key: str, exchange: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(
        rows or [{"note": "nothing to report"}], key=f"{key}-{slug(exchange)}", description=description
    )


def markdown(key: str, exchange: str, text: str, description: str) -> None:
    create_markdown_artifact(text, key=f"{key}-{slug(exchange)}", description=description)
