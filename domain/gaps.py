"""Gap arithmetic: ranges of missing candles, their priority, and exchange-sized pages.

A range is half-open [start_ms, end_ms) over candle open times on a timeframe grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

from domain.errors import InvalidDataError
from domain.timeframes import DAY_MS, timeframe_ms


class Priority(IntEnum):
    """Backfill priority; lower value = fetched first."""

    CRITICAL = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3


@dataclass(frozen=True, slots=True)
class Gap:
    symbol: str
    start_ms: int
    end_ms: int
    priority: Priority = Priority.LOW

    def candles(self, timeframe: str) -> int:
        return (self.end_ms - self.start_ms) // timeframe_ms(timeframe)


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityPolicy:
    """CRITICAL inside the signal window (the last `signal_candles` of `signal_timeframe`), then by age."""

    signal_timeframe: str = "15m"
    signal_candles: int = 250
    high_within_ms: int = DAY_MS
    medium_within_ms: int = 7 * DAY_MS

    def boundaries(self, now_ms: int) -> list[tuple[int, Priority]]:
        """(cut-off, priority of everything at or after it), newest first."""
        critical_from = now_ms - self.signal_candles * timeframe_ms(self.signal_timeframe)
        return [
            (critical_from, Priority.CRITICAL),
            (now_ms - self.high_within_ms, Priority.HIGH),
            (now_ms - self.medium_within_ms, Priority.MEDIUM),
        ]


def subtract_ranges(start_ms: int, end_ms: int, holes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) minus the union of `holes`, as sorted disjoint ranges."""
    out: list[tuple[int, int]] = []
    cursor = start_ms
    for lo, hi in sorted(holes):
        if hi <= cursor or lo >= end_ms:
            continue
        if lo > cursor:
            out.append((cursor, min(lo, end_ms)))
        cursor = max(cursor, hi)
        if cursor >= end_ms:
            break
    if cursor < end_ms:
        out.append((cursor, end_ms))
    return out


def prioritise(gaps: Iterable[Gap], *, now_ms: int, timeframe: str, policy: PriorityPolicy) -> list[Gap]:
    """Split gaps at the priority boundaries (aligned to the grid) and order them: priority, then newest first."""
    step = timeframe_ms(timeframe)
    cuts = [(cut - cut % step, prio) for cut, prio in policy.boundaries(now_ms)]
    out: list[Gap] = []
    for gap in gaps:
        end = gap.end_ms
        for cut, prio in cuts:
            if end <= gap.start_ms:
                break
            if end > cut:
                out.append(replace(gap, start_ms=max(cut, gap.start_ms), end_ms=end, priority=prio))
                end = max(cut, gap.start_ms)
        if end > gap.start_ms:
            out.append(replace(gap, end_ms=end, priority=Priority.LOW))
    return sorted(out, key=lambda g: (g.priority, -g.end_ms, g.symbol))


def pages(start_ms: int, end_ms: int, *, timeframe: str, page_candles: int) -> Iterator[tuple[int, int]]:
    """Split [start, end) into pages of at most `page_candles` candles."""
    if page_candles <= 0:
        raise InvalidDataError("page_candles must be positive")
    span = page_candles * timeframe_ms(timeframe)
    cursor = start_ms
    while cursor < end_ms:
        yield cursor, min(cursor + span, end_ms)
        cursor += span


def missing_from_sorted(ts_ms: Sequence[int], *, start_ms: int, end_ms: int, timeframe: str) -> list[tuple[int, int]]:
    """Missing ranges of [start, end) given sorted present open times: a reference used by tests and benches."""
    step = timeframe_ms(timeframe)
    out: list[tuple[int, int]] = []
    expected = start_ms
    for ts in ts_ms:
        if ts < start_ms or ts >= end_ms:
            continue
        if ts > expected:
            out.append((expected, ts))
        expected = max(expected, ts + step)
    if expected < end_ms:
        out.append((expected, end_ms))
    return out
