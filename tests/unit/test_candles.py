from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.candles import (
    CANDLE_COLUMNS,
    CANDLE_SCHEMA,
    PER_SYMBOL_SCHEMA,
    RECEIVED_SCHEMA,
    QuarantinePayload,
    ReasonCode,
    ValidationResult,
    parse_ccxt_rows,
    validate_frame,
    validate_rows,
    with_series,
)
from domain.errors import InvalidDataError

M = 60_000
T0 = 1_700_000_040_000  # a minute boundary
NOW = T0 + 1_000 * M


def ok(i: int, price: float = 100.0) -> list[float | int]:
    """A valid 1m candle i minutes after T0."""
    return [T0 + i * M, price, price + 1.0, price - 1.0, price + 0.5, 10.0]


def walk(n: int, *, start: int = 0, seed: int = 1) -> list[list[float | int]]:
    """n valid, realistic consecutive candles (random walk, small ranges)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    rows: list[list[float | int]] = []
    for i in range(n):
        o, c = float(open_[i]), float(close[i])
        rows.append([T0 + (start + i) * M, o, max(o, c) * 1.0005, min(o, c) * 0.9995, c, 5.0])
    return rows


def reasons(result: ValidationResult) -> dict[int, str]:
    return dict(zip(result.rejected["row_index"].to_list(), result.rejected["reason"].to_list(), strict=True))


# ---------------------------------------------------------------------------------------------- reason codes

BAD_ROWS: list[tuple[object, ReasonCode]] = [
    ([T0, 1.0, 2.0, 0.5], ReasonCode.SCHEMA),
    ("not a row", ReasonCode.SCHEMA),
    (None, ReasonCode.SCHEMA),
    ([T0, 100.0, 101.0, 99.0, 100.5, 10.0, 7], ReasonCode.SCHEMA),
    ([T0, None, 101.0, 99.0, 100.5, 10.0], ReasonCode.TYPE),
    ([T0, "abc", 101.0, 99.0, 100.5, 10.0], ReasonCode.TYPE),
    ([T0, 100.0, 101.0, 99.0, 100.5, True], ReasonCode.TYPE),
    ([T0 + 0.5, 100.0, 101.0, 99.0, 100.5, 10.0], ReasonCode.TYPE),
    (["yesterday", 100.0, 101.0, 99.0, 100.5, 10.0], ReasonCode.TYPE),
    ([T0, 100.0, 101.0, 99.0, math.nan, 10.0], ReasonCode.NOT_FINITE),
    ([T0, 100.0, math.inf, 99.0, 100.5, 10.0], ReasonCode.NOT_FINITE),
    ([math.nan, 100.0, 101.0, 99.0, 100.5, 10.0], ReasonCode.NOT_FINITE),
    ([T0, 100.0, 101.0, 0.0, 100.5, 10.0], ReasonCode.NON_POSITIVE_PRICE),
    ([T0, -100.0, 101.0, 99.0, 100.5, 10.0], ReasonCode.NON_POSITIVE_PRICE),
    ([T0, 100.0, 101.0, 99.0, 100.5, -0.1], ReasonCode.NEGATIVE_VOLUME),
    ([T0, 100.0, 99.0, 99.5, 99.8, 10.0], ReasonCode.HIGH_BELOW_LOW),
    ([T0, 100.0, 100.2, 99.0, 100.5, 10.0], ReasonCode.HIGH_BELOW_OPEN_CLOSE),
    ([T0, 100.0, 101.0, 100.2, 100.5, 10.0], ReasonCode.LOW_ABOVE_OPEN_CLOSE),
    ([T0 + 1, 100.0, 101.0, 99.0, 100.5, 10.0], ReasonCode.MISALIGNED_TS),
    ([NOW + M, 100.0, 101.0, 99.0, 100.5, 10.0], ReasonCode.FUTURE_TS),
    ([NOW, 100.0, 101.0, 99.0, 100.5, 10.0], ReasonCode.OPEN_CANDLE),
]


@pytest.mark.parametrize(("row", "expected"), BAD_ROWS, ids=[f"{c.value}-{i}" for i, (_, c) in enumerate(BAD_ROWS)])
def test_each_row_rule_rejects_with_its_reason(row: object, expected: ReasonCode) -> None:
    result = validate_rows([ok(0), row, ok(1)], timeframe="1m", now_ms=NOW)
    assert reasons(result) == {1: expected.value}
    assert result.counts == {expected: 1}
    assert result.accepted.height == 2
    detail = result.rejected["detail"][0]
    assert detail, "every rejection explains itself"
    payload = QuarantinePayload.model_validate_json(result.rejected["raw"][0])
    expected_raw = QuarantinePayload.from_values(row)
    assert json.loads(payload.model_dump_json()) == json.loads(expected_raw.model_dump_json())


def test_open_candle_boundary_is_exact() -> None:
    # The candle opening one timeframe before now has just closed; the one opening at now is still open.
    closed = [NOW - M, 1.0, 2.0, 0.5, 1.5, 1.0]
    still_open = [NOW, 1.0, 2.0, 0.5, 1.5, 1.0]
    result = validate_rows([closed, still_open], timeframe="1m", now_ms=NOW)
    assert result.accepted["ts"].to_list() == [NOW - M]
    assert reasons(result) == {1: ReasonCode.OPEN_CANDLE.value}


def test_detail_names_every_failed_rule_and_the_values() -> None:
    result = validate_rows([[T0 + 7, 100.0, 99.0, 99.5, 99.8, -1.0]], timeframe="1m", now_ms=NOW)
    assert result.rejected["reason"][0] == ReasonCode.NEGATIVE_VOLUME.value
    detail = result.rejected["detail"][0]
    assert "volume -1.0 < 0" in detail
    assert {"HIGH_BELOW_LOW", "HIGH_BELOW_OPEN_CLOSE", "MISALIGNED_TS"} <= set(detail.split("also ")[1].split(", "))


def test_numeric_strings_parse_like_ccxt_safe_number() -> None:
    result = validate_rows([["1700000040000", "100.0", "101", "99", "100.5", "3"]], timeframe="1m", now_ms=NOW)
    assert result.accepted.rows() == [(T0, 100.0, 101.0, 99.0, 100.5, 3.0)]


def test_raw_keeps_what_arrived_not_what_parsed() -> None:
    rows = [[T0, "100.0", "abc", 99, 100.5, None], [T0 + M, 100.0, 101.0, 99.0, math.nan, 1.0]]
    result = validate_rows(rows, timeframe="1m", now_ms=NOW)
    raws = [json.loads(r) for r in result.rejected["raw"]]
    assert raws[0] == {"row": [T0, "100.0", "abc", 99, 100.5, None]}
    assert raws[1] == {"row": [T0 + M, 100.0, 101.0, 99.0, "NaN", 1.0]}


# ------------------------------------------------------------------------------------ duplicates and order


def test_identical_copies_are_duplicates_and_conflicts_are_quarantined() -> None:
    a, b = ok(2), ok(2, price=200.0)
    rows = [ok(0), ok(1), ok(1), ok(1), a, a, b]
    result = validate_rows(rows, timeframe="1m", now_ms=NOW)
    assert result.duplicates_in_batch == 3  # two extra copies of ok(1), one of a
    assert result.accepted["ts"].to_list() == [T0, T0 + M]
    assert sorted(reasons(result).values()) == [ReasonCode.CONFLICTING_DUPLICATE.value] * 2
    assert result.rejected["ts"].to_list() == [T0 + 2 * M] * 2
    assert "2 different candles" in result.rejected["detail"][0]


def test_out_of_order_candles_are_accepted_and_sorted() -> None:
    rows = walk(50)
    shuffled = [rows[i] for i in np.random.default_rng(3).permutation(len(rows))]
    result = validate_rows(shuffled, timeframe="1m", now_ms=NOW)
    assert result.rejected.height == 0
    assert result.accepted["ts"].to_list() == [r[0] for r in rows]
    assert result.accepted.schema == CANDLE_SCHEMA


def test_symbol_column_makes_each_symbol_its_own_series() -> None:
    frame = pl.DataFrame(
        [["B/USDT", *ok(1)], ["A/USDT", *ok(1)], ["A/USDT", *ok(0)], ["A/USDT", *ok(0)], ["B/USDT", *ok(1, 5.0)]],
        schema=["symbol", *CANDLE_COLUMNS],
        orient="row",
    )
    result = validate_frame(frame, timeframe="1m", now_ms=NOW)
    assert result.accepted.select("symbol", "ts").rows() == [("A/USDT", T0), ("A/USDT", T0 + M)]
    assert result.duplicates_in_batch == 1
    assert result.rejected["symbol"].to_list() == ["B/USDT", "B/USDT"]
    assert result.per_symbol.schema == PER_SYMBOL_SCHEMA
    assert result.per_symbol.rows() == [("A/USDT", 3, 2, 0, 0, 1), ("B/USDT", 2, 0, 2, 0, 0)]


def test_per_symbol_for_a_single_series_batch() -> None:
    result = validate_rows([ok(0), ok(0), [T0 + 5, 1, 2, 0.5, 1, 1]], timeframe="1m", now_ms=NOW)
    assert result.per_symbol.rows() == [(None, 3, 1, 1, 0, 1)]


# ------------------------------------------------------------------------------------------ price jumps


def spike_batch() -> list[list[float | int]]:
    rows = walk(40)
    last = rows[-1]
    rows.append([T0 + 40 * M, last[4], last[4] * 10, last[4], last[4] * 10, 5.0])  # a decimal-shift candle
    return rows


def test_price_jump_is_flagged_but_accepted_by_default() -> None:
    result = validate_rows(spike_batch(), timeframe="1m", now_ms=NOW)
    assert result.rejected.height == 0
    assert result.accepted.height == 41
    assert result.flagged["reason"].to_list() == [ReasonCode.PRICE_JUMP.value]
    assert result.flagged["ts"].to_list() == [T0 + 40 * M]
    assert "x ATR(14)" in result.flagged["detail"][0]


def test_price_jump_is_quarantined_on_request() -> None:
    result = validate_rows(spike_batch(), timeframe="1m", now_ms=NOW, quarantine_jumps=True)
    assert result.counts == {ReasonCode.PRICE_JUMP: 1}
    assert result.accepted.height == 40 and result.flagged.height == 0


def test_context_candles_let_the_first_candle_of_a_page_be_judged() -> None:
    history = walk(40)
    spike = spike_batch()[-1]
    context = pl.DataFrame(history, schema=list(CANDLE_COLUMNS), orient="row")
    alone = validate_rows([spike], timeframe="1m", now_ms=NOW)
    with_context = validate_rows([spike], timeframe="1m", now_ms=NOW, context=context)
    assert alone.flagged.height == 0  # no ATR without history
    assert with_context.flagged["ts"].to_list() == [spike[0]]


def test_jump_limit_grows_with_the_hole_before_the_candle_and_has_a_floor() -> None:
    rows = walk(40)
    c = float(rows[-1][4])
    move = c * 0.05  # a 5% candle: ~25-30x this walk's ATR (~0.18%)
    after_one_bar = [*rows, [T0 + 40 * M, c, c + move, c, c + move, 5.0]]
    after_a_day = [*rows, [T0 + 1_480 * M, c, c + move, c, c + move, 5.0]]
    now = T0 + 2_000 * M
    assert validate_rows(after_one_bar, timeframe="1m", now_ms=now, jump_atr_multiple=20).flagged.height == 1
    assert validate_rows(after_a_day, timeframe="1m", now_ms=now, jump_atr_multiple=20).flagged.height == 0
    floor = validate_rows(after_one_bar, timeframe="1m", now_ms=now, jump_atr_multiple=20, min_jump_fraction=0.06)
    assert floor.flagged.height == 0


# ------------------------------------------------------------------------------------ frames and helpers


def test_parse_keeps_every_row_and_marks_only_unparseable_ones() -> None:
    rows: list[object] = [ok(0), [T0, "x", 1, 1, 1, 1], 5, ok(1)]
    frame = parse_ccxt_rows(rows)
    assert frame.schema == RECEIVED_SCHEMA
    assert frame["row_index"].to_list() == [0, 1, 2, 3]
    assert frame["parse_error"].to_list() == [None, "TYPE", "SCHEMA", None]
    assert frame["raw"].is_null().to_list() == [True, False, False, True]
    assert parse_ccxt_rows([]).height == 0


def test_frames_of_foreign_dtypes_are_cast_and_bad_values_kept_raw() -> None:
    frame = pl.DataFrame(
        {
            "ts": [str(T0), str(T0 + M), "later"],
            "open": ["100", "1e2", "100"],
            "high": [101, 101, 101],
            "low": [99.0, 99.0, 99.0],
            "close": ["100.5", "n/a", "100.5"],
            "volume": [1, 2, 3],
        }
    )
    result = validate_frame(frame, timeframe="1m", now_ms=NOW)
    assert result.accepted["ts"].to_list() == [T0]
    assert reasons(result) == {1: "TYPE", 2: "TYPE"}
    assert json.loads(result.rejected["raw"][0])["row"][4] == "n/a"


def test_a_frame_without_candle_columns_is_refused() -> None:
    with pytest.raises(InvalidDataError, match="lacks column"):
        validate_frame(pl.DataFrame({"ts": [T0]}), timeframe="1m", now_ms=NOW)
    with pytest.raises(InvalidDataError):
        validate_rows([ok(0)], timeframe="7x", now_ms=NOW)


def test_empty_batch() -> None:
    result = validate_rows([], timeframe="1m", now_ms=NOW)
    assert (result.received, result.accepted.height, result.rejected.height, result.duplicates_in_batch) == (0, 0, 0, 0)


def test_with_series_adds_identity_columns() -> None:
    accepted = validate_rows([ok(0)], timeframe="1m", now_ms=NOW).accepted
    out = with_series(accepted, exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert out.columns == ["exchange", "symbol", "timeframe", *CANDLE_COLUMNS]
    assert out.row(0)[:3] == ("binance", "BTC/USDT", "1m")
    with pytest.raises(InvalidDataError):
        with_series(accepted, exchange="binance", timeframe="1m")


def test_result_refuses_to_lose_rows() -> None:
    empty = pl.DataFrame(schema=CANDLE_SCHEMA)
    with pytest.raises(AssertionError, match="lost rows"):
        ValidationResult(
            received=1,
            accepted=empty,
            rejected=empty,
            flagged=empty,
            duplicates_in_batch=0,
            counts={},
            per_symbol=empty,
        )


# ------------------------------------------------------------------------------------------- properties

finite = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)
value = st.one_of(
    finite,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.none(),
    st.sampled_from(["1.5", "abc", ""]),
    st.booleans(),
)
ts_value = st.one_of(
    st.integers(0, 30).map(lambda i: T0 + i * M),  # repeats make duplicates and conflicts likely
    st.integers(0, 30).map(lambda i: T0 + i * M + 7),
    st.sampled_from([NOW, NOW + M, NOW - M, math.nan, 1.5]),
)
good_row = st.builds(
    lambda ts, o, c, up, down, v: [ts, o, max(o, c) + up, max(min(o, c) - down, 1e-9), c, v],
    st.integers(0, 30).map(lambda i: T0 + i * M),
    finite,
    finite,
    st.floats(0, 10),
    st.floats(0, 10),
    st.floats(0, 1e6),
)
any_row = st.one_of(
    good_row,
    good_row,
    st.lists(value, min_size=6, max_size=6).flatmap(lambda vs: ts_value.map(lambda ts: [ts, *vs[1:]])),
    st.lists(value, min_size=0, max_size=8),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(any_row, max_size=60).flatmap(lambda rs: st.permutations(rs + rs[: len(rs) // 3])))
def test_every_received_row_is_accepted_duplicate_or_rejected(rows: list[object]) -> None:
    result = validate_rows(rows, timeframe="1m", now_ms=NOW, jump_atr_multiple=3.0, atr_period=3)
    assert result.received == len(rows)
    assert result.received == result.accepted.height + result.duplicates_in_batch + result.rejected.height
    assert sum(result.counts.values()) == result.rejected.height
    assert sorted(result.rejected["row_index"].to_list()) == result.rejected["row_index"].to_list()
    assert result.per_symbol["duplicates"].sum() == result.duplicates_in_batch

    accepted = result.accepted
    assert accepted["ts"].is_sorted() and accepted["ts"].n_unique() == accepted.height
    for ts, o, h, low, c, v in accepted.iter_rows():
        assert all(math.isfinite(x) for x in (o, h, low, c, v))
        assert min(o, h, low, c) > 0 and v >= 0
        assert h >= max(o, c) and low <= min(o, c)
        assert ts % M == 0 and ts + M <= NOW
    for raw in result.rejected["raw"]:
        QuarantinePayload.model_validate_json(raw)
    # Flags only ever point at accepted candles.
    assert set(result.flagged["ts"].to_list()) <= set(accepted["ts"].to_list())


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["A/X", "B/X", "C/X"]), good_row), max_size=80),
    jumpy=st.booleans(),
)
def test_a_multi_symbol_batch_equals_its_symbols_validated_one_by_one(rows, jumpy) -> None:
    def check(candles: pl.DataFrame) -> ValidationResult:
        return validate_frame(
            candles, timeframe="1m", now_ms=NOW, jump_atr_multiple=2.0 if jumpy else 40.0, atr_period=3
        )

    frame = pl.DataFrame(
        [[symbol, *row] for symbol, row in rows], schema=["symbol", *CANDLE_COLUMNS], orient="row"
    ).with_columns(pl.col("ts").cast(pl.Int64), pl.col(list(CANDLE_COLUMNS[1:])).cast(pl.Float64))
    together = check(frame)
    for symbol in ["A/X", "B/X", "C/X"]:
        alone = check(frame.filter(pl.col("symbol") == symbol).drop("symbol"))
        mine = together.accepted.filter(pl.col("symbol") == symbol).drop("symbol")
        assert mine.equals(alone.accepted)
        assert together.rejected.filter(pl.col("symbol") == symbol).height == alone.rejected.height
        assert together.flagged.filter(pl.col("symbol") == symbol).height == alone.flagged.height
    assert together.accepted.select("symbol", "ts").is_duplicated().sum() == 0


def test_parsed_pages_of_many_symbols_validate_in_one_call() -> None:
    pages: dict[str, list[object]] = {"A/X": [ok(1), ok(0), ok(0)], "B/X": [ok(0), [T0, "bad", 1, 1, 1, 1]], "C/X": []}
    batch = pl.concat([parse_ccxt_rows(rows, symbol=s) for s, rows in pages.items()])
    result = validate_frame(batch, timeframe="1m", now_ms=NOW)
    assert result.accepted.select("symbol", "ts").rows() == [("A/X", T0), ("A/X", T0 + M), ("B/X", T0)]
    assert result.duplicates_in_batch == 1
    # row_index is the position in the whole batch, and the raw row survives concatenation.
    assert result.rejected.select("row_index", "symbol", "reason").rows() == [(4, "B/X", "TYPE")]
    assert json.loads(result.rejected["raw"][0])["row"][1] == "bad"
