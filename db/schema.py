"""Tables (SQLAlchemy 2 Core). The migrations in db/migrations create exactly these.

Time columns are `timestamptz` (UTC). Tables that become hypertables when TimescaleDB is available
(candles, signals) carry their time column in the primary key, as Timescale requires.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from db.crypto import EncryptedJSON, EncryptedString

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _tstz(name: str, *, nullable: bool = False, now: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable, server_default=func.now() if now else None)


def _series() -> list[Column[Any]]:
    return [
        Column("exchange", Text, nullable=False),
        Column("symbol", Text, nullable=False),
        Column("timeframe", Text, nullable=False),
    ]


def _id() -> Column[Any]:
    return Column("id", BigInteger, primary_key=True, autoincrement=True)


candles = Table(
    "candles",
    metadata,
    *_series(),
    _tstz("ts"),
    Column("open", Double, nullable=False),
    Column("high", Double, nullable=False),
    Column("low", Double, nullable=False),
    Column("close", Double, nullable=False),
    Column("volume", Double, nullable=False),
    _tstz("ingested_at", now=True),
    Column("revision", Integer, nullable=False, server_default=text("0")),
    # The conflict target of every upsert; also what gap detection scans (index-only, in ts order).
    PrimaryKeyConstraint("exchange", "symbol", "timeframe", "ts"),
)

# Stored candles per series and bucket of BUCKET_CANDLES candles, kept by every upsert in the same statement.
# A full gap scan walks only the buckets holding fewer candles than they should (see db/gaps.py).
candle_counts = Table(
    "candle_counts",
    metadata,
    *_series(),
    _tstz("bucket"),
    Column("n", Integer, nullable=False),
    PrimaryKeyConstraint("exchange", "symbol", "timeframe", "bucket"),
)

candle_quarantine = Table(
    "candle_quarantine",
    metadata,
    _id(),
    *_series(),
    _tstz("ts", nullable=True),
    Column("raw", JSONB, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("source", Text, nullable=False),
    _tstz("received_at", now=True),
    Index(None, "exchange", "symbol", "timeframe", "received_at"),
)

markets = Table(
    "markets",
    metadata,
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("timeframe", Text, nullable=False),
    # The first candle the exchange has for this market: gaps are never reported before it.
    _tstz("first_candle_ts", nullable=True),
    _tstz("checked_at", now=True),
    PrimaryKeyConstraint("exchange", "symbol", "timeframe"),
)

series_watermarks = Table(
    "series_watermarks",
    metadata,
    *_series(),
    # Everything in [complete_from, complete_until) is stored or confirmed empty: routine gap scans of a
    # range that starts inside it begin at complete_until.
    _tstz("complete_from"),
    _tstz("complete_until"),
    _tstz("updated_at", now=True),
    PrimaryKeyConstraint("exchange", "symbol", "timeframe"),
)

backfill_jobs = Table(
    "backfill_jobs",
    metadata,
    _id(),
    *_series(),
    _tstz("range_start"),
    _tstz("range_end"),
    Column("priority", Text, nullable=False),
    Column("priority_rank", SmallInteger, nullable=False),
    Column("status", Text, nullable=False, server_default="PENDING"),
    # Next candle open still to fetch; advances in the same transaction that stores a page.
    _tstz("checkpoint"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("5")),
    Column("pages_done", Integer, nullable=False, server_default=text("0")),
    Column("candles_stored", BigInteger, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    _tstz("created_at", now=True),
    _tstz("updated_at", now=True),
    _tstz("started_at", nullable=True),
    _tstz("finished_at", nullable=True),
    CheckConstraint("status IN ('PENDING','IN_PROGRESS','DONE','FAILED')", name="status"),
    CheckConstraint("range_start < range_end", name="range"),
    UniqueConstraint("exchange", "symbol", "timeframe", "range_start", "range_end"),
    Index(None, "status", "priority_rank", "range_end"),
)

empty_ranges = Table(
    "empty_ranges",
    metadata,
    *_series(),
    _tstz("range_start"),
    _tstz("range_end"),
    Column("answers", SmallInteger, nullable=False, server_default=text("2")),
    # no_candles: answered empty twice (no trades); quarantined: answered twice only with broken candles.
    Column("reason", Text, nullable=False, server_default="no_candles"),
    _tstz("confirmed_at", now=True),
    PrimaryKeyConstraint("exchange", "symbol", "timeframe", "range_start"),
    CheckConstraint("range_start < range_end", name="range"),
    # Gap scans ask for the ranges ending after where they begin.
    Index(None, "exchange", "symbol", "timeframe", "range_end"),
)

signals = Table(
    "signals",
    metadata,
    Column("id", BigInteger, autoincrement=True, nullable=False),
    *_series(),
    # Open time of the last closed candle the evaluation saw.
    _tstz("ts"),
    _tstz("evaluated_at", now=True),
    Column("direction", Text, nullable=True),
    Column("score", Double, nullable=False),
    Column("confidence", Double, nullable=True),
    Column("tier", Text, nullable=False),
    Column("decision", Text, nullable=False),
    Column("components", JSONB, nullable=False),
    Column("conditions", JSONB, nullable=False),
    Column("reasons", JSONB, nullable=False),
    Column("entry", Double, nullable=True),
    Column("stop", Double, nullable=True),
    Column("targets", JSONB, nullable=True),
    Column("run_id", Text, nullable=True),
    PrimaryKeyConstraint("id", "ts"),
    Index(None, "exchange", "symbol", "timeframe", "ts"),
)

positions = Table(
    "positions",
    metadata,
    _id(),
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("mode", Text, nullable=False, server_default="paper"),
    Column("direction", Text, nullable=False),
    Column("tier", Text, nullable=False),
    Column("signal_id", BigInteger, nullable=True),
    Column("quantity", Double, nullable=False),
    Column("remaining", Double, nullable=False),
    Column("entry_price", Double, nullable=False),
    Column("stop", Double, nullable=False),
    Column("targets", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="OPEN"),
    Column("realised_pnl", Double, nullable=False, server_default=text("0")),
    Column("fees", Double, nullable=False, server_default=text("0")),
    Column("r_multiple", Double, nullable=True),
    Column("state", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _tstz("opened_at"),
    _tstz("closed_at", nullable=True),
    CheckConstraint("status IN ('OPEN','CLOSED')", name="status"),
    Index(None, "exchange", "symbol", "status"),
)

orders = Table(
    "orders",
    metadata,
    _id(),
    Column("client_order_id", Text, nullable=False, unique=True),
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("mode", Text, nullable=False, server_default="paper"),
    Column("side", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("quantity", Double, nullable=False),
    Column("price", Double, nullable=True),
    Column("status", Text, nullable=False),
    Column("position_id", BigInteger, ForeignKey("positions.id"), nullable=True),
    Column("signal_id", BigInteger, nullable=True),
    _tstz("created_at", now=True),
    _tstz("updated_at", now=True),
)

fills = Table(
    "fills",
    metadata,
    _id(),
    Column("order_id", BigInteger, ForeignKey("orders.id"), nullable=True),
    Column("position_id", BigInteger, ForeignKey("positions.id"), nullable=False),
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("quantity", Double, nullable=False),
    Column("price", Double, nullable=False),
    Column("fee", Double, nullable=False),
    Column("realised_pnl", Double, nullable=False, server_default=text("0")),
    _tstz("filled_at"),
    Index(None, "position_id"),
)

exchange_credentials = Table(
    "exchange_credentials",
    metadata,
    _id(),
    Column("name", Text, nullable=False, unique=True),
    Column("exchange", Text, nullable=False),
    Column("sandbox", Boolean, nullable=False, server_default=text("false")),
    Column("api_key", EncryptedString, nullable=False),
    Column("api_secret", EncryptedString, nullable=False),
    Column("password", EncryptedString, nullable=True),
    Column("extra", EncryptedJSON, nullable=True),
    # Fingerprint of the key the encrypted columns of this row were written with (see db/crypto.py).
    Column("key_id", Text, nullable=False),
    _tstz("created_at", now=True),
    _tstz("updated_at", now=True),
)

scheduler_state = Table(
    "scheduler_state",
    metadata,
    Column("name", Text, primary_key=True),
    Column("state", JSONB, nullable=False),
    _tstz("updated_at", now=True),
)

# Tables whose rows carry encrypted columns, with those columns; `keys rotate` walks exactly these.
ENCRYPTED_TABLES: dict[str, tuple[str, ...]] = {
    "exchange_credentials": ("api_key", "api_secret", "password", "extra"),
}
