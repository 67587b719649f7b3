"""TimescaleDB when the server has it, plain PostgreSQL when it does not: the only module with Timescale SQL.

Three storage modes, detected from the catalog (never configured):

* ``timescale``: the extension is installed under the Timescale (community) license. candles and signals are
  hypertables; candles are compressed after `COMPRESS_AFTER`; continuous aggregates ``candles_5m`` ..
  ``candles_1d`` derive higher timeframes from the 1m candles, refreshed by policies.
* ``timescale-apache``: the extension runs under the Apache license (no compression, continuous aggregates or
  policies): hypertables, and the plain views of the third mode.
* ``plain``: no extension. Same tables and keys, a BRIN index on ``candles.ts``, and plain views with the same
  names computing the same candles with ``date_bin`` at Timescale's default origin (Monday 2000-01-03 UTC), so
  results equal ``time_bucket``'s bucket for bucket.

Chunk intervals. candles: 1 day. A 1m series is 1,440 rows a day; at ~160 bytes a row with its primary-key
entry, 100 symbols make ~23 MB per daily chunk and 1,000 symbols ~230 MB, so the chunk being written and its
index stay in memory on a small server (Timescale's advice: recent chunks within ~25% of RAM). Daily chunks
also let retention and compression work at one-day granularity, and give each compressed segment
(exchange, symbol, timeframe) 1,440 rows per chunk, above the 1,000-row batch size compression works in.
Weekly chunks would compress slightly better but reach 1.6 GB a week at 1,000 symbols. signals: 7 days; an
evaluation happens per closed candle of the signal timeframe (tens a day per symbol), so a week is small.

Continuous aggregates are real-time (``materialized_only = false``): rows newer than the last refresh are
aggregated on read, so a read never misses fresh candles. Rows written *below* the refresh watermark (late
corrections, backfills of history) show at the next policy run (at most an hour), or at once after
`refresh_aggregates`. The policies refresh with no lower bound (``start_offset => NULL``); Timescale only
re-materializes invalidated ranges, so a run costs what changed, and a backfill of any age is picked up
(measured: with a 7-day bound, history backfilled 50 days back never reached the aggregate). The price:
dropping raw chunks also invalidates their range, so after retention the derived candles of that range go
too at the next refresh (measured), exactly as the plain views lose them after the DELETE.

Creating a continuous aggregate ``WITH NO DATA`` works inside a transaction, so every statement here runs in
the migration's transaction (measured on TimescaleDB 2.23). Only refreshing needs a connection outside a
transaction: `refresh_aggregates` and ``CALL run_job`` take an AUTOCOMMIT connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, TypedDict

from sqlalchemy import Connection, TextClause, text

from domain.errors import ConfigurationError, InvalidDataError

log = logging.getLogger(__name__)

EXTENSION: Final = "timescaledb"
CANDLES_CHUNK_INTERVAL: Final = timedelta(days=1)
SIGNALS_CHUNK_INTERVAL: Final = timedelta(days=7)
# Chunks entirely older than this are compressed: late corrections inside a week stay cheap row updates.
COMPRESS_AFTER: Final = timedelta(days=7)
# Timescale's default time_bucket origin for intervals without months; date_bin needs it spelled out.
BUCKET_ORIGIN: Final = "2000-01-03 00:00:00+00"
SOURCE_TIMEFRAME: Final = "1m"
# Higher timeframe -> (bucket width, refresh-policy schedule). Schedules are capped at one hour: real-time
# aggregation covers anything newer than the last refresh anyway.
AGGREGATES: Final[dict[str, tuple[str, str]]] = {
    "5m": ("5 minutes", "5 minutes"),
    "15m": ("15 minutes", "15 minutes"),
    "1h": ("1 hour", "1 hour"),
    "4h": ("4 hours", "1 hour"),
    "1d": ("1 day", "1 hour"),
}
BRIN_INDEX: Final = "ix_candles_ts_brin"


class StorageMode(StrEnum):
    TIMESCALE = "timescale"
    TIMESCALE_APACHE = "timescale-apache"
    PLAIN = "plain"


class TimescaleStatus(TypedDict):
    """What `db status` shows. `enabled` is True when the extension is installed in this database."""

    enabled: bool
    available: bool
    mode: str
    version: str | None
    license: str | None
    detail: str
    hypertables: list[str]
    continuous_aggregates: list[str]
    compressed_tables: list[str]
    jobs: list[str]


@dataclass(frozen=True, slots=True)
class AggregatedCandle:
    """One higher-timeframe candle; `ts` is the bucket's open (UTC), `candle_count` the 1m candles in it."""

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    candle_count: int


