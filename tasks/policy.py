"""Retry policy shared by every task: only TransientError is retried, with exponential backoff and jitter."""

from __future__ import annotations

import os
from typing import Any

from prefect.tasks import exponential_backoff

from domain.errors import TransientError

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
