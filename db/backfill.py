"""Backfill jobs: one per prioritised gap, each with a checkpoint (the next candle open still to fetch).

The checkpoint advances in the same transaction that stores a page (`advance_in`), so a run killed at any
moment loses nothing and repeats at most the page it was fetching. A new run takes IN_PROGRESS jobs (left by a
killed run) first, then PENDING ones by priority and recency. One backfill runner per exchange at a time: the
Prefect deployment carries a concurrency limit of 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from domain.gaps import Gap, Priority, subtract_ranges

_MS = "(extract(epoch FROM {0}) * 1000)::bigint"
_TS = "to_timestamp({0} / 1000.0)"
OPEN_STATUSES = ("PENDING", "IN_PROGRESS")


@dataclass(frozen=True, slots=True)
class BackfillJob:
    id: int
    exchange: str
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    priority: Priority
    status: str
    checkpoint_ms: int
    attempts: int
    max_attempts: int
    pages_done: int
    candles_stored: int
    last_error: str | None
    updated_at: datetime | None = None


_COLUMNS = f"""id, exchange, symbol, timeframe, {_MS.format("range_start")}, {_MS.format("range_end")},
    priority_rank, status, {_MS.format("checkpoint")}, attempts, max_attempts, pages_done, candles_stored,
    last_error, updated_at"""


def _job(row: Sequence[object]) -> BackfillJob:
    values = list(row)
    values[6] = Priority(int(values[6]))  # type: ignore[call-overload]
    return BackfillJob(*values)  # type: ignore[arg-type]


def create_jobs(
    conn: Connection, *, exchange: str, timeframe: str, gaps: Sequence[Gap], max_attempts: int = 5
) -> list[BackfillJob]:
    """Create jobs for `gaps`, leaving out whatever open jobs already cover. Returns the new jobs."""
    symbols = sorted({g.symbol for g in gaps})
    if not symbols:
        return []
    covered: dict[str, list[tuple[int, int]]] = {}
    for symbol, lo, hi in conn.execute(
        text(
            f"SELECT symbol, {_MS.format('checkpoint')}, {_MS.format('range_end')} FROM backfill_jobs"
            " WHERE exchange = :exchange AND timeframe = :timeframe AND status IN ('PENDING', 'IN_PROGRESS')"
            " AND symbol = ANY(CAST(:symbols AS text[]))"
        ),
        {"exchange": exchange, "timeframe": timeframe, "symbols": symbols},
    ):
        covered.setdefault(symbol, []).append((int(lo), int(hi)))
    rows = [
        {"symbol": g.symbol, "start": lo, "end": hi, "priority": g.priority.name, "rank": int(g.priority)}
        for g in gaps
        for lo, hi in subtract_ranges(g.start_ms, g.end_ms, covered.get(g.symbol, []))
    ]
    created: list[BackfillJob] = []
    for row in rows:
        result = conn.execute(
            text(
                "INSERT INTO backfill_jobs (exchange, symbol, timeframe, range_start, range_end, priority,"
                " priority_rank, checkpoint, max_attempts)"
                f" VALUES (:exchange, :symbol, :timeframe, {_TS.format(':start')}, {_TS.format(':end')},"
                f" :priority, :rank, {_TS.format(':start')}, :max_attempts)"
                " ON CONFLICT (exchange, symbol, timeframe, range_start, range_end) DO NOTHING"
                f" RETURNING {_COLUMNS}"
            ),
            {"exchange": exchange, "timeframe": timeframe, "max_attempts": max_attempts, **row},
        ).one_or_none()
        if result is not None:
            created.append(_job(result))
    return created


def claim_jobs(
    conn: Connection,
    *,
    exchange: str,
    timeframe: str | None = None,
    symbols: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
    limit: int = 10_000,
) -> list[BackfillJob]:
    """Open jobs in the order they should run (IN_PROGRESS first, then priority, then newest), marked
    IN_PROGRESS."""
    picked = (
        conn.execute(
            text(
                """
            SELECT id FROM backfill_jobs
            WHERE exchange = :exchange AND status IN ('PENDING', 'IN_PROGRESS')
              AND (CAST(:timeframe AS text) IS NULL OR timeframe = :timeframe)
              AND (CAST(:symbols AS text[]) IS NULL OR symbol = ANY(CAST(:symbols AS text[])))
              AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))
            ORDER BY (status = 'IN_PROGRESS') DESC, priority_rank, range_end DESC, id
            LIMIT :limit FOR UPDATE SKIP LOCKED
            """
            ),
            {
                "exchange": exchange,
                "timeframe": timeframe,
                "symbols": list(symbols) if symbols else None,
                "ids": list(ids) if ids is not None else None,
                "limit": limit,
            },
        )
        .scalars()
        .all()
    )
    rows = conn.execute(
        text(
            "UPDATE backfill_jobs SET status = 'IN_PROGRESS', started_at = coalesce(started_at, now()),"
            f" updated_at = now() WHERE id = ANY(CAST(:ids AS bigint[])) RETURNING {_COLUMNS}"
        ),
        {"ids": list(picked)},
    ).all()
    position = {job_id: i for i, job_id in enumerate(picked)}
    return sorted((_job(r) for r in rows), key=lambda j: position[j.id])


def advance_in(conn: Connection, job: BackfillJob, *, checkpoint_ms: int, candles_stored: int) -> BackfillJob:
    """Move the checkpoint inside the caller's transaction (the one that stored the page)."""
    done = checkpoint_ms >= job.end_ms
    row = conn.execute(
        text(
            f"UPDATE backfill_jobs SET checkpoint = {_TS.format(':checkpoint')}, pages_done = pages_done + 1,"
            " candles_stored = candles_stored + :stored, updated_at = now(), last_error = NULL,"
            " status = CASE WHEN :done THEN 'DONE' ELSE status END,"
            " finished_at = CASE WHEN :done THEN now() ELSE finished_at END"
            f" WHERE id = :id RETURNING {_COLUMNS}"
        ),
        {"checkpoint": min(checkpoint_ms, job.end_ms), "stored": candles_stored, "done": done, "id": job.id},
    ).one()
    return _job(row)


