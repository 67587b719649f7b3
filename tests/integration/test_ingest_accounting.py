"""Nothing is lost: for any batch, received = inserted + revised + duplicates + quarantined, in the database."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from db.ingest import store_batch
from domain.candles import validate_rows

pytestmark = pytest.mark.integration
M = 60_000
T0 = 1_700_000_040_000
NOW = T0 + 100 * M + 30_000

values = st.one_of(
    st.floats(min_value=0.5, max_value=2.0),
    st.sampled_from([math.nan, math.inf, -1.0, 0.0]),
    st.none(),
    st.just("1.0"),
)
row = st.tuples(
    st.one_of(st.integers(90, 110).map(lambda i: T0 + i * M), st.just(T0 + 5 * M + 7)),
    values,
    values,
    values,
    values,
    values,
).map(list)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(row, max_size=40), st.lists(row, max_size=40))
def test_every_candle_is_stored_quarantined_or_counted(db: Engine, first, second) -> None:
    with db.begin() as conn:
        conn.execute(text("TRUNCATE candles, candle_quarantine"))
    stored = quarantined = 0
    for batch in (first, second, first):
        result = validate_rows(batch, timeframe="1m", now_ms=NOW)
        with db.begin() as conn:
            report = store_batch(conn, result, exchange="x", symbol="A/B", timeframe="1m", source="test")
        assert report.received == len(batch)
        assert report.inserted + report.revised + report.duplicates + report.quarantined == len(batch)
        stored += report.inserted
        quarantined += report.quarantined
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM candles")).scalar_one() == stored
        assert conn.execute(text("SELECT count(*) FROM candle_quarantine")).scalar_one() == quarantined


def test_reasons_and_raw_values_reach_the_quarantine(db: Engine) -> None:
    batch = [
        [T0, 1.0, 2.0, 0.5, 1.5, 10.0],
        [T0 + M, math.nan, 2.0, 0.5, 1.5, 10.0],
        [T0 + 2 * M, 1.0, 0.4, 0.5, 1.5, 10.0],
        [T0 + 3 * M + 1, 1.0, 2.0, 0.5, 1.5, 10.0],
        ["garbage"],
    ]
    result = validate_rows(batch, timeframe="1m", now_ms=NOW)
    with db.begin() as conn:
        report = store_batch(conn, result, exchange="x", symbol="A/B", timeframe="1m", source="binance:fetch_ohlcv")
    assert report.inserted == 1
    assert report.quarantined == 4
    with db.connect() as conn:
        rows = conn.execute(text("SELECT reason, raw, source FROM candle_quarantine ORDER BY id")).all()
    reasons = [r[0] for r in rows]
    assert set(reasons) == {"NOT_FINITE", "HIGH_BELOW_LOW", "MISALIGNED_TS", "SCHEMA"}
    assert all(r[2] == "binance:fetch_ohlcv" for r in rows)
    nan_row = next(r for r in rows if r[0] == "NOT_FINITE")
    assert nan_row[1]["row"][1] == "NaN"
