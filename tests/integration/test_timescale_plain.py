"""The plain branch of db/timescale.py on the real PostgreSQL 15 (no TimescaleDB there): BRIN index, date_bin
views and read API equal to a Python computation, `timescale: off`, logged once, retention as a DELETE.

Uses its own scratch database (created and dropped here), independent of the shared session fixtures.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, inspect, text

import db.timescale as timescale
from db.engine import make_engine
from db.migrate import downgrade, head_revision, upgrade
from db.timescale import (
    AGGREGATES,
    BRIN_INDEX,
    StorageMode,
    aggregate_view,
    apply_retention,
    read_aggregated,
    refresh_aggregates,
    storage_mode,
    timescale_status,
)
from tests.timescale.candle_data import Candle, make_candles, reference_aggregate, upsert

pytestmark = pytest.mark.integration

ADMIN_DSN = os.environ.get("SE_TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
URL_TEMPLATE = os.environ.get("SE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}")
VIEWS = {aggregate_view(tf) for tf in AGGREGATES}
DAY0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def plain_engine() -> Iterator[Engine]:
    name = f"se_ts_plain_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 does not answer ({exc}); start it (see README)")
    engine = make_engine(URL_TEMPLATE.format(db=name))
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")).first():
                pytest.skip("this PostgreSQL has TimescaleDB: the plain branch is not what it runs")
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _write(engine: Engine, candles: list[Candle]) -> None:
    with engine.begin() as conn:
        upsert(conn, candles)


def test_plain_branch_has_a_brin_index_and_views_instead_of_timescale(plain_engine: Engine) -> None:
    inspector = inspect(plain_engine)
    brin = conn_scalar(
        plain_engine,
        "SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam WHERE c.relname = :n AND i.indrelid = 'candles'::regclass",
        n=BRIN_INDEX,
    )
    assert brin == "brin"
    assert set(inspector.get_view_names()) >= VIEWS
    assert inspector.get_pk_constraint("candles")["constrained_columns"] == [
        "exchange",
        "symbol",
        "timeframe",
        "ts",
    ]
    assert inspector.get_pk_constraint("signals")["constrained_columns"] == ["id", "ts"]


def conn_scalar(engine: Engine, query: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(text(query), params).scalar()


def test_views_and_read_api_give_the_same_candles_as_python(plain_engine: Engine) -> None:
    exchange, symbol = "plain_views", "BTC/USDT"
    start = DAY0 - timedelta(minutes=7)
    candles = make_candles(exchange, symbol, start, 3 * 1440, seed=11)
    other = make_candles(exchange, "ETH/USDT", start, 1440, seed=12)
    native_5m = make_candles(exchange, symbol, DAY0, 200, seed=13, timeframe="5m", missing=0.0)
    _write(plain_engine, candles + other + native_5m)

    with plain_engine.connect() as conn:
        for timeframe in AGGREGATES:
            for lo, hi in (
                (DAY0 - timedelta(days=1), DAY0 + timedelta(days=4)),
                (DAY0 + timedelta(hours=3, minutes=2), DAY0 + timedelta(days=1, hours=7, seconds=1)),
            ):
                expected = reference_aggregate(candles, timeframe, lo, hi)
                assert expected, timeframe
                assert read_aggregated(conn, exchange, symbol, timeframe, lo, hi) == expected
                through_view = conn.execute(
                    text(
                        f"SELECT ts, open, high, low, close, volume, candle_count FROM {aggregate_view(timeframe)} "
                        "WHERE exchange = :e AND symbol = :s AND ts >= :lo AND ts < :hi ORDER BY ts"
                    ),
                    {"e": exchange, "s": symbol, "lo": lo, "hi": hi},
                ).all()
                assert [tuple(r) for r in through_view] == [
                    (c.ts, c.open, c.high, c.low, c.close, c.volume, c.candle_count) for c in expected
                ]
        # The 4h/1d buckets start where Timescale's do (origin Monday 2000-01-03 00:00 UTC).
        four_hourly = read_aggregated(conn, exchange, symbol, "4h", DAY0, DAY0 + timedelta(days=1))
        assert [c.ts.astimezone(UTC).hour for c in four_hourly] == [0, 4, 8, 12, 16, 20]
        conn.rollback()
        assert refresh_aggregates(conn) == []  # nothing to refresh without continuous aggregates


def test_status_says_off_and_the_off_notice_is_logged_once(
    plain_engine: Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timescale, "_off_logged", False)
    with caplog.at_level(logging.INFO, logger="db.timescale"), plain_engine.connect() as conn:
        status = timescale_status(conn)
        timescale_status(conn)
        assert storage_mode(conn) is StorageMode.PLAIN
    assert status["enabled"] is False and status["mode"] == "plain"
    assert "extension not available" in status["detail"]
    assert status["hypertables"] == [] and status["continuous_aggregates"] == []
    off_notices = [r for r in caplog.records if "TimescaleDB features are off" in r.getMessage()]
    assert len(off_notices) == 1


def test_retention_is_an_exact_delete(plain_engine: Engine) -> None:
    exchange, symbol = "plain_retention", "BTC/USDT"
    first = DAY0 - timedelta(days=100)  # older than every other test's candles: only these go
    candles = make_candles(exchange, symbol, first, 3 * 1440, seed=14, missing=0.0)
    _write(plain_engine, candles)
    now = first + timedelta(days=32, hours=6)
    with plain_engine.begin() as conn:
        result = apply_retention(conn, timedelta(days=31), now=now)
    cutoff = first + timedelta(days=1, hours=6)
    assert result.mode is StorageMode.PLAIN and result.cutoff == cutoff
    assert result.rows_deleted == 1440 + 360 and not result.policy_scheduled
    with plain_engine.connect() as conn:
        oldest = conn.execute(text("SELECT min(ts) FROM candles WHERE exchange = :e"), {"e": exchange})
        assert oldest.scalar_one() == cutoff


def test_downgrade_removes_the_brin_index_and_views_and_upgrade_restores_them(plain_engine: Engine) -> None:
    downgrade(plain_engine, "0001")
    inspector = inspect(plain_engine)
    assert not set(inspector.get_view_names()) & VIEWS
    assert BRIN_INDEX not in {ix["name"] for ix in inspector.get_indexes("candles")}
    upgrade(plain_engine)
    inspector = inspect(plain_engine)
    assert set(inspector.get_view_names()) >= VIEWS
    assert BRIN_INDEX in {ix["name"] for ix in inspector.get_indexes("candles")}
    assert conn_scalar(plain_engine, "SELECT version_num FROM alembic_version") == head_revision()
