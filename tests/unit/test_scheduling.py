from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidDataError
from domain.scheduling import (
    BookLimits,
    GateCode,
    SchedulerConfig,
    SmartScheduler,
    check_order_book,
)

T0 = 1_700_000_000_000
MIN = 60_000


def codes(decision_or_check: object) -> set[GateCode]:
    return {r.code for r in decision_or_check.reasons}  # type: ignore[attr-defined]


# --- trade gap -------------------------------------------------------------------------------------------


def test_five_minutes_between_trades_per_symbol() -> None:
    s = SmartScheduler()
    assert s.gate("BTC/USDT", T0).allowed
    s.record_trade("BTC/USDT", T0)

    early = s.gate("BTC/USDT", T0 + 5 * MIN - 1)
    assert not early.allowed
    assert codes(early) == {GateCode.TRADE_GAP}
    assert early.retry_at_ms == T0 + 5 * MIN
    assert s.gate("BTC/USDT", T0 + 5 * MIN).allowed
    assert s.gate("ETH/USDT", T0 + 1).allowed  # the gap is per symbol


def test_trade_gap_is_configurable() -> None:
    s = SmartScheduler(SchedulerConfig(min_trade_gap_ms=15 * MIN))
    s.record_trade("X", T0)
    assert not s.gate("X", T0 + 10 * MIN).allowed
    assert s.gate("X", T0 + 15 * MIN).allowed


def test_gate_does_not_change_state() -> None:
    s = SmartScheduler()
    before = s.to_dict()
    s.gate("NEW", T0)
    assert s.to_dict() == before


# --- consecutive failures --------------------------------------------------------------------------------


def test_five_consecutive_failures_start_a_cooloff_that_is_reported() -> None:
    s = SmartScheduler(SchedulerConfig(cooloff_ms=30 * MIN))
    for i in range(4):
        outcome = s.record_failure("SOL/USDT", T0 + i, "timeout")
        assert not outcome.entered_cooloff
        assert s.gate("SOL/USDT", T0 + i).allowed
    fifth = s.record_failure("SOL/USDT", T0 + 4, "rejected")
    assert fifth.entered_cooloff
    assert fifth.consecutive_failures == 5
    assert fifth.cooloff_until_ms == T0 + 4 + 30 * MIN

    held = s.gate("SOL/USDT", T0 + 10 * MIN)
    assert not held.allowed
    assert codes(held) == {GateCode.COOLING_OFF}
    assert "rejected" in held.reasons[0].detail
    assert held.retry_at_ms == T0 + 4 + 30 * MIN
    (report,) = s.cooling_off(T0 + 10 * MIN)
    assert (report.symbol, report.consecutive_failures, report.last_failure) == ("SOL/USDT", 5, "rejected")

    after = T0 + 4 + 30 * MIN
    assert s.gate("SOL/USDT", after).allowed
    assert s.cooling_off(after) == ()


def test_after_cooloff_one_more_failure_reenters_and_a_success_resets() -> None:
    s = SmartScheduler(SchedulerConfig(cooloff_ms=MIN))
    for i in range(5):
        s.record_failure("A", T0 + i, "x")
    later = T0 + 2 * MIN
    assert s.gate("A", later).allowed
    assert s.record_failure("A", later, "again").entered_cooloff  # half-open: one failure is enough
    assert not s.gate("A", later + 1).allowed

    s.record_success("A")
    assert s.gate("A", later + 1).allowed
    for i in range(4):
        assert not s.record_failure("A", later + 2 + i, "y").entered_cooloff


def test_a_success_between_failures_breaks_the_run() -> None:
    s = SmartScheduler()
    for i in range(4):
        s.record_failure("A", T0 + i, "x")
    s.record_success("A")
    for i in range(4):
        s.record_failure("A", T0 + 10 + i, "x")
    assert s.gate("A", T0 + 20).allowed


