"""Signal evaluation end to end: golden setups, no look-ahead, closed candles only, series == single bar."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import numpy as np
import polars as pl
import pytest

from domain.errors import InvalidDataError
from domain.scoring import WinRecord
from domain.signals import (
    Decision,
    Direction,
    SignalContext,
    evaluate_signal,
    setup_key,
    signal_series,
)
from domain.tiers import Tier
from tests.conftest import SHARED_CANDLES
from tests.unit.candle_factory import MINUTE_MS, make_candles, make_pullback_setup

CTX = SignalContext(symbol="TEST/USDT", timeframe="1m", equity=10_000.0, proposed_notional=300.0)


def closed_at(candles: pl.DataFrame, t: int) -> int:
    """A now_ms at which bar t has just closed and bar t+1 is still open."""
    return int(candles["ts"][t]) + MINUTE_MS + 1


def test_golden_clean_0618_pullback_in_an_uptrend_with_rising_volume_is_full() -> None:
    setup = make_pullback_setup(rising_volume=True, ema_order=True)
    candles = setup.candles
    ev = evaluate_signal(candles, context=CTX, now_ms=closed_at(candles, candles.height - 1))
    assert ev.direction is Direction.LONG and ev.setup == "fib0.618_long"
    assert all(c.passed for c in ev.conditions), ev.conditions
    assert ev.confidence == 1.0 and not ev.rejected
    assert ev.tier is Tier.FULL and ev.decision is Decision.ENTER and ev.score >= 75
    assert ev.structure is not None and ev.structure.origin.price == setup.swing_low
    assert ev.entry == pytest.approx(setup.level_price)
    assert ev.stop == pytest.approx(setup.swing_low - 0.5 * ev.structure.atr)
    span = setup.swing_high - setup.swing_low
    assert ev.targets == pytest.approx(tuple(setup.swing_low + e * span for e in (1.272, 1.618, 2.618)))


def test_golden_same_setup_with_falling_volume_and_ema_disorder_is_skipped_with_those_reasons() -> None:
    setup = make_pullback_setup(rising_volume=False, ema_order=False)
    candles = setup.candles
    ev = evaluate_signal(candles, context=CTX, now_ms=closed_at(candles, candles.height - 1))
    assert ev.direction is Direction.LONG and ev.setup == "fib0.618_long"
    assert ev.tier is Tier.SKIP and ev.decision is Decision.SKIP and ev.score < 60
    assert {c.name for c in ev.conditions if not c.passed} == {"volume", "ema_alignment"}
    reasons = " | ".join(ev.reasons)
    assert "volume: volume ratio" in reasons and "no volume confirmation" in reasons
    assert "ema_alignment:" in reasons and "EMA disorder" in reasons
    full = evaluate_signal(make_pullback_setup().candles, context=CTX, now_ms=closed_at(candles, candles.height - 1))
    assert ev.components["volume"] < full.components["volume"]
    assert ev.components["technical"] < full.components["technical"]


@pytest.fixture(scope="module")
def walk() -> pl.DataFrame:
    return make_candles(1500, seed=3, volatility=0.003)


def test_evaluation_at_t_from_candles_up_to_t_equals_the_full_series_one(walk: pl.DataFrame) -> None:
    series = signal_series(walk)
    decisions = series.decisions(context=CTX)["decision"].to_list()
    rng = np.random.default_rng(9)
    bars = sorted({*rng.integers(250, walk.height - 1, 40).tolist(), walk.height - 1})
    seen = set()
    for t in bars:
        # The frame holds future candles too: only closed ones at now_ms may count.
        live = evaluate_signal(walk, context=CTX, now_ms=closed_at(walk, t))
        truncated = evaluate_signal(walk.head(t + 1), context=CTX, now_ms=closed_at(walk, t))
        replayed = series.evaluate_at(t, context=CTX)
        assert live == truncated == replayed, t
        assert live.to_dict() == replayed.to_dict()
        seen.add(decisions[t])
    assert len(seen) >= 3  # the sample covers several kinds of decision, not only NO_SETUP


def test_vectorised_decisions_equal_bar_by_bar_evaluations(walk: pl.DataFrame) -> None:
    context = SignalContext(
        symbol="TEST/USDT",
        timeframe="1m",
        equity=10_000.0,
        proposed_notional=300.0,
        symbol_record=WinRecord(12, 20),
        setup_records={"fib0.5_long": WinRecord(8, 10), "fib0.618_short": WinRecord(1, 9)},
    )
    series = signal_series(walk)
    frame = series.decisions(context=context)
    assert frame.height == walk.height
    for t in range(200, walk.height):
        ev = series.evaluate_at(t, context=context)
        row = frame.row(t, named=True)
        assert row["score"] == ev.score and row["confidence"] == ev.confidence, t
        assert (row["tier"], row["decision"], row["rejected"]) == (str(ev.tier), str(ev.decision), ev.rejected)
    assert set(frame["decision"].unique()) >= {"no_setup", "reject", "skip"}


def test_history_changes_the_win_rate_component() -> None:
    candles = make_pullback_setup().candles
    now = closed_at(candles, candles.height - 1)
    plain = evaluate_signal(candles, context=CTX, now_ms=now)
    lucky = SignalContext(
        symbol=CTX.symbol,
        timeframe="1m",
        equity=10_000.0,
        proposed_notional=300.0,
        setup_records={setup_key(1, 0.618): WinRecord(40, 50)},
    )
    better = evaluate_signal(candles, context=lucky, now_ms=now)
    assert better.components["win_rate"] > plain.components["win_rate"]
    assert better.score - plain.score == pytest.approx(better.components["win_rate"] - plain.components["win_rate"])


def test_a_risk_limit_rejects_and_keeps_its_reasons() -> None:
    candles = make_pullback_setup().candles
    big = SignalContext(symbol=CTX.symbol, timeframe="1m", equity=10_000.0, proposed_notional=900.0)
    ev = evaluate_signal(candles, context=big, now_ms=closed_at(candles, candles.height - 1))
    assert ev.decision is Decision.REJECT and ev.rejected and ev.tier is Tier.FULL
    assert "hard limit failed: position_size" in ev.reasons
    assert any(r.startswith("position_size: position 9.00% of equity exceeds") for r in ev.reasons)


def test_only_closed_candles_of_the_symbol_count() -> None:
    candles = make_pullback_setup().candles
    last = candles.height - 1
    still_open = closed_at(candles, last) - 2  # 1 ms before the last candle closes
    ev = evaluate_signal(candles, context=CTX, now_ms=still_open)
    assert ev.ts == candles["ts"][last - 1]
    mixed = pl.concat(
        [
            candles.with_columns(pl.lit(CTX.symbol).alias("symbol")),
            make_candles(candles.height, seed=1, symbol="OTHER/USDT"),
        ]
    )
    assert evaluate_signal(mixed, context=CTX, now_ms=closed_at(candles, last)) == evaluate_signal(
        candles, context=CTX, now_ms=closed_at(candles, last)
    )
    with pytest.raises(InvalidDataError, match="no closed"):
        evaluate_signal(candles, context=CTX, now_ms=int(candles["ts"][0]))
    with pytest.raises(InvalidDataError, match="one series"):
        signal_series(mixed)


def test_warm_up_bars_are_no_setup_with_that_reason(walk: pl.DataFrame) -> None:
    ev = evaluate_signal(walk.head(150), context=CTX, now_ms=closed_at(walk, 149))
    assert ev.decision is Decision.NO_SETUP and ev.direction is Direction.NONE and ev.score == 0.0
    assert "warming up" in ev.reasons[0]


def test_evaluation_is_frozen_and_serialises_to_plain_json() -> None:
    candles = make_pullback_setup().candles
    ev = evaluate_signal(candles, context=CTX, now_ms=closed_at(candles, candles.height - 1))
    with pytest.raises(FrozenInstanceError):
        ev.score = 1.0  # type: ignore[misc]
    plain = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
    assert plain["tier"] == "FULL" and plain["decision"] == "enter" and plain["direction"] == "long"
    assert len(plain["conditions"]) == 7 and plain["fib"]["level"]["ratio"] == 0.618
    assert set(plain) >= {"score", "components", "conditions", "tier", "decision", "reasons", "entry", "stop"}


@pytest.mark.shared_data
def test_real_candles_replay_without_look_ahead() -> None:
    source = SHARED_CANDLES / "BTC-USDT_5m.csv"
    if not source.exists():
        pytest.skip(f"{source} is not available")
    candles = pl.read_csv(source).rename({"timestamp": "ts"}).with_columns(pl.col("ts").cast(pl.Int64))
    context = SignalContext(symbol="BTC/USDT", timeframe="5m", equity=10_000.0, proposed_notional=300.0)
    series = signal_series(candles)
    decisions = series.decisions(context=context)
    assert set(decisions["decision"].unique()) == {"enter", "skip", "reject", "no_setup"}
    for t in (1000, 4321, 7777, candles.height - 1):
        now = int(candles["ts"][t]) + 5 * MINUTE_MS
        assert evaluate_signal(candles.head(t + 1), context=context, now_ms=now) == series.evaluate_at(
            t, context=context
        )
