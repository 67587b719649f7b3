"""The Redis cache against a real Redis: read-through, TTLs, write-through on ingest, and Redis going away."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time

import numpy as np
import polars as pl
import pytest
import redis
from polars.testing import assert_frame_equal

from adapters.cache import MarketDataCache, TtlPolicy, decode_window, encode_window

pytestmark = pytest.mark.integration


def window(n: int, start: int = 0) -> pl.DataFrame:
    ts = (start + np.arange(n, dtype=np.int64)) * 60_000
    price = 100 + np.arange(n, dtype=np.float64)
    return pl.DataFrame({"ts": ts, "open": price, "high": price + 1, "low": price - 1, "close": price, "volume": price})


class Loader:
    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame, self.calls = frame, 0

    def __call__(self) -> pl.DataFrame:
        self.calls += 1
        return self.frame


def test_round_trip_encoding_is_exact() -> None:
    frame = window(500)
    assert_frame_equal(decode_window(encode_window(frame)), frame)


def test_read_through_then_hits(redis_url: str) -> None:
    cache = MarketDataCache(redis_url, key_prefix="t")
    loader = Loader(window(300))
    first = cache.get_window("binance", "BTC/USDT", "15m", 250, loader)
    for _ in range(19):
        again = cache.get_window("binance", "BTC/USDT", "15m", 250, loader)
    assert loader.calls == 1
    assert_frame_equal(first, again)
    assert first.height == 250
    assert cache.stats.hits == 19
    assert cache.stats.misses == 1
    assert cache.stats.hit_rate == pytest.approx(0.95)
    # asking for more than is cached is a miss, not a short answer
    cache.get_window("binance", "BTC/USDT", "15m", 400, loader)
    assert loader.calls == 2
    cache.close()


def test_ttl_policy_scales_with_timeframe(redis_url: str) -> None:
    policy = TtlPolicy()
    assert policy.ohlcv_ms("1m") == 5_000
    assert policy.ohlcv_ms("5m") == 25_000
    assert policy.ohlcv_ms("1h") == 60_000
    cache = MarketDataCache(redis_url, key_prefix="t")
    cache.get_window("x", "A/B", "1m", 10, Loader(window(10)))
    cache.get_order_book("x", "A/B", lambda: {"bids": [[1.0, 2.0]], "asks": [[1.1, 2.0]], "timestamp": 1})
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.pttl("t:x:ohlcv:A/B:1m") <= 5_000
    assert 0 < client.pttl("t:x:book:A/B:-") <= 500
    client.close()
    cache.close()


def test_ingest_merges_into_cached_windows_and_drops_derived(redis_url: str) -> None:
    cache = MarketDataCache(redis_url, key_prefix="t")
    cache.put_window("x", "A/B", "1m", window(100))
    cache.put_window("x", "A/B", "15m", window(10))
    fresh = window(3, start=100).with_columns(pl.lit("A/B").alias("symbol"))
    cache.on_ingest("x", "1m", fresh, derived_timeframes=["15m"])
    loader = Loader(window(1))
    got = cache.get_window("x", "A/B", "1m", 100, loader)
    assert loader.calls == 0
    assert got["ts"].to_list()[-3:] == [100 * 60_000, 101 * 60_000, 102 * 60_000]
    cache.get_window("x", "A/B", "15m", 1, loader)
    assert loader.calls == 1  # the derived window was dropped
    cache.close()


def test_dead_port_bypasses_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = MarketDataCache(f"redis://127.0.0.1:{port}/0", retry_after_s=60)
    loader = Loader(window(50))
    with caplog.at_level(logging.WARNING, logger="adapters.cache"):
        for _ in range(5):
            assert cache.get_window("x", "A/B", "1m", 50, loader).height == 50
    assert loader.calls == 5
    assert cache.stats.errors == 1
    assert cache.stats.bypassed >= 4
    assert sum("unavailable" in r.message for r in caplog.records) == 1
    cache.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server binary not installed")
def test_redis_stopped_mid_run_then_back(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        cache = MarketDataCache(f"redis://127.0.0.1:{port}/0", retry_after_s=0.0)
        loader = Loader(window(20))
        cache.get_window("x", "A/B", "1h", 20, loader)
        cache.get_window("x", "A/B", "1h", 20, loader)
        assert (loader.calls, cache.stats.hits) == (1, 1)

        server.terminate()
        server.wait(10)
        for _ in range(3):
            assert cache.get_window("x", "A/B", "1h", 20, loader).height == 20
        assert loader.calls == 4
        assert cache.stats.errors >= 1

        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        cache.get_window("x", "A/B", "1h", 20, loader)  # miss: the restarted server is empty
        cache.get_window("x", "A/B", "1h", 20, loader)
        assert cache.stats.hits == 2
        cache.close()
        client.close()
    finally:
        server.terminate()
        server.wait(10)
