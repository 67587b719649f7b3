"""Priority backfill: find gaps, turn them into checkpointed jobs, fetch pages inside the exchange's budget.

Plain async functions (the CLI calls them directly); `flows/backfill.py` wraps them as Prefect tasks.

Per page: fetch (retrying transient errors with backoff, honouring Retry-After; an empty answer is asked
twice before it is believed), validate, then ONE transaction stores the candles, quarantines the rejects,
records a confirmed-empty range and moves the job's checkpoint. A kill at any moment therefore loses nothing
and repeats at most one page. Symbols run concurrently; each symbol's jobs run in priority order; a failing
symbol never stops the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from sqlalchemy import Engine, text

from adapters.exchange import OhlcvPage
from adapters.rate_limit import retry_transient
from db.backfill import BackfillJob, advance_in, claim_jobs, create_jobs, record_failure
from db.gaps import find_gaps, known_first_candles, record_empty_range, record_first_candle
from db.ingest import BatchReport, store_batch
from domain.candles import validate_frame
from domain.errors import PermanentError, SuspiciousEmptyPage, TransientError
from domain.gaps import Priority, PriorityPolicy, missing_from_sorted, prioritise
from domain.timeframes import timeframe_ms

log = logging.getLogger(__name__)
T = TypeVar("T")


class CandleSource(Protocol):
    """What the backfill needs from an exchange (adapters.exchange.ExchangeClient, adapters.replay)."""

    exchange_id: str

    @property
    def max_ohlcv_page(self) -> int: ...

    async def first_candle_ms(self, symbol: str, timeframe: str) -> int | None: ...

    async def fetch_ohlcv_page(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        limit: int | None = None,
        *,
        end_ms: int | None = None,
        confirm_empty: bool = False,
        first_candle_ms: int | None = None,
    ) -> OhlcvPage: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillOptions:
    page_candles: int | None = None  # default: the exchange's maximum page
    concurrency: int = 4  # symbols fetched at once (the shared weight limiter paces them)
    fetch_attempts: int = 5  # per page, for transient errors
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_job_attempts: int = 5


@dataclass(slots=True)
class SymbolProgress:
    symbol: str
    jobs: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    candles_expected: int = 0
    pages: int = 0
    inserted: int = 0
    revised: int = 0
    duplicates: int = 0
    quarantined: int = 0
    empty_candles: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BackfillReport:
    exchange: str
    timeframe: str
    gaps_found: int = 0
    candles_missing: int = 0
    missing_by_priority: dict[str, int] = field(default_factory=dict)
    jobs_created: int = 0
    jobs_resumed: int = 0
    symbols: dict[str, SymbolProgress] = field(default_factory=dict)

    def progress(self, symbol: str) -> SymbolProgress:
        return self.symbols.setdefault(symbol, SymbolProgress(symbol))


ProgressHook = Callable[[str, SymbolProgress], None]


def _retry(fn: Callable[[], Awaitable[T]], options: BackfillOptions) -> Awaitable[T]:
    """Transient errors retried with backoff and jitter, Retry-After honoured (adapters.rate_limit)."""
    return retry_transient(
        fn, attempts=options.fetch_attempts, base_delay_s=options.base_delay_s, max_delay_s=options.max_delay_s
    )


async def fetch_with_retry(
    source: CandleSource,
    job: BackfillJob,
    since_ms: int,
    end_ms: int,
    first_candle: int | None,
    options: BackfillOptions,
    *,
    answered_once: bool = False,
) -> OhlcvPage:
    """One page, retrying transient errors. An empty answer (SuspiciousEmptyPage) is asked again at once:
    the second empty answer is believed and comes back `confirmed_empty`. `answered_once`: the exchange
    already left this range out of a page it returned, so one empty answer now is the second."""
    limit = options.page_candles or source.max_ohlcv_page

    async def once() -> OhlcvPage:
        try:
            return await source.fetch_ohlcv_page(
                job.symbol,
                job.timeframe,
                since_ms,
                limit,
                end_ms=end_ms,
                first_candle_ms=first_candle,
                confirm_empty=answered_once,
            )
        except SuspiciousEmptyPage:
            return await source.fetch_ohlcv_page(
                job.symbol,
                job.timeframe,
                since_ms,
                limit,
                end_ms=end_ms,
                confirm_empty=True,
                first_candle_ms=first_candle,
            )

    return await _retry(once, options)


def store_page(
    engine: Engine, job: BackfillJob, page: OhlcvPage, *, now_ms: int, source: str, answered_once: bool = False
) -> tuple[BackfillJob, BatchReport]:
    """Validate a page and, in ONE transaction, store it, record what the exchange confirmed has no usable
    candle, and move the checkpoint to the page's end.

    Confirmed: an empty page asked twice, or, when `answered_once` (the exchange already left these candles
    out of a page it returned), whatever this second answer still lacks, because it had no trade
    (`no_candles`) or sent only broken rows (`quarantined`, kept in candle_quarantine): refetching either
    forever would only quarantine the same rows again.
    """
    result = validate_frame(page.frame, timeframe=job.timeframe, now_ms=now_ms)
    with engine.begin() as conn:
        report = store_batch(
            conn, result, exchange=job.exchange, symbol=job.symbol, timeframe=job.timeframe, source=source
        )
        confirmed: list[tuple[int, int]] = []
        if page.confirmed_empty:
            confirmed = [(page.start_ms, page.end_ms)]
        elif answered_once:
            present = sorted(result.accepted["ts"].to_list())
            confirmed = missing_from_sorted(
                present, start_ms=page.start_ms, end_ms=page.end_ms, timeframe=job.timeframe
            )
        broken = [t for t in result.rejected["ts"].to_list() if t is not None]
        for start, end in confirmed:
            record_empty_range(
                conn,
                exchange=job.exchange,
                symbol=job.symbol,
                timeframe=job.timeframe,
                start_ms=start,
                end_ms=end,
                reason="quarantined" if any(start <= t < end for t in broken) else "no_candles",
            )
        job = advance_in(conn, job, checkpoint_ms=page.end_ms, candles_stored=report.inserted + report.revised)
    return job, report


async def run_job(
    engine: Engine,
    source: CandleSource,
    job: BackfillJob,
    *,
    now_ms: int,
    first_candle: int | None,
    options: BackfillOptions,
    progress: SymbolProgress,
    on_page: ProgressHook | None = None,
    answered_once: bool = False,
) -> BackfillJob:
    """Fetch a job's pages from its checkpoint to its end. Failures are recorded on the job, never raised."""
    step = timeframe_ms(job.timeframe)
    limit = options.page_candles or source.max_ohlcv_page
    while job.checkpoint_ms < job.end_ms:
        since = job.checkpoint_ms
        end = min(job.end_ms, since + limit * step)
        try:
            page = await fetch_with_retry(source, job, since, end, first_candle, options, answered_once=answered_once)
            job, report = await asyncio.to_thread(
                store_page,
                engine,
                job,
                page,
                now_ms=now_ms,
                source=f"{source.exchange_id}:backfill",
                answered_once=answered_once,
            )
        except (TransientError, PermanentError) as exc:
            permanent = isinstance(exc, PermanentError)
            job = await asyncio.to_thread(_record_failure, engine, job, f"{type(exc).__name__}: {exc}", permanent)
            progress.errors.append(f"{job.symbol} job {job.id}: {exc}")
            log.warning("backfill job %s (%s) failed: %s", job.id, job.symbol, exc)
            if job.status == "FAILED":
                progress.jobs_failed += 1
            return job
        progress.pages += 1
        progress.inserted += report.inserted
        progress.revised += report.revised
        progress.duplicates += report.duplicates
        progress.quarantined += report.quarantined
        if page.confirmed_empty:
            progress.empty_candles += (page.end_ms - page.start_ms) // step
        if on_page is not None:
            on_page(job.symbol, progress)
    progress.jobs_done += 1
    return job