def test_failure_threshold_is_configurable() -> None:
    s = SmartScheduler(SchedulerConfig(max_consecutive_failures=2))
    s.record_failure("A", T0, "x")
    assert s.record_failure("A", T0, "x").entered_cooloff


def test_both_gates_are_reported_together() -> None:
    s = SmartScheduler()
    s.record_trade("A", T0)
    for _ in range(5):
        s.record_failure("A", T0, "x")
    decision = s.gate("A", T0 + 1)
    assert codes(decision) == {GateCode.TRADE_GAP, GateCode.COOLING_OFF}
    assert decision.retry_at_ms == T0 + SchedulerConfig().cooloff_ms


# --- latency ---------------------------------------------------------------------------------------------


def test_latency_percentiles_over_a_bounded_window() -> None:
    s = SmartScheduler(SchedulerConfig(latency_window=10))
    for ms in range(1, 21):
        s.record_latency("A", float(ms), venue="binance")
    stats = s.latency("A")
    assert stats is not None
    assert stats.samples == 10
    assert stats.p50_ms == pytest.approx(15.5)  # only 11..20 are kept
    assert stats.p95_ms == pytest.approx(19.55)
    assert s.latency("binance", kind="venue") is not None
    assert s.latency("unknown") is None


def test_slow_symbols_and_venues_are_flagged_and_optionally_gated() -> None:
    cfg = SchedulerConfig(slow_latency_ms=500.0)
    s = SmartScheduler(cfg)
    for _ in range(20):
        s.record_latency("FAST", 50.0, venue="v1")
        s.record_latency("SLOW", 900.0, venue="v2")
    flagged = {(x.kind, x.key) for x in s.slow()}
    assert flagged == {("symbol", "SLOW"), ("venue", "v2")}
    # flagged, but not gated unless block_slow is set
    decision = s.gate("SLOW", T0)
    assert decision.allowed
    assert decision.slow

    blocking = SmartScheduler(SchedulerConfig(slow_latency_ms=500.0, block_slow=True))
    for _ in range(20):
        blocking.record_latency("SLOW", 900.0)
    assert codes(blocking.gate("SLOW", T0)) == {GateCode.SLOW}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_bad_latency_samples_are_refused(bad: float) -> None:
    with pytest.raises(InvalidDataError):
        SmartScheduler().record_latency("A", bad)


# --- order book ------------------------------------------------------------------------------------------

BIDS = [[99.99, 1.0], [99.9, 5.0], [98.0, 100.0]]
ASKS = [[100.01, 1.0], [100.1, 5.0], [102.0, 100.0]]


def test_book_spread_depth_and_slippage_by_walking_the_book() -> None:
    check = check_order_book(BIDS, ASKS, side="buy", amount=2.0)
    assert check.mid == pytest.approx(100.0)
    assert check.spread_bps == pytest.approx(2.0)
    assert check.depth_in_band == pytest.approx(6.0)  # 102 lies outside 50 bps of the mid
    assert check.avg_fill_price == pytest.approx((100.01 + 100.1) / 2)
    assert check.slippage_bps == pytest.approx(5.5)
    assert check.ok

    tight = check_order_book(BIDS, ASKS, side="buy", amount=2.0, limits=BookLimits(max_slippage_bps=5.0))
    assert codes(tight) == {GateCode.SLIPPAGE_TOO_HIGH}


def test_sell_orders_are_measured_on_the_bid_side() -> None:
    check = check_order_book(BIDS, ASKS, side="sell", amount=2.0)
    assert check.avg_fill_price == pytest.approx((99.99 + 99.9) / 2)
    assert check.slippage_bps == pytest.approx(5.5)  # adverse is positive for sells too


def test_wide_spread_is_gated() -> None:
    check = check_order_book([[99.0, 10.0]], [[101.0, 10.0]], side="buy", amount=1.0)
    assert check.spread_bps == pytest.approx(200.0)
    assert GateCode.SPREAD_TOO_WIDE in codes(check)