def record_failure(conn: Connection, job: BackfillJob, error: str, *, permanent: bool = False) -> BackfillJob:
    """Count a failed attempt; the job becomes FAILED (and stays visible) when retries are exhausted or the
    error is permanent, else goes back to PENDING."""
    row = conn.execute(
        text(
            "UPDATE backfill_jobs SET attempts = attempts + 1, last_error = :error, updated_at = now(),"
            " status = CASE WHEN :permanent OR attempts + 1 >= max_attempts THEN 'FAILED' ELSE 'PENDING' END,"
            " finished_at = CASE WHEN :permanent OR attempts + 1 >= max_attempts THEN now() ELSE NULL END"
            f" WHERE id = :id RETURNING {_COLUMNS}"
        ),
        {"error": error[:2000], "permanent": permanent, "id": job.id},
    ).one()
    return _job(row)


def list_jobs(
    conn: Connection, *, exchange: str | None = None, statuses: Sequence[str] | None = None, limit: int = 200
) -> list[BackfillJob]:
    rows = conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM backfill_jobs"
            " WHERE (CAST(:exchange AS text) IS NULL OR exchange = :exchange)"
            " AND (CAST(:statuses AS text[]) IS NULL OR status = ANY(CAST(:statuses AS text[])))"
            " ORDER BY (status = 'IN_PROGRESS') DESC, (status = 'PENDING') DESC, priority_rank, range_end DESC, id"
            " LIMIT :limit"
        ),
        {"exchange": exchange, "statuses": list(statuses) if statuses else None, "limit": limit},
    ).all()
    return [_job(r) for r in rows]


def job_counts(conn: Connection, *, exchange: str | None = None) -> dict[str, int]:
    rows = conn.execute(
        text(
            "SELECT status, count(*) FROM backfill_jobs WHERE (CAST(:exchange AS text) IS NULL OR exchange = :exchange)"
            " GROUP BY status"
        ),
        {"exchange": exchange},
    ).all()
    return {str(status): int(n) for status, n in rows}