@dataclass(frozen=True, slots=True)
class RetentionResult:
    mode: StorageMode
    cutoff: datetime
    chunks_dropped: int  # Timescale: whole chunks (1 day) entirely older than the cutoff
    rows_deleted: int | None  # plain: exact rows; None where chunks were dropped (not counted)
    policy_scheduled: bool


_off_logged = False


def _log_off_once(reason: str) -> None:
    # Every flow run detects the mode; one line per process is enough to tell an operator.
    global _off_logged
    if not _off_logged:
        _off_logged = True
        log.info("TimescaleDB features are off (%s): plain PostgreSQL tables, views and DELETE", reason)


def aggregate_view(timeframe: str) -> str:
    """Name of the view (continuous aggregate or plain) holding `timeframe` candles, e.g. ``candles_1h``."""
    if timeframe not in AGGREGATES:
        raise InvalidDataError(
            f"no aggregate for timeframe {timeframe!r}: derived timeframes are {', '.join(AGGREGATES)}"
        )
    return f"candles_{timeframe}"


# --- detection -------------------------------------------------------------------------------------------


def timescale_available(conn: Connection) -> bool:
    """True when the server can install TimescaleDB (it is in ``pg_available_extensions``)."""
    return bool(
        conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = :n)"), {"n": EXTENSION}
        ).scalar_one()
    )


def timescale_enabled(conn: Connection) -> bool:
    """True when TimescaleDB is installed in this database; logs once per process when it is not."""
    enabled = bool(
        conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = :n)"), {"n": EXTENSION}
        ).scalar_one()
    )
    if not enabled:
        _log_off_once("extension not installed" if timescale_available(conn) else "extension not available")
    return enabled


def timescale_license(conn: Connection) -> str | None:
    """``timescale``, ``apache`` (no compression, continuous aggregates or policies), or None when unset."""
    value = conn.execute(text("SELECT current_setting('timescaledb.license', true)")).scalar_one()
    return str(value) if value else None


def storage_mode(conn: Connection) -> StorageMode:
    """Which of the three storage modes this database is in (see the module docstring)."""
    if not timescale_enabled(conn):
        return StorageMode.PLAIN
    if timescale_license(conn) == "apache":
        return StorageMode.TIMESCALE_APACHE
    return StorageMode.TIMESCALE


def _names(conn: Connection, sql: str) -> list[str]:
    return sorted(str(v) for v in conn.execute(text(sql)).scalars())


def _continuous_aggregates(conn: Connection) -> list[str]:
    return _names(
        conn,
        "SELECT view_name FROM timescaledb_information.continuous_aggregates WHERE view_schema = current_schema()",
    )