def _record_failure(engine: Engine, job: BackfillJob, error: str, permanent: bool) -> BackfillJob:
    with engine.begin() as conn:
        return record_failure(conn, job, error, permanent=permanent)


async def _ensure_first_candles(
    engine: Engine,
    source: CandleSource,
    exchange: str,
    symbols: Sequence[str],
    timeframe: str,
    options: BackfillOptions,
) -> dict[str, int | None]:
    """Where each market's history begins: looked up once per market and stored."""
    with engine.connect() as conn:
        known = known_first_candles(conn, exchange=exchange, symbols=symbols, timeframe=timeframe)
    for symbol in symbols:
        if symbol in known:
            continue
        try:
            first = await _retry(functools.partial(source.first_candle_ms, symbol, timeframe), options)
        except TransientError as exc:
            log.warning("%s: first candle unknown for now (%s)", symbol, exc)
            continue
        except PermanentError as exc:
            log.warning("%s: %s", symbol, exc)
            continue
        with engine.begin() as conn:
            record_first_candle(conn, exchange=exchange, symbol=symbol, timeframe=timeframe, first_candle_ms=first)
        known[symbol] = first
    return known


async def backfill(
    engine: Engine,
    source: CandleSource,
    *,
    symbols: Sequence[str],
    timeframe: str,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    policy: PriorityPolicy,
    priorities: Sequence[Priority] | None = None,
    options: BackfillOptions | None = None,
    on_page: ProgressHook | None = None,
) -> BackfillReport:
    """Resume open jobs, then find gaps of [start_ms, end_ms), create jobs by priority and run them all."""
    options = options or BackfillOptions()
    exchange = source.exchange_id
    report = BackfillReport(exchange=exchange, timeframe=timeframe)
    firsts = await _ensure_first_candles(engine, source, exchange, symbols, timeframe, options)
    with engine.begin() as conn:
        scan = find_gaps(
            conn, exchange=exchange, symbols=symbols, timeframe=timeframe, start_ms=start_ms, end_ms=end_ms
        )
        gaps = prioritise(scan.gaps, now_ms=now_ms, timeframe=timeframe, policy=policy)
        report.gaps_found = len(gaps)
        for gap in gaps:
            report.candles_missing += gap.candles(timeframe)
            name = gap.priority.name
            report.missing_by_priority[name] = report.missing_by_priority.get(name, 0) + gap.candles(timeframe)
        wanted = [g for g in gaps if priorities is None or g.priority in priorities]
        created = create_jobs(
            conn, exchange=exchange, timeframe=timeframe, gaps=wanted, max_attempts=options.max_job_attempts
        )
        report.jobs_created = len(created)
        # Jobs a killed or failed run left open come first (claim order), then the new ones by priority.
        jobs = claim_jobs(conn, exchange=exchange, timeframe=timeframe, symbols=symbols)
    created_ids = {j.id for j in created}
    report.jobs_resumed = sum(1 for j in jobs if j.id not in created_ids)
    done = await _run_jobs(engine, source, jobs, report, now_ms, firsts, options, on_page, answered_once=False)

    # Candles missing inside pages the exchange just returned: ask once more for exactly those ranges; a second
    # empty answer confirms them (exchanges omit candles without trades), so the next scan skips them.
    answered: dict[str, list[tuple[int, int]]] = {}
    for job in done:
        answered.setdefault(job.symbol, []).append((job.start_ms, job.end_ms))
    if answered:
        with engine.begin() as conn:
            rescan = find_gaps(
                conn,
                exchange=exchange,
                symbols=list(answered),
                timeframe=timeframe,
                start_ms=start_ms,
                end_ms=end_ms,
            )
            holes = [
                g for g in rescan.gaps if any(lo <= g.start_ms and g.end_ms <= hi for lo, hi in answered[g.symbol])
            ]
            hole_jobs = create_jobs(
                conn,
                exchange=exchange,
                timeframe=timeframe,
                max_attempts=options.max_job_attempts,
                gaps=prioritise(holes, now_ms=now_ms, timeframe=timeframe, policy=policy),
            )
            hole_jobs = claim_jobs(conn, exchange=exchange, ids=[j.id for j in hole_jobs])
        await _run_jobs(engine, source, hole_jobs, report, now_ms, firsts, options, on_page, answered_once=True)
    return report


