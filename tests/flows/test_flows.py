"""The real flows, in Prefect's test harness, against PostgreSQL, Redis and the replay exchange or the Binance
emulator driven through the real ccxt client."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import Engine, text

from flows.common import StageFailed
from flows.ingest import ingest
from flows.pipeline import pipeline
from tests.emulator.binance import BinanceEmulator
from tests.flows.conftest import SYMBOLS, make_blocks

pytestmark = [pytest.mark.flows, pytest.mark.integration]


def stored(engine: Engine, symbol: str | None = None) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM candles WHERE CAST(:s AS text) IS NULL OR symbol = :s"), {"s": symbol}
            ).scalar_one()
        )


def test_second_ingest_of_the_same_data_inserts_nothing(db: Engine, emulator_blocks: str) -> None:
    # The emulator serves nothing newer than the last minute closed when it started: a minute ticking over
    # between the runs brings no new candle, so the second run can only find what the first stored.
    first = ingest(exchange="binance", symbols=SYMBOLS, block=emulator_blocks, lookback=120)
    inserted = sum(r["inserted"] for r in first)
    assert 3 * 119 <= inserted <= 3 * 120
    second = ingest(exchange="binance", symbols=SYMBOLS, block=emulator_blocks, lookback=120)
    assert sum(r["inserted"] for r in second) == 0
    assert sum(r["revised"] for r in second) == 0
    assert stored(db) == inserted


def test_a_transient_fault_is_retried_to_success(db: Engine, emulator_blocks: str, emulator: BinanceEmulator) -> None:
    emulator.server_error_next(3, endpoint="klines")  # in-task retry absorbs 1; the task retry the rest
    rows = ingest(exchange="binance", symbols=SYMBOLS[:1], block=emulator_blocks, lookback=60)
    assert 59 <= rows[0]["inserted"] <= 60  # 59 when a minute ticked over since the emulator started
    statuses = [r.status for r in emulator.requests("klines")]
    assert statuses.count(503) == 3
    assert statuses[-1] == 200


def test_a_permanent_fault_fails_only_that_symbols_task(
    db: Engine, emulator_blocks: str, emulator: BinanceEmulator
) -> None:
    emulator.reject_symbol("BBB/USDT")
    with pytest.raises(StageFailed, match="BBB/USDT"):
        ingest(exchange="binance", symbols=SYMBOLS, block=emulator_blocks, lookback=60, symbols_per_task=1)
    assert 59 <= stored(db, "AAA/USDT") <= 60  # 59 when a minute ticked over since the emulator started
    assert 59 <= stored(db, "CCC/USDT") <= 60
    assert stored(db, "BBB/USDT") == 0
    bbb = [r for r in emulator.requests("klines") if r.params.get("symbol") == "BBBUSDT"]
    assert len(bbb) == 1  # permanent: neither the in-task retry nor the task retry asked again


def test_pipeline_on_the_replay_exchange(db: Engine, pg_url: str, redis_url: str, tmp_path) -> None:
    prefix = make_blocks(pg_url, redis_url, exchange="replay")
    summary = pipeline(
        exchange="replay",
        symbols=["BTC/USDT", "ETH/USDT"],
        block=prefix,
        days=3,
        backfill_priorities=["CRITICAL", "HIGH", "MEDIUM", "LOW"],
    )
    assert stored(db) > 2 * 3 * 1440 * 0.95
    assert {r["symbol"] for r in summary["signals"]} == {"BTC/USDT", "ETH/USDT"}
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM signals")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM backfill_jobs WHERE status <> 'DONE'")).scalar_one() == 0
    continuity = summary["backfill"]["continuity"]
    for row in continuity:
        # what is still missing is exactly what the exchange sent broken (quarantined, visible, refetchable)
        assert row["remaining_missing"] <= row["quarantined"], row
        assert row["stored"] + row["confirmed_empty"] + row["remaining_missing"] == row["expected"], row

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    for key in ("data-quality-replay", "continuity-replay", "backfill-replay", "signals-replay", "paper-pnl-replay"):
        assert key in keys

    # the backtest flow replays what the pipeline stored and reports as an artifact and files
    from flows.backtest import backtest

    out = backtest(
        exchange="replay",
        symbols=["BTC/USDT", "ETH/USDT"],
        timeframe="5m",
        days=3,
        controls=1,
        reports_dir=str(tmp_path),
        audit_cuts=2,
        block=prefix,
    )
    assert out["audit_ok"] is True
    assert {p.rsplit("/", 1)[-1] for p in out["files"]} >= {"backtest-5m.md", "backtest-5m-equity.png"}
    with get_client(sync_client=True) as client:
        assert "backtest-replay-5m" in {a.key for a in client.read_artifacts()}
