"""PostgreSQL binary COPY encoded and decoded with numpy, a whole batch at once.

A binary COPY stream is a 19-byte header, then per row an int16 field count and per field an int32 length and
the value, then an int16 -1 trailer; everything big-endian. When every field of a row has a fixed width (or,
for text, the same length across the rows of a group), a group of rows is one numpy structured array and
encoding is a single `tobytes()`: no Python work per row.

timestamptz travels as int64 microseconds since 2000-01-01 UTC; float8 as IEEE big-endian doubles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US_FROM_UNIX = 946_684_800_000_000


def ms_to_pg_us(ts_ms: np.ndarray) -> np.ndarray:
    """Epoch milliseconds to PostgreSQL timestamptz microseconds (since 2000-01-01)."""
    return ts_ms.astype(np.int64) * 1000 - PG_EPOCH_US_FROM_UNIX


def pg_us_to_ms(us: np.ndarray) -> np.ndarray:
    return (us.astype(np.int64) + PG_EPOCH_US_FROM_UNIX) // 1000


def encode_rows(
    text_values: Sequence[bytes], int16s: Sequence[np.ndarray], ts: np.ndarray, floats: Sequence[np.ndarray]
) -> bytes:
    """Encode one group of rows (no header/trailer).

    Each row is: the constant text fields `text_values` (same for every row of the group), then int16 columns,
    then one timestamptz column `ts` (epoch ms), then float8 columns. Returns the concatenated row bytes.
    """
    n = len(ts)
    fields: list[tuple[str, str] | tuple[str, str, int]] = [("nfields", ">i2")]
    for i, value in enumerate(text_values):
        fields += [(f"tl{i}", ">i4"), (f"t{i}", f"S{len(value)}")]
    for i in range(len(int16s)):
        fields += [(f"sl{i}", ">i4"), (f"s{i}", ">i2")]
    fields += [("tsl", ">i4"), ("ts", ">i8")]
    for i in range(len(floats)):
        fields += [(f"fl{i}", ">i4"), (f"f{i}", ">f8")]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["nfields"] = len(text_values) + len(int16s) + 1 + len(floats)
    for i, value in enumerate(text_values):
        rows[f"tl{i}"] = len(value)
        rows[f"t{i}"] = value
    for i, column in enumerate(int16s):
        rows[f"sl{i}"] = 2
        rows[f"s{i}"] = column
    rows["tsl"] = 8
    rows["ts"] = ms_to_pg_us(ts)
    for i, column in enumerate(floats):
        rows[f"fl{i}"] = 8
        rows[f"f{i}"] = column
    return rows.tobytes()


def decode_fixed(payload: bytes, layout: Sequence[str]) -> list[np.ndarray]:
    """Decode a binary COPY whose columns are all NOT NULL and fixed width.

    `layout` names each column's type: "int2", "int8", "float8" or "timestamptz" (returned as epoch ms).
    Returns one native-endian array per column.
    """
    if not payload.startswith(HEADER[:11]):
        raise ValueError("not a PostgreSQL binary COPY stream")
    ext_len = int.from_bytes(payload[15:19], "big")
    body = memoryview(payload)[19 + ext_len : len(payload) - 2]
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for i, kind in enumerate(layout):
        fields += [(f"l{i}", ">i4"), (f"c{i}", _WIRE[kind])]
    dtype = np.dtype(fields)
    if len(body) % dtype.itemsize:
        raise ValueError("binary COPY rows are not the expected fixed width (a NULL value?)")
    rows = np.frombuffer(body, dtype=dtype)
    out = []
    for i, kind in enumerate(layout):
        column = rows[f"c{i}"]
        out.append(pg_us_to_ms(column) if kind == "timestamptz" else column.astype(_NATIVE[kind]))
    return out


_WIRE = {"int2": ">i2", "int8": ">i8", "float8": ">f8", "timestamptz": ">i8"}
_NATIVE = {"int2": np.int16, "int8": np.int64, "float8": np.float64}