async def _run_jobs(
    engine: Engine,
    source: CandleSource,
    jobs: Sequence[BackfillJob],
    report: BackfillReport,
    now_ms: int,
    firsts: dict[str, int | None],
    options: BackfillOptions,
    on_page: ProgressHook | None,
    *,
    answered_once: bool,
) -> list[BackfillJob]:
    """Run jobs in the given order (claim order: resumed first, then priority, newest first) with
    `concurrency` workers taking the next job as they free up, so every CRITICAL page is fetched before any
    older one, whatever the symbol. Returns the jobs that finished."""
    for job in jobs:
        progress = report.progress(job.symbol)
        progress.jobs += 1
        progress.candles_expected += (job.end_ms - job.checkpoint_ms) // timeframe_ms(job.timeframe)
    queue: asyncio.Queue[BackfillJob] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    finished: list[BackfillJob] = []

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            result = await run_job(
                engine,
                source,
                job,
                now_ms=now_ms,
                first_candle=firsts.get(job.symbol),
                options=options,
                progress=report.progress(job.symbol),
                on_page=on_page,
                answered_once=answered_once,
            )
            if result.status == "DONE":
                finished.append(result)

    workers = min(max(1, options.concurrency), max(1, len(jobs)))
    outcomes = await asyncio.gather(*(worker() for _ in range(workers)), return_exceptions=True)
    unexpected = [o for o in outcomes if isinstance(o, BaseException)]
    if unexpected:
        # Not an exchange error (those are recorded on their jobs): a bug or the database. Jobs left open by
        # it resume next run. Fail loudly rather than report success.
        raise unexpected[0]
    return finished


