"""One Prefect test server for every test in tests/flows (PREFECT_HOME is already a temp dir)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import Engine

from blocks import ExchangeAccount, MarketCache, TimescaleDatabase
from blocks.registration import register_block_types
from domain.timeframes import DAY_MS, MINUTE_MS, last_closed_open
from tests.emulator.binance import BinanceEmulator, random_walk_candles, run_binance_emulator

SYMBOLS = ["AAA/USDT", "BBB/USDT", "CCC/USDT"]


@pytest.fixture(autouse=True, scope="session")
def prefect_harness() -> Iterator[None]:
    # The default 20-30 s startup timeout flakes on a loaded 2-core machine (PrefectHQ/prefect#15075).
    with prefect_test_harness(server_startup_timeout=120):
        yield


def make_blocks(pg_url: str, redis_url: str, *, exchange: str, api_url: str | None = None) -> str:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    register_block_types()
    TimescaleDatabase(url=pg_url).save(prefix)
    MarketCache(redis_url=redis_url).save(prefix)
    ExchangeAccount(exchange_id=exchange, api_url=api_url, timeout_ms=3_000).save(prefix)
    return prefix


@pytest.fixture
def emulator() -> Iterator[BinanceEmulator]:
    end = last_closed_open(int(time.time() * 1000), "1m") + MINUTE_MS
    with run_binance_emulator() as emu:
        for i, symbol in enumerate(SYMBOLS):
            emu.add_market(
                symbol, candles=random_walk_candles(end - DAY_MS, 1440, seed=i)
            )  # up to the last closed minute
        yield emu


@pytest.fixture
def emulator_blocks(db: Engine, pg_url: str, redis_url: str, emulator: BinanceEmulator) -> str:
    return make_blocks(pg_url, redis_url, exchange="binance", api_url=emulator.url)