def timescale_status(conn: Connection) -> TimescaleStatus:
    """Extension state, hypertables, continuous aggregates, compression and jobs, for `db status`.

    `detail` is one parenthesised line meant to follow ``timescale: on|off``."""
    available = timescale_available(conn)
    if not timescale_enabled(conn):
        why = "extension installable but not installed" if available else "extension not available"
        return TimescaleStatus(
            enabled=False,
            available=available,
            mode=StorageMode.PLAIN.value,
            version=None,
            license=None,
            detail=f"({why}; higher timeframes from date_bin views, retention by DELETE)",
            hypertables=[],
            continuous_aggregates=[],
            compressed_tables=[],
            jobs=[],
        )
    version = conn.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = :n"), {"n": EXTENSION}
    ).scalar_one()
    license_ = timescale_license(conn)
    hypertables = _names(
        conn,
        "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = current_schema()",
    )
    caggs: list[str] = []
    compressed: list[str] = []
    jobs: list[str] = []
    if license_ != "apache":
        caggs = _continuous_aggregates(conn)
        compressed = _names(
            conn,
            "SELECT hypertable_name FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = current_schema() AND compression_enabled",
        )
        jobs = [
            f"{proc} {target or ''} every {interval}".replace("  ", " ")
            for proc, target, interval in conn.execute(
                text(
                    "SELECT proc_name, hypertable_name, schedule_interval FROM timescaledb_information.jobs "
                    "WHERE hypertable_schema = current_schema() ORDER BY job_id"
                )
            )
        ]
    mode = StorageMode.TIMESCALE_APACHE if license_ == "apache" else StorageMode.TIMESCALE
    detail = (
        f"(timescaledb {version}, {license_ or 'unknown'} license, {len(hypertables)} hypertables, "
        f"{len(caggs)} continuous aggregates)"
    )
    return TimescaleStatus(
        enabled=True,
        available=available,
        mode=mode.value,
        version=str(version),
        license=license_,
        detail=detail,
        hypertables=hypertables,
        continuous_aggregates=caggs,
        compressed_tables=compressed,
        jobs=jobs,
    )


# --- applying and removing (called by migration 0002) -----------------------------------------------------


def try_create_extension(conn: Connection) -> bool:
    """CREATE EXTENSION in a savepoint; False (and a warning) when the server refuses, e.g. not preloaded."""
    if conn.execute(
        text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = :n)"), {"n": EXTENSION}
    ).scalar_one():
        return True
    savepoint = conn.begin_nested()
    try:
        conn.execute(text(f"CREATE EXTENSION {EXTENSION}"))
    except Exception as exc:  # noqa: BLE001 - any refusal means: carry on without Timescale, and say why.
        savepoint.rollback()
        log.warning("TimescaleDB is available but CREATE EXTENSION failed (%s): using plain tables", exc)
        return False
    savepoint.commit()
    return True


def _plain_view_sql(timeframe: str) -> str:
    width, _ = AGGREGATES[timeframe]
    return (
        f"CREATE VIEW {aggregate_view(timeframe)} AS "
        f"SELECT exchange, symbol, date_bin(interval '{width}', ts, timestamptz '{BUCKET_ORIGIN}') AS ts, "
        "(array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low, "
        "(array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume, count(*) AS candle_count "
        f"FROM candles WHERE timeframe = '{SOURCE_TIMEFRAME}' "
        f"GROUP BY exchange, symbol, date_bin(interval '{width}', ts, timestamptz '{BUCKET_ORIGIN}')"
    )


def _create_plain_views(conn: Connection) -> None:
    for timeframe in AGGREGATES:
        conn.execute(text(_plain_view_sql(timeframe)))


def apply_plain(conn: Connection) -> StorageMode:
    """Without the extension: a BRIN index on candles.ts and the date_bin views (run once, by migration 0002)."""
    _log_off_once("extension not installed")
    # BRIN stays tiny and serves time-range scans (retention DELETE, range reads across all series) because
    # live ingestion appends in time order; backfills of old history weaken the correlation somewhat.
    conn.execute(text(f"CREATE INDEX IF NOT EXISTS {BRIN_INDEX} ON candles USING brin (ts)"))
    _create_plain_views(conn)
    return StorageMode.PLAIN


def _cagg_sql(timeframe: str) -> str:
    width, _ = AGGREGATES[timeframe]
    return (
        f"CREATE MATERIALIZED VIEW {aggregate_view(timeframe)} "
        "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
        f"SELECT exchange, symbol, time_bucket(interval '{width}', ts) AS ts, "
        "first(open, ts) AS open, max(high) AS high, min(low) AS low, last(close, ts) AS close, "
        "sum(volume) AS volume, count(*) AS candle_count "
        f"FROM candles WHERE timeframe = '{SOURCE_TIMEFRAME}' "
        f"GROUP BY exchange, symbol, time_bucket(interval '{width}', ts) "
        # WITH NO DATA: creating with data refreshes, which cannot run inside the migration's transaction.
        "WITH NO DATA"
    )