def test_thin_depth_near_the_mid_is_gated_even_when_the_fill_is_cheap() -> None:
    asks = [[100.01, 1.0], [102.0, 100.0]]
    check = check_order_book([[99.99, 50.0]], asks, side="buy", amount=1.0)
    assert check.slippage_bps == pytest.approx(1.0)
    assert codes(check) == {GateCode.DEPTH_TOO_THIN}
    deep = check_order_book([[99.99, 50.0]], asks, side="sell", amount=1.0)
    assert deep.ok  # the bid side is deep


def test_a_book_that_cannot_fill_the_order() -> None:
    check = check_order_book(BIDS, ASKS, side="buy", amount=1_000.0)
    assert check.slippage_bps == math.inf
    assert GateCode.SLIPPAGE_TOO_HIGH in codes(check)


def test_empty_and_crossed_books() -> None:
    assert codes(check_order_book([], ASKS, side="buy", amount=1.0)) == {GateCode.EMPTY_BOOK}
    crossed = check_order_book([[100.2, 1.0]], [[100.1, 1.0]], side="buy", amount=1.0)
    assert codes(crossed) == {GateCode.CROSSED_BOOK}


def test_book_reasons_flow_into_the_gate() -> None:
    check = check_order_book([[99.0, 10.0]], [[101.0, 10.0]], side="buy", amount=1.0)
    decision = SmartScheduler().gate("A", T0, book=check)
    assert not decision.allowed
    assert GateCode.SPREAD_TOO_WIDE in codes(decision)
    assert decision.retry_at_ms is None


# --- serialisation ---------------------------------------------------------------------------------------

events = st.lists(
    st.tuples(
        st.sampled_from(["trade", "fail", "ok", "lat"]),
        st.sampled_from(["A", "B", "C"]),
        st.integers(min_value=0, max_value=60 * MIN),
        st.floats(min_value=0, max_value=5_000, allow_nan=False),
    ),
    max_size=60,
)


@given(events, st.integers(min_value=0, max_value=120 * MIN))
def test_state_round_trips_through_json(evts: list[tuple[str, str, int, float]], probe: int) -> None:
    s = SmartScheduler(SchedulerConfig(cooloff_ms=10 * MIN, latency_window=7))
    for kind, sym, dt, lat in evts:
        if kind == "trade":
            s.record_trade(sym, T0 + dt)
        elif kind == "fail":
            s.record_failure(sym, T0 + dt, f"err {dt}")
        elif kind == "ok":
            s.record_success(sym)
        else:
            s.record_latency(sym, lat, venue="v")
    data = s.to_dict()
    restored = SmartScheduler.from_dict(json.loads(json.dumps(data, allow_nan=False)))
    assert restored.to_dict() == data
    assert restored.config == s.config
    for sym in ("A", "B", "C"):
        assert restored.gate(sym, T0 + probe) == s.gate(sym, T0 + probe)
    assert restored.cooling_off(T0 + probe) == s.cooling_off(T0 + probe)
    assert restored.slow() == s.slow()


def test_from_dict_refuses_unknown_versions_and_malformed_state() -> None:
    good = SmartScheduler().to_dict()
    with pytest.raises(InvalidDataError, match="version"):
        SmartScheduler.from_dict({**good, "version": 99})
    with pytest.raises(InvalidDataError, match="malformed"):
        SmartScheduler.from_dict({**good, "symbols": {"A": {"bogus": 1}}})
    with pytest.raises(InvalidDataError, match="malformed"):
        SmartScheduler.from_dict({**good, "symbols": {"A": {"consecutive_failures": "5"}}})
    with pytest.raises(InvalidDataError, match="latency"):
        SmartScheduler.from_dict({**good, "latency": {"A": [1.0, "x"]}})


def test_config_rejects_nonsense() -> None:
    with pytest.raises(InvalidDataError):
        SchedulerConfig(max_consecutive_failures=0)
    with pytest.raises(InvalidDataError):
        BookLimits(max_spread_bps=math.nan)
