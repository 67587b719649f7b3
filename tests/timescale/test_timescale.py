"""The Timescale branch for real, on TimescaleDB-in-WASM: migrations, hypertables, upserts, continuous
aggregates against the date_bin computation, compression with upserts into compressed chunks, retention.

Each test writes its own exchange name, so the tests share one server without seeing each other's candles.
Jobs never run by themselves on this server: tests run them with CALL run_job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, Row, inspect, text

from db.migrate import current_revision, downgrade, head_revision, require_head, upgrade
from db.status import database_status
from db.timescale import (
    AGGREGATES,
    COMPRESS_AFTER,
    StorageMode,
    aggregate_view,
    apply_retention,
    job_ids,
    read_aggregated,
    refresh_aggregates,
    storage_mode,
    timescale_status,
)
from domain.errors import ConfigurationError
from tests.timescale.candle_data import Candle, make_candles, reference_aggregate, upsert

pytestmark = pytest.mark.timescale

VIEWS = {aggregate_view(tf) for tf in AGGREGATES}


def _midnight(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def _run_job(engine: Engine, job_id: int) -> None:
    # Jobs commit internally: CALL run_job refuses to run inside a transaction block.
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("CALL run_job(CAST(:id AS integer))"), {"id": job_id})


def _pairs(rows: Iterable[Row[Any]]) -> dict[Any, Any]:
    return {row[0]: row[1] for row in rows}


def _write(engine: Engine, candles: list[Candle]) -> tuple[int, int]:
    with engine.begin() as conn:
        return upsert(conn, candles)


def _materialized_rows(conn: Connection, view: str, exchange: str) -> int:
    schema, table = conn.execute(
        text(
            "SELECT materialization_hypertable_schema, materialization_hypertable_name "
            "FROM timescaledb_information.continuous_aggregates WHERE view_name = :v"
        ),
        {"v": view},
    ).one()
    return int(
        conn.execute(
            text(f'SELECT count(*) FROM "{schema}"."{table}" WHERE exchange = :e'), {"e": exchange}
        ).scalar_one()
    )


def _assert_both_paths_match_reference(
    conn: Connection, exchange: str, symbol: str, candles: list[Candle], start: datetime, end: datetime
) -> None:
    for timeframe in AGGREGATES:
        expected = reference_aggregate(candles, timeframe, start, end)
        assert expected, timeframe
        from_cagg = read_aggregated(conn, exchange, symbol, timeframe, start, end, continuous=True)
        from_date_bin = read_aggregated(conn, exchange, symbol, timeframe, start, end, continuous=False)
        assert from_cagg == expected, timeframe
        assert from_date_bin == expected, timeframe


def test_migrations_reach_head_with_hypertables_compression_and_aggregates(ts_engine: Engine) -> None:
    assert current_revision(ts_engine) == head_revision()
    require_head(ts_engine)
    with ts_engine.connect() as conn:
        hypertables = _pairs(
            conn.execute(
                text(
                    "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables "
                    "WHERE hypertable_name IN ('candles', 'signals')"
                )
            )
        )
        assert hypertables == {"candles": True, "signals": False}
        intervals = _pairs(
            conn.execute(
                text(
                    "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions "
                    "WHERE column_name = 'ts' AND hypertable_name IN ('candles', 'signals')"
                )
            )
        )
        assert intervals == {"candles": timedelta(days=1), "signals": timedelta(days=7)}
        settings = {
            row.attname: (row.segmentby_column_index, row.orderby_column_index)
            for row in conn.execute(
                text(
                    "SELECT attname, segmentby_column_index, orderby_column_index "
                    "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'candles'"
                )
            )
        }
        assert settings == {"exchange": (1, None), "symbol": (2, None), "timeframe": (3, None), "ts": (None, 1)}
        caggs = _pairs(
            conn.execute(text("SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"))
        )
        assert caggs == dict.fromkeys(VIEWS, False)  # real-time: fresh rows show before a refresh
        assert job_ids(conn, "policy_compression", "candles")
        for view in VIEWS:
            assert len(job_ids(conn, "policy_refresh_continuous_aggregate", view)) == 1, view

        status = timescale_status(conn)
        assert status["enabled"] and status["mode"] == "timescale" and status["license"] == "timescale"
        assert set(status["hypertables"]) == {"candles", "signals"}
        assert set(status["continuous_aggregates"]) == VIEWS
        assert status["compressed_tables"] == ["candles"]
        assert storage_mode(conn) is StorageMode.TIMESCALE
    shown = database_status(ts_engine)  # what `strategy-engine db status` prints
    assert shown.timescale_on and "5 continuous aggregates" in shown.timescale_detail
    kinds = {t.name: t.kind for t in shown.tables}
    assert kinds["candles"] == kinds["signals"] == "hypertable" and kinds["orders"] == "table"


def test_downgrade_turns_hypertables_back_into_plain_tables_and_upgrade_restores_them(
    ts_engine: Engine,
) -> None:
    first_day = _midnight(COMPRESS_AFTER.days + 3)  # old enough to be compressed before the downgrade
    candles = make_candles("ts_roundtrip", "BTC/USDT", first_day, 600, seed=1)
    _write(ts_engine, candles)
    with ts_engine.connect() as conn:
        (job,) = job_ids(conn, "policy_compression", "candles")
    _run_job(ts_engine, job)
    with ts_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO signals (exchange, symbol, timeframe, ts, score, tier, decision, components, "
                "conditions, reasons) VALUES ('ts_roundtrip', 'BTC/USDT', '1h', now(), 71, 'B', 'enter', "
                "'{}', '{}', '[]')"
            )
        )

    with ts_engine.connect() as conn:
        compressed = conn.execute(
            text(
                "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
                "WHERE hypertable_name = 'candles' AND range_start = :day"
            ),
            {"day": first_day},
        )
        assert compressed.scalar_one() is True

    downgrade(ts_engine, "0001")
    with ts_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM timescaledb_information.hypertables")).scalar() == 0
        assert not set(inspect(conn).get_view_names()) & VIEWS
        kept = conn.execute(text("SELECT count(*) FROM candles WHERE exchange = 'ts_roundtrip'")).scalar()
        assert kept == len(candles)
        assert inspect(conn).get_pk_constraint("candles")["name"] == "pk_candles"
        assert {ix["name"] for ix in inspect(conn).get_indexes("signals")} == {
            "ix_signals_exchange_symbol_timeframe_ts"
        }
        # The id sequence survived the copy: a new signal gets the next id.
        new_id = conn.execute(
            text(
                "INSERT INTO signals (exchange, symbol, timeframe, ts, score, tier, decision, components, "
                "conditions, reasons) VALUES ('ts_roundtrip', 'BTC/USDT', '1h', now(), 10, 'C', 'skip', "
                "'{}', '{}', '[]') RETURNING id"
            )
        ).scalar_one()
        assert new_id == 1 + conn.execute(text("SELECT min(id) FROM signals")).scalar_one()
        conn.commit()

    upgrade(ts_engine)
    with ts_engine.connect() as conn:
        status = timescale_status(conn)
        assert set(status["hypertables"]) == {"candles", "signals"}
        assert set(status["continuous_aggregates"]) == VIEWS
        # migrate_data moved the existing rows into chunks; the aggregates see them.
        start, end = first_day, first_day + timedelta(hours=10)
        _assert_both_paths_match_reference(conn, "ts_roundtrip", "BTC/USDT", candles, start, end)

    downgrade(ts_engine, "base")
    assert "candles" not in inspect(ts_engine).get_table_names()
    upgrade(ts_engine)
    assert current_revision(ts_engine) == head_revision()


def test_unnest_upsert_inserts_skips_identical_rows_and_counts_corrections(ts_engine: Engine) -> None:
    candles = make_candles("ts_upsert", "ETH/USDT", _midnight(2), 2 * 1440, seed=2, missing=0.0)
    assert _write(ts_engine, candles) == (len(candles), 0)
    assert _write(ts_engine, candles) == (0, 0)  # a re-sent identical batch writes nothing

    corrected = [_with_close(c, c.close + 0.25) for c in candles[::1000]]
    assert _write(ts_engine, corrected) == (0, len(corrected))
    with ts_engine.connect() as conn:
        revisions = _pairs(
            conn.execute(text("SELECT revision, count(*) FROM candles WHERE exchange = 'ts_upsert' GROUP BY revision"))
        )
        chunks = conn.execute(
            text(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'candles' "
                "AND range_start >= :a AND range_end <= :b"
            ),
            {"a": _midnight(2), "b": _midnight(0)},
        ).scalar_one()
    assert revisions == {0: len(candles) - len(corrected), 1: len(corrected)}
    assert chunks == 2  # one chunk per day


def _with_close(candle: Candle, close: float) -> Candle:
    return Candle(
        candle.exchange,
        candle.symbol,
        candle.timeframe,
        candle.ts,
        candle.open,
        max(candle.high, close),
        min(candle.low, close),
        close,
        candle.volume,
    )


def test_continuous_aggregates_after_refresh_equal_the_date_bin_computation(ts_engine: Engine) -> None:
    exchange, symbol = "ts_cagg", "BTC/USDT"
    start = _midnight(3) - timedelta(minutes=7)  # not bucket-aligned: the first buckets are partial
    candles = make_candles(exchange, symbol, start, 2 * 1440 + 50, seed=3)
    # Native 5m candles in the same table must not leak into aggregates derived from 1m.
    native_5m = make_candles(exchange, symbol, _midnight(3), 100, seed=4, timeframe="5m", missing=0.0)
    _write(ts_engine, candles + native_5m)

    with ts_engine.connect() as conn:
        refresh_jobs = {v: job_ids(conn, "policy_refresh_continuous_aggregate", v)[0] for v in VIEWS}
        # Real-time aggregation: correct before any refresh, nothing materialized yet.
        assert _materialized_rows(conn, "candles_5m", exchange) == 0
        _assert_both_paths_match_reference(conn, exchange, symbol, candles, _midnight(4), _midnight(0))
    for job in refresh_jobs.values():
        _run_job(ts_engine, job)

    with ts_engine.connect() as conn:
        for view in VIEWS:
            assert _materialized_rows(conn, view, exchange) > 0, view
        _assert_both_paths_match_reference(conn, exchange, symbol, candles, _midnight(4), _midnight(0))
        # Unaligned bounds select the same buckets on both paths.
        odd_start, odd_end = _midnight(2) + timedelta(minutes=13), _midnight(1) + timedelta(hours=5, minutes=1)
        _assert_both_paths_match_reference(conn, exchange, symbol, candles, odd_start, odd_end)
        hourly = read_aggregated(conn, exchange, symbol, "1h", _midnight(2), _midnight(1))
        assert len(hourly) == 24 and all(0 < h.candle_count <= 60 for h in hourly)


def test_rows_below_the_watermark_show_after_the_policy_or_refresh_aggregates(ts_engine: Engine) -> None:
    exchange, symbol = "ts_late", "SOL/USDT"
    recent = make_candles(exchange, symbol, _midnight(2), 1440, seed=5)
    _write(ts_engine, recent)
    with ts_engine.connect() as conn:
        assert refresh_aggregates(conn, _midnight(3), _midnight(0)) == sorted(VIEWS, key=_view_order)

    # A late correction inside the materialized range, and a backfill of history a month back.
    late = replace(recent[100], volume=recent[100].volume + 100.0)
    history = make_candles(exchange, symbol, _midnight(30), 720, seed=6)
    _write(ts_engine, [late, *history])
    candles = [late if c.ts == late.ts else c for c in recent] + history
    month = (_midnight(31), _midnight(0))
    with ts_engine.connect() as conn:
        stale = read_aggregated(conn, exchange, symbol, "1h", *month, continuous=True)
        assert stale != reference_aggregate(candles, "1h", *month)  # materialized buckets lag until refreshed
        assert read_aggregated(conn, exchange, symbol, "1h", _midnight(30), _midnight(29)) == []
        (hourly_job,) = job_ids(conn, "policy_refresh_continuous_aggregate", "candles_1h")
    _run_job(ts_engine, hourly_job)  # the policy has no lower bound: it picks up the old backfill too
    with ts_engine.connect() as conn:
        assert read_aggregated(conn, exchange, symbol, "1h", *month) == reference_aggregate(candles, "1h", *month)
        conn.rollback()
        refresh_aggregates(conn)
        _assert_both_paths_match_reference(conn, exchange, symbol, candles, *month)


def _view_order(view: str) -> int:
    return [aggregate_view(tf) for tf in AGGREGATES].index(view)


def test_compression_policy_compresses_old_chunks_and_upserts_still_land(ts_engine: Engine) -> None:
    exchange, symbol = "ts_compress", "BTC/USDT"
    first_day = _midnight(COMPRESS_AFTER.days + 5)
    candles = make_candles(exchange, symbol, first_day, 2 * 1440, seed=7, missing=0.05)
    _write(ts_engine, candles)
    with ts_engine.connect() as conn:
        (job,) = job_ids(conn, "policy_compression", "candles")
    _run_job(ts_engine, job)

    window = {"a": first_day, "b": first_day + timedelta(days=2)}
    chunks_sql = text(
        "SELECT count(*) FILTER (WHERE is_compressed), count(*) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'candles' AND range_start >= :a AND range_end <= :b"
    )
    with ts_engine.connect() as conn:
        assert tuple(conn.execute(chunks_sql, window).one()) == (2, 2)
    present = {c.ts for c in candles}
    gap = next(first_day + timedelta(minutes=i) for i in range(1440) if first_day + timedelta(minutes=i) not in present)
    new_row = Candle(exchange, symbol, "1m", gap, 900.0, 901.0, 899.0, 900.5, 3.0)
    correction = _with_close(candles[10], candles[10].close + 1.0)
    assert _write(ts_engine, [correction, new_row]) == (1, 1)

    with ts_engine.connect() as conn:
        stored = conn.execute(
            text("SELECT close, revision FROM candles WHERE exchange = :e AND symbol = :s AND ts = :ts"),
            {"e": exchange, "s": symbol, "ts": correction.ts},
        ).one()
        assert tuple(stored) == (correction.close, 1)
        count = conn.execute(text("SELECT count(*) FROM candles WHERE exchange = :e"), {"e": exchange})
        assert count.scalar_one() == len(candles) + 1
        merged = [correction if c.ts == correction.ts else c for c in candles] + [new_row]
        conn.rollback()
        refresh_aggregates(conn, first_day, first_day + timedelta(days=2))  # reads the compressed chunks
        day = read_aggregated(conn, exchange, symbol, "1d", first_day, first_day + timedelta(days=2))
        assert day == reference_aggregate(merged, "1d", first_day, first_day + timedelta(days=2))


def test_retention_drops_old_chunks_schedules_a_policy_and_the_derived_candles_follow(
    ts_engine: Engine,
) -> None:
    exchange, symbol = "ts_retention", "BTC/USDT"
    old = make_candles(exchange, symbol, _midnight(100), 1440, seed=8, missing=0.0)
    recent = make_candles(exchange, symbol, _midnight(1), 600, seed=9, missing=0.0)
    _write(ts_engine, old + recent)
    old_day = (_midnight(100), _midnight(99))
    with ts_engine.connect() as conn:
        refresh_aggregates(conn)
        assert len(read_aggregated(conn, exchange, symbol, "1d", *old_day)) == 1

    with ts_engine.begin() as conn:
        with pytest.raises(ConfigurationError, match="positive"):
            apply_retention(conn, timedelta(0))
        result = apply_retention(conn, timedelta(days=60))
    assert result.mode is StorageMode.TIMESCALE and result.policy_scheduled
    assert result.chunks_dropped >= 1 and result.rows_deleted is None
    with ts_engine.connect() as conn:
        left = conn.execute(text("SELECT min(ts), count(*) FROM candles WHERE exchange = :e"), {"e": exchange})
        oldest, count = left.one()
        assert count == len(recent) and oldest == recent[0].ts
        (job,) = job_ids(conn, "policy_retention", "candles")
        drop_after = conn.execute(
            text("SELECT config->>'drop_after' FROM timescaledb_information.jobs WHERE job_id = :j"), {"j": job}
        ).scalar_one()
        assert drop_after == "60 days"
        (daily_job,) = job_ids(conn, "policy_refresh_continuous_aggregate", "candles_1d")
    _run_job(ts_engine, daily_job)
    with ts_engine.connect() as conn:
        # Same as the plain branch, where the views compute from what the DELETE left.
        assert read_aggregated(conn, exchange, symbol, "1d", *old_day, continuous=True) == []
        assert read_aggregated(conn, exchange, symbol, "1d", *old_day, continuous=False) == []

    _write(ts_engine, old[:5])  # old rows re-ingested: the scheduled policy drops them again
    _run_job(ts_engine, job)
    with ts_engine.connect() as conn:
        stale_rows = conn.execute(
            text("SELECT count(*) FROM candles WHERE exchange = :e AND ts < :c"),
            {"e": exchange, "c": result.cutoff},
        )
        assert stale_rows.scalar_one() == 0