def apply_timescale(conn: Connection) -> StorageMode:
    """Hypertables, and under the community license compression, continuous aggregates and their policies."""
    conn.execute(text(f"CREATE EXTENSION IF NOT EXISTS {EXTENSION}"))
    # No default (ts DESC) index: the primary keys already end in ts and chunk exclusion handles time ranges.
    for table, interval in (("candles", CANDLES_CHUNK_INTERVAL), ("signals", SIGNALS_CHUNK_INTERVAL)):
        conn.execute(
            text(
                "SELECT create_hypertable(CAST(:t AS regclass), by_range('ts', CAST(:iv AS interval)), "
                "create_default_indexes => false, migrate_data => true, if_not_exists => true)"
            ),
            {"t": table, "iv": interval},
        )
    if timescale_license(conn) == "apache":
        log.info("TimescaleDB runs under the Apache license: hypertables only, plain views for aggregates")
        _create_plain_views(conn)
        return StorageMode.TIMESCALE_APACHE
    # One compressed segment per series, rows in time order: reads of one series touch one segment.
    conn.execute(
        text(
            "ALTER TABLE candles SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'exchange, symbol, timeframe', "
            "timescaledb.compress_orderby = 'ts')"
        )
    )
    conn.execute(
        text("SELECT add_compression_policy('candles', CAST(:after AS interval), if_not_exists => true)"),
        {"after": COMPRESS_AFTER},
    )
    for timeframe, (width, schedule) in AGGREGATES.items():
        conn.execute(text(_cagg_sql(timeframe)))
        # end_offset of one bucket: the still-open bucket is left to real-time aggregation.
        conn.execute(
            text(
                "SELECT add_continuous_aggregate_policy(CAST(:v AS regclass), "
                "start_offset => NULL, end_offset => CAST(:width AS interval), "
                "schedule_interval => CAST(:every AS interval), if_not_exists => true)"
            ),
            {"v": aggregate_view(timeframe), "width": width, "every": schedule},
        )
    return StorageMode.TIMESCALE


def _drop_views(conn: Connection) -> None:
    caggs = set(_continuous_aggregates(conn)) if timescale_enabled(conn) else set()
    for timeframe in AGGREGATES:
        name = aggregate_view(timeframe)
        # DROP VIEW refuses a continuous aggregate and DROP MATERIALIZED VIEW a plain view, even IF EXISTS.
        kind = "MATERIALIZED VIEW" if name in caggs else "VIEW"
        conn.execute(text(f"DROP {kind} IF EXISTS {name}"))


def _hypertable_to_plain(conn: Connection, table: str) -> None:
    """Copy a hypertable into a plain table of the same name, keys, indexes and sequence ownership."""
    staging = f"{table}__plain"
    oid = {"t": table}
    constraints = conn.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u', 'x') ORDER BY conname"
        ),
        oid,
    ).all()
    indexes = (
        conn.execute(
            text(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = CAST(:t AS regclass) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1"
            ),
            oid,
        )
        .scalars()
        .all()
    )
    sequences = conn.execute(
        text(
            "SELECT s.oid::regclass::text, a.attname FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE d.refobjid = CAST(:t AS regclass) AND d.deptype = 'a'"
        ),
        oid,
    ).all()
    conn.execute(
        text(
            f"CREATE TABLE {staging} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING STORAGE INCLUDING COMMENTS)"
        )
    )
    conn.execute(text(f"INSERT INTO {staging} SELECT * FROM {table}"))
    for sequence, column in sequences:
        # Dropping the hypertable would otherwise drop the sequence the copied default still uses.
        conn.execute(text(f'ALTER SEQUENCE {sequence} OWNED BY {staging}."{column}"'))
    conn.execute(text(f"DROP TABLE {table}"))
    conn.execute(text(f"ALTER TABLE {staging} RENAME TO {table}"))
    for name, definition in constraints:
        conn.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
    for definition in indexes:
        conn.execute(text(definition))


