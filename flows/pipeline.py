"""`pipeline`: the main job. Ingest, backfill gaps (CRITICAL by default), evaluate signals, paper-execute."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.backfill import backfill
from flows.common import StageFailed, markdown, resolve
from flows.execute import execute
from flows.ingest import ingest
from flows.signals import evaluate_signals


@flow(name="pipeline")
def pipeline(
    exchange: str | None = None,
    symbols: list[str] | None = None,
    block: str | None = None,
    backfill_priorities: list[str] | None = None,
    days: int | None = None,
    equity: float = 10_000.0,
) -> dict[str, Any]:
    """One pass of the whole system; every stage runs even when an earlier one had failed symbols, and the
    pipeline fails at the end if any stage did."""
    scope = resolve(exchange, symbols, block=block)
    priorities = backfill_priorities if backfill_priorities is not None else ["CRITICAL"]
    failures: list[str] = []
    summary: dict[str, Any] = {}

    def stage(name: str, fn: Any, **kwargs: Any) -> Any:
        try:
            result = fn(**kwargs)
        except StageFailed as exc:
            failures.append(f"{name}: {exc}")
            return None
        summary[name] = result
        return result

    common = {"exchange": scope.exchange, "symbols": scope.symbols, "block": scope.block}
    stage("ingest", ingest, **common)
    stage("backfill", backfill, **common, priorities=priorities or None, days=days)
    stage("signals", evaluate_signals, **common, equity=equity)
    stage("execute", execute, **common, equity=equity)
    markdown(
        "pipeline",
        scope.exchange,
        "## Pipeline\n\n" + ("\n".join(f"- FAILED {f[:400]}" for f in failures) or "- all stages completed") + "\n",
        "Pipeline stages.",
    )
    if failures:
        raise StageFailed("; ".join(failures))
    return summary
