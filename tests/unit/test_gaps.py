from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.gaps import Gap, Priority, PriorityPolicy, missing_from_sorted, pages, prioritise, subtract_ranges

M = 60_000
NOW = 1_000_000 * M


def test_subtract_ranges() -> None:
    assert subtract_ranges(0, 100, []) == [(0, 100)]
    assert subtract_ranges(0, 100, [(10, 20), (15, 30), (90, 200)]) == [(0, 10), (30, 90)]
    assert subtract_ranges(0, 100, [(-5, 500)]) == []


@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50)), max_size=8),
    st.integers(0, 100),
    st.integers(1, 150),
)
def test_subtract_ranges_matches_set_arithmetic(holes, start, length) -> None:
    end = start + length
    ranges = [(lo, lo + n) for lo, n in holes]
    got = subtract_ranges(start, end, ranges)
    expected = set(range(start, end)) - {x for lo, hi in ranges for x in range(lo, hi)}
    assert {x for lo, hi in got for x in range(lo, hi)} == expected
    assert all(a < b for a, b in got)
    assert all(got[i][1] < got[i + 1][0] for i in range(len(got) - 1))


def test_priorities_split_a_gap_at_the_boundaries() -> None:
    policy = PriorityPolicy(signal_timeframe="15m", signal_candles=4)  # CRITICAL: last hour
    gap = Gap("A/B", NOW - 10 * 24 * 60 * M, NOW)
    out = prioritise([gap], now_ms=NOW, timeframe="1m", policy=policy)
    assert [g.priority for g in out] == [Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW]
    assert out[0].start_ms == NOW - 60 * M
    assert out[1].start_ms == NOW - 24 * 60 * M
    assert out[2].start_ms == NOW - 7 * 24 * 60 * M
    assert sum(g.end_ms - g.start_ms for g in out) == gap.end_ms - gap.start_ms


def test_order_is_priority_then_recency() -> None:
    policy = PriorityPolicy(signal_timeframe="1m", signal_candles=10)
    gaps = [
        Gap("A", NOW - 30 * 24 * 60 * M, NOW - 29 * 24 * 60 * M),
        Gap("B", NOW - 5 * M, NOW - 3 * M),
        Gap("C", NOW - 20 * 24 * 60 * M, NOW - 19 * 24 * 60 * M),
        Gap("D", NOW - 3 * 60 * M, NOW - 2 * 60 * M),
    ]
    out = prioritise(gaps, now_ms=NOW, timeframe="1m", policy=policy)
    assert [g.symbol for g in out] == ["B", "D", "C", "A"]


def test_pages_cover_the_range_exactly() -> None:
    got = list(pages(0, 2500 * M, timeframe="1m", page_candles=1000))
    assert got == [(0, 1000 * M), (1000 * M, 2000 * M), (2000 * M, 2500 * M)]


def test_reference_missing_ranges() -> None:
    present = [0, M, 2 * M, 5 * M, 6 * M]
    assert missing_from_sorted(present, start_ms=0, end_ms=10 * M, timeframe="1m") == [(3 * M, 5 * M), (7 * M, 10 * M)]