def remove_storage(conn: Connection) -> None:
    """Undo `apply_timescale` or `apply_plain`: views or continuous aggregates (with their policies), the
    BRIN index, and hypertables back to plain tables with their data, keys and indexes. The extension
    itself stays installed (see below)."""
    _drop_views(conn)
    conn.execute(text(f"DROP INDEX IF EXISTS {BRIN_INDEX}"))
    if not timescale_enabled(conn):
        return
    for table in _names(
        conn,
        "SELECT hypertable_name FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema = current_schema() AND hypertable_name IN ('candles', 'signals')",
    ):
        _hypertable_to_plain(conn, table)
    # The extension stays: a session that loaded it cannot CREATE it again after a DROP ("already loaded
    # with another version"), so a downgrade followed by an upgrade on a pooled connection would silently
    # fall back to plain tables; other objects may also use it.


# --- reading higher timeframes ------------------------------------------------------------------------------


def higher_timeframe_query(timeframe: str, *, continuous: bool) -> TextClause:
    """SQL for `timeframe` candles of one series whose bucket opens in [:start, :end).

    Binds: ``exchange``, ``symbol``, ``start``, ``end`` (timestamptz; need not be aligned). Columns: ts, open,
    high, low, close, volume, candle_count, in ts order. `continuous` reads the continuous aggregate; otherwise
    the 1m candles are bucketed with date_bin directly (the raw-ts bounds keep the primary-key index usable,
    which a filter through the view's grouped bucket would not).
    """
    view = aggregate_view(timeframe)
    if continuous:
        return text(
            "SELECT ts, open, high, low, close, volume, candle_count "
            f"FROM {view} WHERE exchange = :exchange AND symbol = :symbol AND ts >= :start AND ts < :end "
            "ORDER BY ts"
        )
    width, _ = AGGREGATES[timeframe]
    bucket = f"date_bin(interval '{width}', ts, timestamptz '{BUCKET_ORIGIN}')"
    # A bucket opens in [start, end) exactly when its rows lie in [align_up(start), align_up(end)).
    align_up = (
        f"date_bin(interval '{width}', CAST(:{{p}} AS timestamptz) - interval '1 microsecond', "
        f"timestamptz '{BUCKET_ORIGIN}') + interval '{width}'"
    )
    return text(
        f"SELECT {bucket} AS ts, (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, "
        "min(low) AS low, (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume, "
        "count(*) AS candle_count FROM candles "
        f"WHERE exchange = :exchange AND symbol = :symbol AND timeframe = '{SOURCE_TIMEFRAME}' "
        f"AND ts >= {align_up.format(p='start')} AND ts < {align_up.format(p='end')} "
        f"GROUP BY {bucket} ORDER BY 1"
    )


def has_continuous_aggregates(conn: Connection) -> bool:
    """True when the ``candles_<tf>`` views are continuous aggregates (mode ``timescale``)."""
    return storage_mode(conn) is StorageMode.TIMESCALE and aggregate_view("5m") in _continuous_aggregates(conn)


