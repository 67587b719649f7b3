"""Engine and connection factories. No module-level engine: callers build one from a URL and dispose it."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from domain.errors import ConfigurationError, TransientError

log = logging.getLogger(__name__)


class DatabaseUnavailable(TransientError):
    """PostgreSQL did not answer (a TransientError: a retry may succeed)."""


def parse_url(url: str) -> URL:
    """A SQLAlchemy URL using the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError/ValueError; both mean malformed.
        raise ConfigurationError("DATABASE_URL is malformed (expected postgresql+psycopg://user@host/db)") from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(f"DATABASE_URL must point at PostgreSQL, not {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`. `pool_pre_ping` so a restarted server does not fail the first query."""
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 5}
    options.update(kwargs)
    return create_engine(parse_url(url), **options)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return parse_url(url).render_as_string(hide_password=True)


def libpq_dsn(url: str, *, database: str | None = None) -> str:
    """A libpq connection string (for raw psycopg connections, e.g. COPY and CREATE DATABASE)."""
    parsed = parse_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_database(url: str) -> bool:
    """Create the database named in `url` when it does not exist. Returns True when it was created."""
    parsed = parse_url(url)
    name = parsed.database
    if not name:
        raise ConfigurationError("DATABASE_URL names no database")
    try:
        with psycopg.connect(libpq_dsn(url, database="postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)
            return True
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"PostgreSQL at {safe_url(url)} does not answer: {str(exc).splitlines()[0] if str(exc) else exc}"
        ) from None
