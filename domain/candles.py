"""The candle schema, ccxt rows -> frame, and vectorised validation of a batch (accepted / rejected).

Series identity. Exchange and timeframe are ARGUMENTS (a batch always comes from one exchange and one
timeframe; validation needs the timeframe). The symbol is an OPTIONAL COLUMN: a frame without ``symbol`` is
one series (a ccxt page); a frame with a ``symbol`` String column holds several series and every per-series
rule (duplicates, order, ATR) runs per symbol, vectorised, with ``symbol`` kept as the first column of every
output. `with_series` adds exchange/timeframe (and a fixed symbol) as columns where a COPY needs them.

Frames (all timestamps are integer milliseconds since the epoch, UTC, marking the candle open):

- ``CANDLE_SCHEMA``: ts Int64, open/high/low/close/volume Float64. `accepted` has these (after ``symbol``
  when present), sorted by (symbol,) ts, with unique (symbol,) ts.
- ``RECEIVED_SCHEMA``: the candle columns (nullable: a value that did not parse is null) plus ``row_index``
  (0-based position in the received batch; validation renumbers it by position in the frame it is given),
  ``raw`` (the row as received, QuarantinePayload JSON, only where the typed columns cannot reproduce it,
  else null), ``parse_error`` / ``parse_detail`` (a ReasonCode value and text for rows that did not even
  parse). `parse_ccxt_rows` produces it (optionally after a ``symbol`` column); `validate_frame` also takes
  a plain candle frame.
- ``REJECTED_SCHEMA``: row_index, (symbol,) the candle columns as parsed, ``reason`` (ReasonCode value),
  ``detail``, and ``raw`` (always set: QuarantinePayload JSON of the row as received, for the JSONB column).
- ``FLAGGED_SCHEMA``: row_index, (symbol,) ts, reason, detail of ACCEPTED candles carrying a warning.
- ``PER_SYMBOL_SCHEMA``: symbol (null for a one-series batch), received, accepted, rejected, flagged,
  duplicates: the data-quality counts per symbol.

Rules, in precedence order (a row gets the first reason that applies; the detail names the others):
SCHEMA, TYPE, NOT_FINITE, NON_POSITIVE_PRICE, NEGATIVE_VOLUME, HIGH_BELOW_LOW, HIGH_BELOW_OPEN_CLOSE,
LOW_ABOVE_OPEN_CLOSE, MISALIGNED_TS, FUTURE_TS (ts > now), OPEN_CANDLE (ts <= now < ts + timeframe), then
over the rows that passed: identical rows with the same ts are one candle (the extra copies are counted in
``duplicates_in_batch``, not rejected); distinct rows sharing a ts are all quarantined as
CONFLICTING_DUPLICATE (nothing says which is right; the candle is refetched later as a gap).
Out-of-order rows are fine: the output is sorted.

Price jumps. A candle whose true range (vs the previous close) exceeds ``jump_atr_multiple`` x the mean true
range of the ``atr_period`` candles before it, scaled by sqrt(bars elapsed) across holes, and also exceeds
``min_jump_fraction`` of the previous close, gets PRICE_JUMP. By default it is ACCEPTED and listed in
``flagged``: real markets gap and flash-crash, and losing a real candle is worse than storing a suspicious
one that stays visible. ``quarantine_jumps=True`` rejects it instead (then the candle after a one-bar spike
is judged against the spike's close and may be flagged too). The ATR uses the batch plus optional
``context`` candles (stored candles just before the batch), so the first candles of a page are judged too.

Invariant, for any batch: received = len(accepted) + duplicates_in_batch + len(rejected).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, cast

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from domain.errors import InvalidDataError
from domain.timeframes import timeframe_ms

__all__ = [
    "CANDLE_COLUMNS",
    "CANDLE_SCHEMA",
    "DEFAULT_ATR_PERIOD",
    "DEFAULT_JUMP_ATR_MULTIPLE",
    "DEFAULT_MIN_JUMP_FRACTION",
    "FLAGGED_SCHEMA",
    "PER_SYMBOL_SCHEMA",
    "RECEIVED_SCHEMA",
    "REJECTED_SCHEMA",
    "SYMBOL",
    "QuarantinePayload",
    "ReasonCode",
    "ValidationResult",
    "empty_candles",
    "parse_ccxt_rows",
    "validate_frame",
    "validate_rows",
    "with_series",
]

CANDLE_COLUMNS: Final = ("ts", "open", "high", "low", "close", "volume")
_PRICES: Final = ("open", "high", "low", "close")
_VALUES: Final = (*_PRICES, "volume")
_CANDLE_FIELDS: Final[list[tuple[str, pl.DataType]]] = [
    ("ts", pl.Int64()),
    *((name, pl.Float64()) for name in _VALUES),
]
_TEXT = pl.String()
CANDLE_SCHEMA: Final = pl.Schema(_CANDLE_FIELDS)
RECEIVED_SCHEMA: Final = pl.Schema(
    [
        ("row_index", pl.Int64()),
        *_CANDLE_FIELDS,
        ("raw", _TEXT),
        ("parse_error", _TEXT),
        ("parse_detail", _TEXT),
    ]
)
REJECTED_SCHEMA: Final = pl.Schema(
    [("row_index", pl.Int64()), *_CANDLE_FIELDS, ("reason", _TEXT), ("detail", _TEXT), ("raw", _TEXT)]
)
FLAGGED_SCHEMA: Final = pl.Schema([("row_index", pl.Int64()), ("ts", pl.Int64()), ("reason", _TEXT), ("detail", _TEXT)])
PER_SYMBOL_SCHEMA: Final = pl.Schema(
    [("symbol", _TEXT), *((n, pl.Int64()) for n in ("received", "accepted", "rejected", "flagged", "duplicates"))]
)
#: The optional series column of a multi-symbol batch.
SYMBOL: Final = "symbol"

#: A candle's true range may be this many times the mean true range of the candles before it (per
#: sqrt(bar) across holes) before it is flagged. Measured on the real candles in ../shared/data/candles
#: (47k candles, 1m-1h): with this multiple and the 2% floor below nothing is flagged; 20x with a 1% floor
#: flags 2. Fat fingers and decimal shifts are hundreds to thousands of times the ATR.
DEFAULT_JUMP_ATR_MULTIPLE: Final = 40.0
DEFAULT_ATR_PERIOD: Final = 14
#: Moves below this fraction of the previous close are never jumps (flat, illiquid books have ATR ~ 0).
DEFAULT_MIN_JUMP_FRACTION: Final = 0.02
_MAX_EXACT_MS: Final = 2**53  # float64 holds every integer below this exactly


class ReasonCode(StrEnum):
    """Why a received candle was rejected (or flagged). Stored as text in candle_quarantine.reason."""

    SCHEMA = "SCHEMA"  # the row is not a sequence of 6 values
    TYPE = "TYPE"  # a value is missing or not a number; a timestamp is not a whole number of ms
    NOT_FINITE = "NOT_FINITE"  # NaN or +/-inf
    NON_POSITIVE_PRICE = "NON_POSITIVE_PRICE"  # open, high, low or close <= 0
    NEGATIVE_VOLUME = "NEGATIVE_VOLUME"
    HIGH_BELOW_LOW = "HIGH_BELOW_LOW"
    HIGH_BELOW_OPEN_CLOSE = "HIGH_BELOW_OPEN_CLOSE"  # high < max(open, close)
    LOW_ABOVE_OPEN_CLOSE = "LOW_ABOVE_OPEN_CLOSE"  # low > min(open, close)
    MISALIGNED_TS = "MISALIGNED_TS"  # ts is not a multiple of the timeframe
    FUTURE_TS = "FUTURE_TS"  # ts > now
    OPEN_CANDLE = "OPEN_CANDLE"  # ts <= now < ts + timeframe: the candle has not closed yet
    CONFLICTING_DUPLICATE = "CONFLICTING_DUPLICATE"  # same ts, different values, in one batch
    PRICE_JUMP = "PRICE_JUMP"  # true range far beyond the recent ATR (flagged; rejected only on request)


RawScalar = int | float | str | bool | None


class QuarantinePayload(BaseModel):
    """A received row exactly as it came, JSON-safe: the `raw` JSONB of candle_quarantine.

    ``row`` is ``[ts, open, high, low, close, volume]`` in ccxt order (any length for a malformed row).
    Non-finite floats are the strings "NaN", "Infinity", "-Infinity" (JSON has no NaN); values of other
    types (nested lists, objects) are their repr.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    row: tuple[RawScalar, ...]

    @classmethod
    def from_values(cls, values: object) -> QuarantinePayload:
        """Wrap whatever arrived as one row (a sequence, or a lone value for a malformed row)."""
        items = list(values) if isinstance(values, list | tuple) else [values]
        return cls(row=tuple(_json_scalar(v) for v in items))