def read_aggregated(
    conn: Connection,
    exchange: str,
    symbol: str,
    timeframe: str,
    start: datetime,
    end: datetime,
    *,
    continuous: bool | None = None,
) -> list[AggregatedCandle]:
    """`timeframe` candles (5m..1d) derived from 1m, buckets opening in [start, end), on any storage mode.

    `continuous` None detects the mode (three catalog queries); pass `has_continuous_aggregates(conn)` once
    to skip detection in a loop.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidDataError("read_aggregated needs timezone-aware (UTC) start and end")
    use_cagg = has_continuous_aggregates(conn) if continuous is None else continuous
    rows = conn.execute(
        higher_timeframe_query(timeframe, continuous=use_cagg),
        {"exchange": exchange, "symbol": symbol, "start": start, "end": end},
    )
    return [AggregatedCandle(r.ts, r.open, r.high, r.low, r.close, r.volume, int(r.candle_count)) for r in rows]


def refresh_aggregates(conn: Connection, start: datetime | None = None, end: datetime | None = None) -> list[str]:
    """Materialize every continuous aggregate over [start, end) (None: unbounded). No-op without them.

    Needs a connection with no open transaction; it switches it to AUTOCOMMIT for the call, because
    Timescale refuses to refresh inside a transaction block. Call after a backfill or correction that must
    show in aggregates before the next policy run. Returns the aggregates refreshed.
    """
    if conn.in_transaction():
        raise InvalidDataError(
            "refresh_aggregates needs a connection outside a transaction (commit first, or use a new one)"
        )
    if not has_continuous_aggregates(conn):
        conn.rollback()  # detection autobegan a transaction
        return []
    conn.rollback()
    conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        for timeframe in AGGREGATES:
            conn.execute(
                text(
                    "CALL refresh_continuous_aggregate(CAST(:v AS regclass), "
                    "CAST(:start AS timestamptz), CAST(:end AS timestamptz))"
                ),
                {"v": aggregate_view(timeframe), "start": start, "end": end},
            )
    finally:
        conn.commit()  # ends SQLAlchemy's autobegun (empty, AUTOCOMMIT) transaction so the level can change
        conn.execution_options(isolation_level=conn.default_isolation_level)
    return [aggregate_view(tf) for tf in AGGREGATES]


# --- retention ---------------------------------------------------------------------------------------------


def apply_retention(conn: Connection, older_than: timedelta, *, now: datetime | None = None) -> RetentionResult:
    """Remove candles older than `now - older_than` (`now` defaults to the server clock).

    Timescale: drops whole chunks entirely older than the cutoff, and under the community license also
    (re)schedules a retention policy with the same horizon. Plain: an exact DELETE. Either way the derived
    higher-timeframe candles of the removed range go too (continuous aggregates at their next refresh).
    """
    if older_than <= timedelta(0):
        raise ConfigurationError(f"retention horizon must be positive, not {older_than}")
    cutoff = conn.execute(
        text("SELECT COALESCE(CAST(:now AS timestamptz), now()) - CAST(:age AS interval)"),
        {"now": now, "age": older_than},
    ).scalar_one()
    # Gap scans trust candle_counts only to skip complete buckets; a missing count row just means "verify",
    # so dropping every bucket that starts before the cutoff keeps them safe whatever retention removes.
    conn.execute(text("DELETE FROM candle_counts WHERE bucket < :cutoff"), {"cutoff": cutoff})
    mode = storage_mode(conn)
    if mode is StorageMode.PLAIN:
        deleted = conn.execute(text("DELETE FROM candles WHERE ts < :cutoff"), {"cutoff": cutoff}).rowcount
        return RetentionResult(mode, cutoff, 0, deleted, False)
    scheduled = False
    if mode is StorageMode.TIMESCALE:
        conn.execute(text("SELECT remove_retention_policy('candles', if_exists => true)"))
        conn.execute(
            text("SELECT add_retention_policy('candles', drop_after => CAST(:age AS interval))"),
            {"age": older_than},
        )
        scheduled = True
    dropped = conn.execute(
        text("SELECT count(*) FROM drop_chunks('candles', older_than => CAST(:cutoff AS timestamptz))"),
        {"cutoff": cutoff},
    ).scalar_one()
    return RetentionResult(mode, cutoff, int(dropped), None, scheduled)


def job_ids(conn: Connection, proc_name: str, target: str) -> list[int]:
    """Ids of Timescale jobs running `proc_name` (e.g. ``policy_compression``) for hypertable or aggregate
    `target`; run one now with ``CALL run_job(id)`` on an AUTOCOMMIT connection."""
    rows = conn.execute(
        text(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = :p AND hypertable_name = :t "
            "ORDER BY job_id"
        ),
        {"p": proc_name, "t": target},
    ).scalars()
    return [int(v) for v in rows]
