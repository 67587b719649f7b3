"""Shared by the benchmarks: a scratch database, timing, and a candle generator."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import polars as pl
import psycopg
from sqlalchemy import Engine

from db.engine import make_engine
from db.migrate import upgrade

ADMIN_DSN = os.environ.get("SE_BENCH_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
URL_TEMPLATE = os.environ.get("SE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}")
T = TypeVar("T")


@contextmanager
def scratch_engine(prefix: str = "se_bench") -> Iterator[Engine]:
    """A migrated scratch database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(URL_TEMPLATE.format(db=name))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def candle_frame(symbols: int, per_symbol: int, *, start_ms: int = 1_700_000_040_000, seed: int = 7) -> pl.DataFrame:
    """Valid 1m candles for `symbols` series (random walks), in (symbol, ts) order."""
    rng = np.random.default_rng(seed)
    n = symbols * per_symbol
    steps = rng.normal(0, 0.001, n).reshape(symbols, per_symbol)
    close = (100.0 * np.exp(np.cumsum(steps, axis=1))).ravel()
    open_ = np.roll(close, 1)
    open_[::per_symbol] = close[::per_symbol]
    spread = np.abs(rng.normal(0, 0.0005, n)) * close
    return pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:03d}/USDT" for i in range(symbols)], per_symbol),
            "ts": np.tile(start_ms + np.arange(per_symbol, dtype=np.int64) * 60_000, symbols),
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(1, 100, n),
        }
    )
