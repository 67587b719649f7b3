"""The scheduler state repository (db/scheduler_state.py) against the real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, insert, select

from db.scheduler_state import load_scheduler, save_scheduler
from db.schema import scheduler_state
from domain.errors import InvalidDataError
from domain.scheduling import GateCode, SchedulerConfig, SmartScheduler

pytestmark = pytest.mark.integration

MIN = 60_000
CONFIG = SchedulerConfig(min_trade_gap_ms=5 * MIN, max_consecutive_failures=2, cooloff_ms=30 * MIN, latency_window=3)


def busy_scheduler() -> SmartScheduler:
    s = SmartScheduler(CONFIG)
    s.record_trade("BTC/USDT", 10 * MIN)
    s.record_failure("ETH/USDT", 11 * MIN, "timeout")
    s.record_failure("ETH/USDT", 12 * MIN, "timeout")  # second in a row: cool-off until 42 min
    for ms in (120.0, 80.5, 2_500.0, 90.0):  # the window keeps the last 3
        s.record_latency("BTC/USDT", ms, venue="binance")
    return s


def test_an_absent_scheduler_loads_empty(db: Engine) -> None:
    with db.connect() as conn:
        empty = load_scheduler(conn, "signals")
        configured = load_scheduler(conn, "signals", config=CONFIG)
    assert empty.to_dict() == SmartScheduler().to_dict()
    assert configured.config == CONFIG
    assert configured.gate("BTC/USDT", 0).allowed


def test_save_and_load_round_trip(db: Engine) -> None:
    saved = busy_scheduler()
    with db.begin() as conn:
        save_scheduler(conn, "signals", saved)
    with db.connect() as conn:
        loaded = load_scheduler(conn, "signals")
        other = load_scheduler(conn, "backfill")
    assert loaded.to_dict() == saved.to_dict()
    assert other.to_dict() == SmartScheduler().to_dict()
    for now in (12 * MIN, 14 * MIN, 20 * MIN, 50 * MIN):
        for symbol in ("BTC/USDT", "ETH/USDT", "XRP/USDT"):
            assert loaded.gate(symbol, now) == saved.gate(symbol, now)
    eth = loaded.gate("ETH/USDT", 20 * MIN)
    assert [r.code for r in eth.reasons] == [GateCode.COOLING_OFF]
    assert eth.retry_at_ms == 42 * MIN
    assert loaded.latency("binance", kind="venue") == saved.latency("binance", kind="venue")


def test_saving_again_replaces_the_state(db: Engine) -> None:
    scheduler = busy_scheduler()
    with db.begin() as conn:
        save_scheduler(conn, "signals", scheduler)
    scheduler.record_success("ETH/USDT")
    scheduler.record_trade("SOL/USDT", 13 * MIN)
    with db.begin() as conn:
        before = conn.execute(select(scheduler_state.c.updated_at)).scalar_one()
        save_scheduler(conn, "signals", scheduler)
    with db.begin() as conn:
        loaded = load_scheduler(conn, "signals", for_update=True)
        rows = conn.execute(select(func.count()).select_from(scheduler_state)).scalar_one()
        after = conn.execute(select(scheduler_state.c.updated_at)).scalar_one()
    assert rows == 1
    assert after > before
    assert loaded.to_dict() == scheduler.to_dict()
    assert loaded.gate("ETH/USDT", 14 * MIN).allowed
    assert not loaded.gate("SOL/USDT", 14 * MIN).allowed


def test_a_given_config_replaces_the_stored_thresholds_and_keeps_the_state(db: Engine) -> None:
    with db.begin() as conn:
        save_scheduler(conn, "signals", busy_scheduler())
    shorter = SchedulerConfig(min_trade_gap_ms=MIN, max_consecutive_failures=2, cooloff_ms=MIN, latency_window=2)
    with db.connect() as conn:
        loaded = load_scheduler(conn, "signals", config=shorter)
    assert loaded.config == shorter
    assert loaded.gate("BTC/USDT", 12 * MIN).allowed  # one minute after the trade is enough now
    assert not loaded.gate("ETH/USDT", 20 * MIN).allowed  # the stored cool-off end (42 min) still holds
    stats = loaded.latency("BTC/USDT")
    assert stats is not None and stats.samples == 2  # the narrower window keeps the newest samples


def test_a_malformed_stored_state_is_refused(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(insert(scheduler_state).values(name="signals", state={"version": 99}))
    with db.connect() as conn, pytest.raises(InvalidDataError, match="version"):
        load_scheduler(conn, "signals")
