"""Shared fixtures: a fresh PostgreSQL database per test session, a Redis database index, Prefect isolation.

Prefect reads its settings at import time, so its home and API are pinned here before anything imports it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="se-prefect-test-")
atexit.register(shutil.rmtree, _PREFECT_HOME, True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["SE_TASK_RETRY_BACKOFF_S"] = "0.05"  # task retries back off in ms, not seconds

import psycopg  # noqa: E402
import pytest  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from db.engine import make_engine  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.schema import metadata  # noqa: E402

PG_ADMIN_DSN = os.environ.get("SE_TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_TEMPLATE = os.environ.get("SE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{db}")
REDIS_TEST_URL = os.environ.get("SE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
SHARED_CANDLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "candles"


def create_scratch_database(prefix: str) -> tuple[str, str]:
    """Create an empty database; returns (name, SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, PG_URL_TEMPLATE.format(db=name)


def drop_scratch_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated database for the whole test session, dropped afterwards."""
    try:
        name, url = create_scratch_database("se_test")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 does not answer ({exc}); start it (see README)")
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    yield url
    drop_scratch_database(name)


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


@pytest.fixture
def db(engine: Engine) -> Engine:
    """The session database with every table emptied before the test."""
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database index of its own, flushed before and after the test."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at 127.0.0.1:6379 does not answer ({exc}); start it (see README)")
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def shared_candles() -> Path:
    """The real candles in ../shared/data/candles; tests using it skip when the folder is absent."""
    if not SHARED_CANDLES.is_dir():
        pytest.skip(f"real candle data not found at {SHARED_CANDLES}")
    return SHARED_CANDLES
