"""Retry policy shared by every task: only TransientError is retried, with exponential backoff and jitter."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prefect.tasks import exponential_backoff

from domain.errors import PermanentError, StrategyEngineError, TransientError

RETRIES = 3
# 2, 4, 8 s by default; SE_TASK_RETRY_BACKOFF_S scales it (tests use a few ms).
RETRY_DELAYS = exponential_backoff(backoff_factor=float(os.environ.get("SE_TASK_RETRY_BACKOFF_S", "2")))
RETRY_JITTER = 0.5


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn`: retry when the task failed with a TransientError (network, rate limit, database
    unavailable); never for permanent errors (bad symbol, bad credentials, invalid data) or bugs."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final; Prefect records it.
        return False
    return False


def slug(value: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only (BTC/USDT -> btc-usdt)."""
    out = "".join(ch if ch.isalnum() else "-" for ch in value.lower())
    return "-".join(part for part in out.split("-") if part)


class SymbolsFailed(StrategyEngineError):
    """Some symbols of a batch failed (the others' results were stored)."""


class TransientSymbolsFailed(SymbolsFailed, TransientError):
    pass


class PermanentSymbolsFailed(SymbolsFailed, PermanentError):
    pass


def raise_for_failures(stage: str, failures: Sequence[tuple[str, str, bool]]) -> None:
    """After a batch: fail its task when any symbol failed (transient only -> retried)."""
    if not failures:
        return
    detail = "; ".join(f"{symbol}: {error}" for symbol, error, _ in failures)
    if all(transient for _, _, transient in failures):
        raise TransientSymbolsFailed(f"{stage}: {len(failures)} symbol(s) failed temporarily: {detail}")
    raise PermanentSymbolsFailed(f"{stage}: {len(failures)} symbol(s) failed: {detail}")