@dataclass(frozen=True, slots=True)
class Continuity:
    symbol: str
    expected: int
    stored: int
    confirmed_empty: int
    coverage_pct: float
    remaining_gaps: int
    remaining_missing: int
    quarantined: int


def continuity_report(
    engine: Engine, *, exchange: str, symbols: Sequence[str], timeframe: str, start_ms: int, end_ms: int
) -> list[Continuity]:
    """Per symbol: candles expected since listing (or start), stored, confirmed empty, coverage %, what is
    still missing and how many rows were quarantined."""
    step = timeframe_ms(timeframe)
    with engine.begin() as conn:
        scan = find_gaps(
            conn,
            exchange=exchange,
            symbols=symbols,
            timeframe=timeframe,
            start_ms=start_ms,
            end_ms=end_ms,
            use_watermark=False,
            update_watermark=False,
        )
        rows = conn.execute(
            text(
                """
                SELECT u.symbol,
                  (SELECT count(*) FROM candles c WHERE c.exchange = :ex AND c.symbol = u.symbol
                     AND c.timeframe = :tf AND c.ts >= to_timestamp(:s / 1000.0) AND c.ts < to_timestamp(:e / 1000.0)),
                  (SELECT coalesce(sum(extract(epoch FROM least(r.range_end, to_timestamp(:e / 1000.0))
                       - greatest(r.range_start, to_timestamp(:s / 1000.0))) * 1000), 0)::bigint
                     FROM empty_ranges r WHERE r.exchange = :ex AND r.symbol = u.symbol AND r.timeframe = :tf
                     AND r.range_end > to_timestamp(:s / 1000.0) AND r.range_start < to_timestamp(:e / 1000.0)),
                  (SELECT count(*) FROM candle_quarantine q WHERE q.exchange = :ex AND q.symbol = u.symbol
                     AND q.timeframe = :tf),
                  (SELECT (extract(epoch FROM m.first_candle_ts) * 1000)::bigint FROM markets m
                     WHERE m.exchange = :ex AND m.symbol = u.symbol AND m.timeframe = :tf)
                FROM unnest(CAST(:symbols AS text[])) AS u(symbol)
                """
            ),
            {"ex": exchange, "tf": timeframe, "s": start_ms, "e": end_ms, "symbols": list(symbols)},
        ).all()
    gaps_by_symbol: dict[str, list[int]] = {}
    for gap in scan.gaps:
        gaps_by_symbol.setdefault(gap.symbol, []).append(gap.candles(timeframe))
    out = []
    for symbol, stored, empty_ms, quarantined, first in rows:
        begin = max(start_ms, first) if first is not None else start_ms
        expected = max(0, (end_ms - begin) // step)
        empty = int(empty_ms) // step
        coverage = 100.0 * min(expected, int(stored) + empty) / expected if expected else 100.0
        missing = gaps_by_symbol.get(symbol, [])
        out.append(
            Continuity(
                symbol, expected, int(stored), empty, round(coverage, 3), len(missing), sum(missing), int(quarantined)
            )
        )
    return out
