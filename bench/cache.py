"""Redis cache: the evaluate_signals access pattern and the serialisation formats.

Pattern (as the flow does it, in compressed time): each cycle warms every symbol's 15m window at flow start
(one DB query per symbol, one pipelined write), then evaluates each symbol (its own window, plus the windows
of open positions for the correlation check), and between cycles the ingest merges new candles into the
cached windows (write-through). Prints the hit rate (target >= 95%) with and without the warm-up."""

from __future__ import annotations

import functools
import time

import msgpack
import numpy as np
import polars as pl

from adapters.cache import MarketDataCache, decode_window, encode_window
from bench.common import candle_frame, scratch_engine, timed
from db.candles import read_candles, read_windows, upsert_candles

N_SYMBOLS, WINDOW, CYCLES, OPEN_POSITIONS = 50, 1_000, 12, 3
REDIS_URL = "redis://127.0.0.1:6379/14"


def _formats() -> None:
    frame = candle_frame(1, 500).drop("symbol")
    formats = [
        ("polars IPC stream (chosen)", lambda: encode_window(frame), decode_window),
        ("msgpack raw columns", lambda: _msgpack(frame), _unmsgpack),
        ("JSON rows", lambda: frame.write_json().encode(), lambda b: pl.read_json(b)),
    ]
    for name, encode, decode in formats:
        payload = encode()
        enc = min(timed(encode)[0] for _ in range(200)) * 1e6
        dec = min(timed(functools.partial(decode, payload))[0] for _ in range(200)) * 1e6
        print(
            f"   500-candle window, {name:30s}: {len(payload) / 1024:5.1f} KB, "
            f"encode {enc:6.1f} us, decode {dec:6.1f} us"
        )


def _msgpack(frame: pl.DataFrame) -> bytes:
    packed: bytes = msgpack.packb({c: frame[c].to_numpy().tobytes() for c in frame.columns})
    return packed


def _unmsgpack(payload: bytes) -> pl.DataFrame:
    raw = msgpack.unpackb(payload)
    return pl.DataFrame({c: np.frombuffer(v, dtype="<i8" if c == "ts" else "<f8") for c, v in raw.items()})


def _cycle(cache: MarketDataCache, engine, symbols, now_step: int, *, warm: bool) -> None:
    with engine.connect() as conn:
        if warm:
            cache.warm(
                "bench", "15m", read_windows(conn, exchange="bench", symbols=symbols, timeframe="15m", newest=WINDOW)
            )
        for symbol in symbols:
            # its own window, then the open positions' windows (correlation check)
            for wanted in [symbol, *(o for o in symbols[:OPEN_POSITIONS] if o != symbol)]:
                load = functools.partial(
                    read_candles, conn, exchange="bench", symbol=wanted, timeframe="15m", newest=WINDOW
                )
                cache.get_window("bench", wanted, "15m", WINDOW, load)


def main() -> None:
    _formats()
    symbols = [f"S{i:03d}/USDT" for i in range(N_SYMBOLS)]
    with scratch_engine() as engine:
        frame = candle_frame(N_SYMBOLS, WINDOW + CYCLES, seed=4)
        step = 900_000
        frame = frame.with_columns(
            (1_700_000_100_000 // step * step + pl.int_range(pl.len()).over("symbol") * step).alias("ts")
        )
        history = frame.filter(pl.int_range(pl.len()).over("symbol") < WINDOW)
        with engine.begin() as conn:
            upsert_candles(conn, history, exchange="bench", timeframe="15m")
        for warm in (True, False):
            cache = MarketDataCache(REDIS_URL, key_prefix=f"bench{int(warm)}")
            cache.client.flushdb()
            started = time.perf_counter()
            for cycle in range(CYCLES):
                new = frame.filter(pl.int_range(pl.len()).over("symbol") == WINDOW + cycle)
                with engine.begin() as conn:
                    upsert_candles(conn, new, exchange="bench", timeframe="15m")
                cache.on_ingest("bench", "15m", new)
                _cycle(cache, engine, symbols, cycle, warm=warm)
            elapsed = time.perf_counter() - started
            s = cache.stats
            label = "with warm-up at flow start" if warm else "read-through only, no warm-up"
            print(
                f"   {label:32s}: hit rate {s.hit_rate:.1%} ({s.hits} hits, {s.misses} misses) over {CYCLES} cycles "
                f"x {N_SYMBOLS} symbols, {elapsed:.1f} s (target >= 95%)"
            )
            cache.close()