def _json_scalar(value: object) -> RawScalar:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value  # NaN/inf serialise as strings (ser_json_inf_nan)
    if isinstance(value, np.generic):
        return _json_scalar(value.item())
    return repr(value)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Outcome of validating one batch (see the module docstring for the frame schemas).

    accepted: (symbol,) CANDLE_SCHEMA, sorted, unique (symbol,) ts. rejected: REJECTED_SCHEMA, in received
    order. flagged: FLAGGED_SCHEMA, accepted candles with a warning. duplicates_in_batch: identical extra
    copies dropped. counts: rejected rows per reason. per_symbol: PER_SYMBOL_SCHEMA.
    """

    received: int
    accepted: pl.DataFrame
    rejected: pl.DataFrame
    flagged: pl.DataFrame
    duplicates_in_batch: int
    counts: Mapping[ReasonCode, int]
    per_symbol: pl.DataFrame

    def __post_init__(self) -> None:
        # A broken invariant means rows were lost or invented: fail loudly rather than store it.
        total = self.accepted.height + self.duplicates_in_batch + self.rejected.height
        if total != self.received:
            raise AssertionError(f"validation lost rows: received {self.received}, accounted for {total}")

    @property
    def quarantined(self) -> int:
        """Number of rejected rows (what goes to candle_quarantine)."""
        return self.rejected.height


def empty_candles() -> pl.DataFrame:
    """A frame with CANDLE_SCHEMA and no rows."""
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def with_series(frame: pl.DataFrame, *, exchange: str, timeframe: str, symbol: str | None = None) -> pl.DataFrame:
    """Prepend exchange, symbol, timeframe String columns (e.g. for a COPY). Without `symbol` the frame must
    already have a ``symbol`` column."""
    if symbol is None and SYMBOL not in frame.columns:
        raise InvalidDataError("with_series needs a symbol argument or a symbol column")
    sym = pl.lit(symbol, pl.String) if symbol is not None else pl.col(SYMBOL)
    return frame.select(
        pl.lit(exchange, pl.String).alias("exchange"),
        sym.alias(SYMBOL),
        pl.lit(timeframe, pl.String).alias("timeframe"),
        pl.exclude(SYMBOL),
    )


# ---------------------------------------------------------------------------------------------------------
# ccxt rows -> frame


def parse_ccxt_rows(rows: Sequence[object], *, symbol: str | None = None) -> pl.DataFrame:
    """ccxt OHLCV rows (``[ts_ms, open, high, low, close, volume]``) -> a RECEIVED_SCHEMA frame, one row per
    received row, never dropping any. With `symbol`, a ``symbol`` column comes first, so pages of many
    symbols can be concatenated and validated in one `validate_frame` call (much cheaper than one per page).

    Rows of plain ints/floats go through numpy in one piece (~2M rows/s). The others go row by row: numeric
    strings are parsed (as ccxt's own safe_number does); None, bools, other strings and objects become null
    with a TYPE parse error; a row that is not a 6-sequence gets SCHEMA. Such rows keep their raw values.
    """
    frame = _parse(rows)
    return frame if symbol is None else frame.select(pl.lit(symbol, pl.String).alias(SYMBOL), pl.all())


def _parse(rows: Sequence[object]) -> pl.DataFrame:
    if len(rows) == 0:
        return pl.DataFrame(schema=RECEIVED_SCHEMA)
    # Exact type checks (bool is an int subclass, numpy scalars are not plain) in one pass over the rows.
    loose = cast("Sequence[Any]", rows)
    plain = [type(r) in _SEQUENCES and len(r) == 6 and _PLAIN_TYPES.issuperset(map(type, r)) for r in loose]
    if all(plain):
        return _parse_matrix(np.array(rows, dtype=np.float64))
    plain_index = [i for i, is_plain in enumerate(plain) if is_plain]
    other_index = [i for i, is_plain in enumerate(plain) if not is_plain]
    parts = [_parse_row_by_row([rows[i] for i in other_index], np.array(other_index, dtype=np.int64))]
    if plain_index:
        matrix = np.array([rows[i] for i in plain_index], dtype=np.float64)
        parts.append(_parse_matrix(matrix, np.array(plain_index, dtype=np.int64)))
    return pl.concat(parts).sort("row_index") if len(parts) > 1 else parts[0]


_PLAIN_TYPES: Final = frozenset({int, float})
_SEQUENCES: Final = (list, tuple)


def _parse_matrix(matrix: np.ndarray, row_index: np.ndarray | None = None) -> pl.DataFrame:
    n = matrix.shape[0]
    if row_index is None:
        row_index = np.arange(n, dtype=np.int64)
    values = matrix.astype(np.float64, copy=False)
    if matrix.dtype.kind in "iu":
        ts = matrix[:, 0].astype(np.int64)
        bad_ts = np.zeros(n, dtype=bool)
    else:
        ts_f = values[:, 0]
        with np.errstate(invalid="ignore"):
            bad_ts = ~(np.isfinite(ts_f) & (ts_f == np.floor(ts_f)) & (np.abs(ts_f) < _MAX_EXACT_MS))
        ts = np.where(bad_ts, 0.0, ts_f).astype(np.int64)
    frame = pl.DataFrame(
        {
            "row_index": row_index,
            "ts": ts,
            **{name: values[:, j + 1] for j, name in enumerate(_VALUES)},
        }
    ).with_columns(
        pl.lit(None, pl.String).alias("raw"),
        pl.lit(None, pl.String).alias("parse_error"),
        pl.lit(None, pl.String).alias("parse_detail"),
    )
    if not bad_ts.any():
        return frame
    # Rare: timestamps that are NaN, fractional or huge. Keep their raw row; null the typed ts.
    idx = np.flatnonzero(bad_ts)
    raws, errors, details = [], [], []
    for i in idx:
        row = values[i].tolist()
        raws.append(QuarantinePayload.from_values(row).model_dump_json())
        code, detail = _ts_problem(row[0])
        errors.append(code.value)
        details.append(detail)
    patch = pl.DataFrame(
        {"row_index": row_index[idx], "raw": raws, "parse_error": errors, "parse_detail": details},
        schema={"row_index": pl.Int64, "raw": pl.String, "parse_error": pl.String, "parse_detail": pl.String},
    )
    return frame.with_columns(pl.when(pl.Series(bad_ts)).then(None).otherwise(pl.col("ts")).alias("ts")).update(
        patch, on="row_index"
    )


def _ts_problem(value: float) -> tuple[ReasonCode, str]:
    if not math.isfinite(value):
        return ReasonCode.NOT_FINITE, f"timestamp is {value}"
    return ReasonCode.TYPE, f"timestamp {value!r} is not a whole number of ms within +/-2**53"


def _parse_number(value: object) -> float | None:
    """A price/volume as float, or None when it is not a number (bool is not a number here)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _parse_ts(value: object) -> tuple[int | None, ReasonCode | None, str]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        as_int = int(value)
        if abs(as_int) < _MAX_EXACT_MS:
            return as_int, None, ""
        return None, ReasonCode.TYPE, f"timestamp {as_int} is out of range"
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return _parse_ts(int(value.strip()))
    number = _parse_number(value)
    if number is None:
        return None, ReasonCode.TYPE, f"timestamp {value!r} is not a number"
    if math.isfinite(number) and number == math.floor(number) and abs(number) < _MAX_EXACT_MS:
        return int(number), None, ""
    code, detail = _ts_problem(number)
    return None, code, detail


def _parse_row_by_row(rows: Sequence[object], row_index: np.ndarray) -> pl.DataFrame:
    n = len(rows)
    columns: dict[str, list[float | None]] = {name: [None] * n for name in _VALUES}
    ts_col: list[int | None] = [None] * n
    raw: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != 6:
            raw[i] = QuarantinePayload.from_values(row).model_dump_json()
            errors[i] = ReasonCode.SCHEMA.value
            size = len(row) if isinstance(row, list | tuple) else None
            details[i] = (
                f"expected 6 values [ts, open, high, low, close, volume], got {size}"
                if size is not None
                else f"expected a list of 6 values, got {type(row).__name__}"
            )
            continue
        plain = True  # the typed columns reproduce the row exactly: no need to keep it raw
        ts, code, detail = _parse_ts(row[0])
        ts_col[i] = ts
        problems = [detail] if code is not None else []
        plain = plain and type(row[0]) is int
        for name, value in zip(_VALUES, row[1:], strict=True):
            number = _parse_number(value)
            columns[name][i] = number
            plain = plain and (value is None or type(value) in (int, float))
            if number is None:
                problems.append(f"{name} {value!r} is not a number")
        if problems:
            errors[i] = (code or ReasonCode.TYPE).value
            details[i] = "; ".join(problems)
        if not plain or problems:
            raw[i] = QuarantinePayload.from_values(row).model_dump_json()
    return pl.DataFrame(
        {
            "row_index": row_index,
            "ts": ts_col,
            **columns,
            "raw": raw,
            "parse_error": errors,
            "parse_detail": details,
        },
        schema=RECEIVED_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------------------
# validation


def validate_rows(
    rows: Sequence[object],
    *,
    timeframe: str,
    now_ms: int,
    context: pl.DataFrame | None = None,
    jump_atr_multiple: float = DEFAULT_JUMP_ATR_MULTIPLE,
    atr_period: int = DEFAULT_ATR_PERIOD,
    min_jump_fraction: float = DEFAULT_MIN_JUMP_FRACTION,
    quarantine_jumps: bool = False,
) -> ValidationResult:
    """`parse_ccxt_rows` then `validate_frame` (see there): one page of one series."""
    return validate_frame(
        parse_ccxt_rows(rows),
        timeframe=timeframe,
        now_ms=now_ms,
        context=context,
        jump_atr_multiple=jump_atr_multiple,
        atr_period=atr_period,
        min_jump_fraction=min_jump_fraction,
        quarantine_jumps=quarantine_jumps,
    )


def validate_frame(
    candles: pl.DataFrame,
    *,
    timeframe: str,
    now_ms: int,
    context: pl.DataFrame | None = None,
    jump_atr_multiple: float = DEFAULT_JUMP_ATR_MULTIPLE,
    atr_period: int = DEFAULT_ATR_PERIOD,
    min_jump_fraction: float = DEFAULT_MIN_JUMP_FRACTION,
    quarantine_jumps: bool = False,
) -> ValidationResult:
    """Validate a batch; every received row ends up accepted, an in-batch duplicate, or rejected.

    candles: CANDLE_SCHEMA or RECEIVED_SCHEMA columns, optionally with a ``symbol`` column (then each symbol
    is its own series: duplicates, sorting and ATR are per symbol, and the outputs keep ``symbol`` first).
    Other numeric/string dtypes are cast; values that do not cast are TYPE rejects. timeframe: ccxt
    spelling ("1m"). now_ms: the current time, epoch ms. context: stored candles just before the batch
    (CANDLE_SCHEMA, plus ``symbol`` when the batch has it), only used for the ATR of price jumps.
    jump_atr_multiple, atr_period, min_jump_fraction, quarantine_jumps: see the module docstring.
    Raises InvalidDataError when the frame lacks a candle column or the timeframe is unknown.
    """
    step = timeframe_ms(timeframe)
    if atr_period < 1 or jump_atr_multiple <= 0 or min_jump_fraction < 0:
        raise InvalidDataError("need atr_period >= 1, jump_atr_multiple > 0 and min_jump_fraction >= 0")
    keys = [SYMBOL] if SYMBOL in candles.columns else []
    received = _normalise(candles, keys)
    checks = _row_checks(step, now_ms, keys)
    reason = pl.lit(None, pl.String)
    for code, failed in reversed(checks):
        reason = pl.when(failed).then(pl.lit(code.value)).otherwise(reason)
    checked = received.with_columns(reason.alias("reason"))
    # Most batches are clean: skip the split (two filters over the batch) when nothing failed.
    if checked["reason"].null_count() == checked.height:
        bad, good = checked.clear(), checked
    else:
        bad = checked.filter(pl.col("reason").is_not_null())
        good = checked.filter(pl.col("reason").is_null())
    good = _sorted(good.select("row_index", *keys, *CANDLE_COLUMNS), keys)

    duplicates, conflicting, good = _split_duplicates(good, keys)
    flags = _price_jumps(good, context, keys, step, jump_atr_multiple, atr_period, min_jump_fraction)
    columns = ["row_index", *keys, *CANDLE_COLUMNS, "reason", "detail"]
    parts: list[pl.DataFrame] = []
    if bad.height:
        parts.append(_explain_row_failures(bad, checks, step).select(columns))
    if conflicting.height:
        detail = _fmt("{} different candles with this ts in one batch", pl.len().over([*keys, "ts"]))
        parts.append(
            conflicting.with_columns(
                pl.lit(ReasonCode.CONFLICTING_DUPLICATE.value).alias("reason"), detail.alias("detail")
            ).select(columns)
        )
    if quarantine_jumps and flags.height:
        parts.append(good.join(flags.select("row_index", "reason", "detail"), on="row_index").select(columns))
        good = good.join(flags, on="row_index", how="anti")
        flags = flags.clear()
    if parts:
        rejected = (
            pl.concat(parts)
            .join(received.select("row_index", "raw"), on="row_index", how="left")
            .with_columns(pl.coalesce("raw", _payload_json()).alias("raw"))
            .sort("row_index")
        )
    else:
        rejected = good.clear().with_columns(
            *(pl.lit(None, pl.String).alias(name) for name in ("reason", "detail", "raw"))
        )
    counts = (
        {ReasonCode(code): int(n) for code, n in rejected.group_by("reason").len().sort("reason").iter_rows()}
        if rejected.height
        else {}
    )
    accepted = good.select(*keys, *CANDLE_COLUMNS)
    return ValidationResult(
        received=received.height,
        accepted=accepted,
        rejected=rejected,
        flagged=flags,
        duplicates_in_batch=duplicates,
        counts=counts,
        per_symbol=_per_symbol(received, accepted, rejected, flags, keys),
    )


def _sorted(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """`frame` sorted by (keys, ts). Pages usually arrive in order: an O(n) check avoids most sorts."""
    in_order = pl.col("ts").diff() >= 0
    for key in keys:
        previous = pl.col(key).shift(1)
        in_order = (pl.col(key) > previous) | ((pl.col(key) == previous) & in_order)
    if frame.height < 2 or frame.select(in_order.fill_null(True).all()).item():
        return frame
    if keys:
        # Sorting by a string key is slow (~0.7 s per 1M rows here); a hash partition plus an integer sort per
        # symbol is ~5x faster while the symbols are few.
        parts = frame.partition_by(keys, as_dict=True)
        if len(parts) <= 64:
            return pl.concat([parts[key].sort("ts") for key in sorted(parts)])
    return frame.sort([*keys, "ts"])


def _per_symbol(
    received: pl.DataFrame,
    accepted: pl.DataFrame,
    rejected: pl.DataFrame,
    flags: pl.DataFrame,
    keys: list[str],
) -> pl.DataFrame:
    """PER_SYMBOL_SCHEMA: the batch's counts per symbol (duplicates follow from the invariant)."""
    if not keys:
        totals = pl.DataFrame(
            {
                SYMBOL: [None],
                "received": [received.height],
                "accepted": [accepted.height],
                "rejected": [rejected.height],
                "flagged": [flags.height],
            },
            schema_overrides={SYMBOL: pl.String},
        )
    else:
        totals = received.group_by(SYMBOL).len("received")
        for name, frame in (("accepted", accepted), ("rejected", rejected), ("flagged", flags)):
            totals = totals.join(frame.group_by(SYMBOL).len(name), on=SYMBOL, how="left", nulls_equal=True)
    return (
        totals.with_columns(pl.col("received", "accepted", "rejected", "flagged").fill_null(0).cast(pl.Int64))
        .with_columns((pl.col("received") - pl.col("accepted") - pl.col("rejected")).alias("duplicates"))
        .select(PER_SYMBOL_SCHEMA.names())
        .sort(SYMBOL, nulls_last=True)
    )


def _normalise(candles: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Any accepted input shape -> RECEIVED_SCHEMA (+ symbol), casting what can be cast, noting what cannot."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise InvalidDataError(f"candle frame lacks column(s) {missing}; has {candles.columns}")
    present = set(candles.columns)
    # The position in THIS batch, even when the frame concatenates parsed pages that each counted from 0:
    # row_index is the join key between the checks below.
    frame = candles.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row_index"),
        *(pl.col(SYMBOL).cast(pl.String) for _ in keys),
        *CANDLE_COLUMNS,
        *(
            pl.col(n) if n in present else pl.lit(None, pl.String).alias(n)
            for n in ("raw", "parse_error", "parse_detail")
        ),
    )
    if all(frame.schema[name] == dtype for name, dtype in CANDLE_SCHEMA.items()):
        return frame
    return _coerce(frame, keys)


def _coerce(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Cast candle columns of foreign dtypes; values that do not cast become TYPE parse errors."""
    casts: list[pl.Expr] = []
    lost: list[pl.Expr] = []
    for name, dtype in CANDLE_SCHEMA.items():
        source = frame.schema[name]
        if source == pl.Datetime or source == pl.Date:
            cast = pl.col(name).dt.epoch("ms")
        elif name == "ts" and (source.is_float() or source == pl.String):
            as_float = pl.col(name).cast(pl.Float64, strict=False)
            whole = as_float.is_finite() & (as_float == as_float.floor()) & (as_float.abs() < _MAX_EXACT_MS)
            cast = pl.when(whole).then(as_float).cast(pl.Int64)
        elif source.is_numeric() or source == pl.String or source == pl.Null:
            cast = pl.col(name).cast(dtype, strict=False)
        else:
            raise InvalidDataError(f"candle column {name!r} has dtype {source}, expected {dtype}")
        casts.append(cast.alias(name))
        lost.append(pl.col(name).is_not_null() & cast.is_null())
    lost_any = pl.any_horizontal(lost)
    raw_row = pl.concat_str([pl.lit('{"row":['), *_quoted_strings(CANDLE_COLUMNS), pl.lit("]}")], separator="")
    return frame.select(
        pl.col("row_index").cast(pl.Int64),
        *keys,
        *casts,
        pl.when(lost_any & pl.col("raw").is_null()).then(raw_row).otherwise(pl.col("raw")).alias("raw"),
        pl.when(lost_any & pl.col("parse_error").is_null())
        .then(pl.lit(ReasonCode.TYPE.value))
        .otherwise(pl.col("parse_error"))
        .alias("parse_error"),
        pl.when(lost_any & pl.col("parse_detail").is_null())
        .then(pl.lit("a value does not convert to the candle schema"))
        .otherwise(pl.col("parse_detail"))
        .alias("parse_detail"),
    )


def _quoted_strings(names: Sequence[str]) -> list[pl.Expr]:
    """Each column as a JSON string value (or null), comma separated, for a raw row of foreign dtypes."""
    parts: list[pl.Expr] = []
    for i, name in enumerate(names):
        text = pl.col(name).cast(pl.String, strict=False)
        quoted = text.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
        parts.append(pl.when(text.is_null()).then(pl.lit("null")).otherwise(_fmt('"{}"', quoted)))
        if i < len(names) - 1:
            parts.append(pl.lit(","))
    return parts


def _row_checks(step: int, now_ms: int, keys: list[str]) -> list[tuple[ReasonCode, pl.Expr]]:
    """(reason, failed) per row-level rule, in precedence order. Nulls only survive the TYPE rule."""
    o, h, low, c, v, ts = (pl.col(n) for n in ("open", "high", "low", "close", "volume", "ts"))
    parse_error = pl.col("parse_error")
    return [
        (ReasonCode.SCHEMA, parse_error == ReasonCode.SCHEMA.value),
        (
            ReasonCode.TYPE,
            (parse_error == ReasonCode.TYPE.value)
            # A null the parser already explained (e.g. a NaN timestamp) keeps the parser's reason.
            | (parse_error.is_null() & pl.any_horizontal(pl.col(n).is_null() for n in [*keys, *CANDLE_COLUMNS])),
        ),
        (
            ReasonCode.NOT_FINITE,
            (parse_error == ReasonCode.NOT_FINITE.value) | ~pl.all_horizontal(pl.col(n).is_finite() for n in _VALUES),
        ),
        (ReasonCode.NON_POSITIVE_PRICE, pl.any_horizontal(pl.col(n) <= 0 for n in _PRICES)),
        (ReasonCode.NEGATIVE_VOLUME, v < 0),
        (ReasonCode.HIGH_BELOW_LOW, h < low),
        (ReasonCode.HIGH_BELOW_OPEN_CLOSE, h < pl.max_horizontal(o, c)),
        (ReasonCode.LOW_ABOVE_OPEN_CLOSE, low > pl.min_horizontal(o, c)),
        (ReasonCode.MISALIGNED_TS, ts % step != 0),
        (ReasonCode.FUTURE_TS, ts > now_ms),
        (ReasonCode.OPEN_CANDLE, (ts <= now_ms) & (ts + step > now_ms)),
    ]


def _detail_for(code: ReasonCode, step: int) -> pl.Expr:
    o, h, low, c, v, ts = (pl.col(n) for n in ("open", "high", "low", "close", "volume", "ts"))
    match code:
        case ReasonCode.SCHEMA | ReasonCode.TYPE:
            return pl.coalesce(pl.col("parse_detail"), pl.lit("a value is missing"))
        case ReasonCode.NOT_FINITE:
            return pl.coalesce(
                pl.col("parse_detail"), _fmt("non-finite value in o/h/l/c/v {}/{}/{}/{}/{}", o, h, low, c, v)
            )
        case ReasonCode.NON_POSITIVE_PRICE:
            return _fmt("price <= 0 in o/h/l/c {}/{}/{}/{}", o, h, low, c)
        case ReasonCode.NEGATIVE_VOLUME:
            return _fmt("volume {} < 0", v)
        case ReasonCode.HIGH_BELOW_LOW:
            return _fmt("high {} < low {}", h, low)
        case ReasonCode.HIGH_BELOW_OPEN_CLOSE:
            return _fmt("high {} < max(open {}, close {})", h, o, c)
        case ReasonCode.LOW_ABOVE_OPEN_CLOSE:
            return _fmt("low {} > min(open {}, close {})", low, o, c)
        case ReasonCode.MISALIGNED_TS:
            return _fmt(f"ts {{}} is {{}} ms past a {step} ms boundary", ts, ts % step)
        case ReasonCode.FUTURE_TS:
            return _fmt("ts {} is after now", ts)
        case ReasonCode.OPEN_CANDLE:
            return _fmt("candle {} closes at {}: still open", ts, ts + step)
        case _:
            return pl.lit("")


def _explain_row_failures(bad: pl.DataFrame, checks: list[tuple[ReasonCode, pl.Expr]], step: int) -> pl.DataFrame:
    """Detail text for rows failing row-level rules: the primary reason's values plus the other failures."""
    detail = pl.lit("", pl.String)
    present = set(bad["reason"].unique().to_list())  # build text only for the reasons that occur
    for code, _ in reversed(checks):
        if code.value in present:
            detail = pl.when(pl.col("reason") == code.value).then(_detail_for(code, step)).otherwise(detail)
    # Once a value is missing or NaN, the later comparisons mean nothing: name other failures only when the
    # primary reason left every value a finite number.
    unsound = pl.col("reason").is_in([ReasonCode.SCHEMA.value, ReasonCode.TYPE.value, ReasonCode.NOT_FINITE.value])
    others = pl.concat_str(
        [pl.when(failed & (pl.col("reason") != code.value)).then(pl.lit(code.value)) for code, failed in checks[3:]],
        separator=", ",
        ignore_nulls=True,
    )
    return bad.with_columns(
        pl.when(~unsound & (others != "")).then(_fmt("{}; also {}", detail, others)).otherwise(detail).alias("detail")
    )


def _split_duplicates(good: pl.DataFrame, keys: list[str]) -> tuple[int, pl.DataFrame, pl.DataFrame]:
    """(identical extra copies, conflicting rows, unique rows) of rows sorted by (symbol,) ts.

    On sorted rows a repeated (symbol, ts) is adjacent to its twin: O(n) comparisons find them, and only
    those few rows are grouped.
    """
    same_as_previous = pl.col("ts").diff() == 0
    for key in keys:
        same_as_previous = same_as_previous & (pl.col(key) == pl.col(key).shift(1))
    same_as_previous = same_as_previous.fill_null(False)
    if good.height < 2 or not good.select(same_as_previous.any()).item():
        return 0, good.clear(), good
    repeated = same_as_previous | same_as_previous.shift(-1).fill_null(False)
    marked = good.with_columns(repeated.alias("_repeated"))
    clash = marked.filter(pl.col("_repeated")).drop("_repeated")
    distinct = clash.unique(subset=[*keys, *CANDLE_COLUMNS], keep="first")
    still = pl.len().over([*keys, "ts"]) > 1
    keep = distinct.filter(~still)["row_index"].implode()
    # Filtering keeps the sorted order: no second sort of the whole batch.
    unique = marked.filter(~pl.col("_repeated") | pl.col("row_index").is_in(keep)).drop("_repeated")
    return clash.height - distinct.height, distinct.filter(still).sort("row_index"), unique


def _price_jumps(
    good: pl.DataFrame,
    context: pl.DataFrame | None,
    keys: list[str],
    step: int,
    multiple: float,
    period: int,
    min_fraction: float,
) -> pl.DataFrame:
    """FLAGGED rows for candles whose true range is far beyond the ATR before them (good is sorted)."""
    flagged_columns = ["row_index", *keys, "ts", "reason", "detail"]
    if good.height == 0:
        return good.select("row_index", *keys, "ts").with_columns(
            pl.lit(None, pl.String).alias("reason"), pl.lit(None, pl.String).alias("detail")
        )
    series = good
    if context is not None and context.height:
        missing = [c for c in (*keys, *CANDLE_COLUMNS) if c not in context.columns]
        if missing:
            raise InvalidDataError(f"context candles lack column(s) {missing}")
        first = good.group_by(keys).agg(pl.col("ts").min().alias("first_ts")) if keys else None
        tail = context.select(*keys, *(pl.col(n).cast(t) for n, t in CANDLE_SCHEMA.items()))
        if first is None:
            tail = tail.filter(pl.col("ts") < good["ts"].min()).sort("ts").tail(period + 1)
        else:
            tail = (
                tail.join(first, on=keys)
                .filter(pl.col("ts") < pl.col("first_ts"))
                .sort([*keys, "ts"])
                .group_by(keys, maintain_order=True)
                .tail(period + 1)
            )
        series = _sorted(
            pl.concat([tail.select(pl.lit(None, pl.Int64).alias("row_index"), *keys, *CANDLE_COLUMNS), series]),
            keys,
        )

    # Rows are sorted by (symbol,) ts, so each series is a contiguous block: shift within the block and
    # count the position inside it instead of hashing symbols in window functions. One select, then a filter.
    row = pl.int_range(pl.len())
    start = (pl.col(SYMBOL) != pl.col(SYMBOL).shift(1)).fill_null(True) if keys else row == 0
    prev_close = pl.when(~start).then(pl.col("close").shift(1))
    true_range = pl.max_horizontal(
        pl.col("high") - pl.col("low"),
        (pl.col("high") - prev_close).abs(),
        (pl.col("low") - prev_close).abs(),
    )
    position = row - pl.when(start).then(row).forward_fill()
    atr_before = pl.when(position >= period).then(true_range.rolling_mean(period).shift(1))
    # Across a hole of n bars a random walk moves ~sqrt(n) times as far as in one bar.
    bars = (pl.col("ts").diff() // step).clip(lower_bound=1).cast(pl.Float64)
    limit = pl.max_horizontal(multiple * atr_before * bars.sqrt(), min_fraction * prev_close)
    scored = series.select(
        "row_index", *keys, "ts", true_range.alias("tr"), atr_before.alias("atr"), limit.alias("limit")
    )
    jumps = scored.filter(
        pl.col("row_index").is_not_null() & pl.col("atr").is_not_null() & (pl.col("tr") > pl.col("limit"))
    )
    return jumps.with_columns(
        pl.lit(ReasonCode.PRICE_JUMP.value).alias("reason"),
        _fmt(
            f"true range {{}} is {{}}x ATR({period}) {{}} (limit {{}})",
            pl.col("tr"),
            (pl.col("tr") / pl.col("atr")).round(1),
            pl.col("atr"),
            pl.col("limit"),
        ).alias("detail"),
    ).select(flagged_columns)


def _json_number(name: str) -> pl.Expr:
    col = pl.col(name)
    if name == "ts":
        return pl.when(col.is_null()).then(pl.lit("null")).otherwise(col.cast(pl.String))
    return (
        pl.when(col.is_null())
        .then(pl.lit("null"))
        .when(col.is_nan())
        .then(pl.lit('"NaN"'))
        .when(col == math.inf)
        .then(pl.lit('"Infinity"'))
        .when(col == -math.inf)
        .then(pl.lit('"-Infinity"'))
        .otherwise(col.cast(pl.String))
    )


def _payload_json() -> pl.Expr:
    """QuarantinePayload JSON built from the typed columns (exact whenever `raw` was not needed)."""
    parts: list[pl.Expr] = [pl.lit('{"row":[')]
    for i, name in enumerate(CANDLE_COLUMNS):
        parts.append(_json_number(name))
        parts.append(pl.lit("," if i < len(CANDLE_COLUMNS) - 1 else "]}"))
    return pl.concat_str(parts, separator="")


def _fmt(template: str, *values: pl.Expr) -> pl.Expr:
    """Like pl.format, via concat_str: pl.format panics on some multi-chunk inputs in polars 2.1."""
    pieces = template.split("{}")
    if len(pieces) != len(values) + 1:
        raise ValueError(f"template {template!r} needs {len(pieces) - 1} values, got {len(values)}")
    parts: list[pl.Expr] = []
    for piece, value in zip(pieces, [*values, None], strict=True):
        if piece:
            parts.append(pl.lit(piece))
        if value is not None:
            parts.append(value.cast(pl.String))
    return pl.concat_str(parts, separator="")
