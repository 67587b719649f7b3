"""Vectorised paper execution: many independent trades over one symbol's candles at once, for backtests.

The fill rules are those of :mod:`domain.execution` (entry at the next candle's open with slippage and fee,
stop first when stop and target share a candle, TP1 partial exit then break-even stop, TP2 for the rest);
:func:`simulate_trades` applies them with array operations instead of a per-candle loop, and a test holds its
results equal to :func:`domain.execution.enter`/:func:`domain.execution.step` trade by trade.

Units as in :mod:`domain.execution`: prices in quote currency per base unit, quantities in base units, P&L
and fees in quote currency, timestamps in epoch milliseconds (a candle's open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from domain.errors import InvalidDataError
from domain.execution import ExecutionModel, FillKind

__all__ = ["BarArrays", "simulate_trades"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class BarArrays:
    """Candles as equal-length float64 arrays (int64 ``ts_ms``), oldest first, for :func:`simulate_trades`."""

    ts_ms: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        *,
        ts: str = "ts",
        open_: str = "open",
        high: str = "high",
        low: str = "low",
        close: str = "close",
    ) -> BarArrays:
        """Take the columns of a candle frame (one symbol, sorted by time) as arrays."""
        return cls(
            frame[ts].cast(pl.Int64).to_numpy(),
            frame[open_].cast(pl.Float64).to_numpy(),
            frame[high].cast(pl.Float64).to_numpy(),
            frame[low].cast(pl.Float64).to_numpy(),
            frame[close].cast(pl.Float64).to_numpy(),
        )


_BLOCK: Final = 256  # bars per block of precomputed maxima: scans skip quiet stretches a block at a time
_MAX_CELLS: Final = 1 << 22  # bound on trades x window cells gathered at once (~32 MB of float64)


class _Track:
    """A series plus its per-block maxima, answering 'first index >= start with x >= threshold'."""

    def __init__(self, x: FloatArray) -> None:
        self.x = x
        n_blocks = -(-len(x) // _BLOCK)
        padded = np.full(n_blocks * _BLOCK, -np.inf)
        padded[: len(x)] = x
        self.block_max: FloatArray = padded.reshape(n_blocks, _BLOCK).max(axis=1)

    def first_at_or_above(self, start: IntArray, threshold: FloatArray) -> IntArray:
        """Per row, the smallest ``i >= start`` with ``x[i] >= threshold``; ``len(x)`` when none."""
        n = len(self.x)
        out = np.full(len(start), n, dtype=np.int64)
        live = np.flatnonzero(start < n)
        if live.size == 0:
            return out
        # 1. the rest of the start's own block
        block_end = np.minimum((start[live] // _BLOCK + 1) * _BLOCK, n)
        first = _scan(self.x, start[live], block_end, threshold[live], _BLOCK)
        out[live] = np.where(first >= 0, first, n)
        # 2. whole blocks, widening the window while trades stay unresolved
        pending = live[first < 0]
        n_blocks = len(self.block_max)
        lo = start[pending] // _BLOCK + 1
        found_block = np.full(len(pending), -1, dtype=np.int64)
        rows = np.arange(len(pending))
        width = 8
        while rows.size:
            hit = _scan(self.block_max, lo[rows], np.full(rows.size, n_blocks), threshold[pending[rows]], width)
            found_block[rows[hit >= 0]] = hit[hit >= 0]
            lo[rows] += width
            rows = rows[(hit < 0) & (lo[rows] < n_blocks)]
            width = min(width * 2, max(8, _MAX_CELLS // max(rows.size, 1)))
        # 3. inside the block that holds the first hit
        has = found_block >= 0
        begin = found_block[has] * _BLOCK
        inner = _scan(self.x, begin, np.minimum(begin + _BLOCK, n), threshold[pending[has]], _BLOCK)
        out[pending[has]] = inner
        return out


def _tp1_quantities(quantity: FloatArray, fraction: float, lot_step: float) -> FloatArray:
    """``domain.execution._tp1_quantity`` over an array, with the same float operations (results must be equal)."""
    part = quantity * fraction
    if lot_step > 0:
        rounded = np.floor(part / lot_step) * lot_step
        part = np.where(rounded > part, rounded - lot_step, rounded)
    return np.where((part <= 0) | (part >= quantity), quantity, part)


def _scan(x: FloatArray, start: IntArray, end: IntArray, threshold: FloatArray, width: int) -> IntArray:
    """First ``i`` in ``[start, min(start + width, end))`` with ``x[i] >= threshold``, else -1, per row."""
    out = np.full(len(start), -1, dtype=np.int64)
    offsets = np.arange(width, dtype=np.int64)
    chunk = max(1, _MAX_CELLS // width)
    for a in range(0, len(start), chunk):
        s, e, t = start[a : a + chunk], end[a : a + chunk], threshold[a : a + chunk]
        idx = s[:, None] + offsets
        hit = (idx < e[:, None]) & (x[np.minimum(idx, len(x) - 1)] >= t[:, None])
        anyhit = hit.any(axis=1)
        out[a : a + chunk] = np.where(anyhit, s + hit.argmax(axis=1), -1)
    return out


def simulate_trades(
    bars: BarArrays,
    *,
    signal_idx: npt.ArrayLike,
    side: npt.ArrayLike,
    quantity: npt.ArrayLike,
    stop: npt.ArrayLike,
    tp1: npt.ArrayLike,
    tp2: npt.ArrayLike,
    model: ExecutionModel | None = None,
    lot_step: float = 0.0,
) -> pl.DataFrame:
    """Simulate many independent trades over one symbol's candles, with the rules of :func:`domain.execution.step`.

    Per trade: ``signal_idx`` (int, the bar the signal closed on; entry at ``signal_idx + 1``), ``side``
    (+1 long, -1 short), ``quantity`` (base units), ``stop``/``tp1``/``tp2`` (quote prices). Exits are found by
    a blocked vectorised search for the first bar crossing each level, so the cost grows with the number of
    trades and the length of their holds, not with the number of trade x bar pairs.

    Returns one row per trade, in input order: ``status`` VOID (no next candle, or the entry would not lie
    between stop and TP1), OPEN (still open at the last bar) or CLOSED; ``entry_idx``/``tp1_idx``/``exit_idx``
    (null when not applicable), ``entry_ts_ms``/``exit_ts_ms``, ``entry_price``, ``quantity``, ``tp1_quantity``,
    ``exit_kind``, ``exit_price`` (the final fill), ``gross_pnl`` (realised), ``fees``, ``net_pnl``,
    ``unrealised_pnl`` (open quantity at the last close), ``initial_risk`` and ``r_multiple`` (closed only).
    """
    model = model or ExecutionModel()
    sig = np.asarray(signal_idx, dtype=np.int64)
    d = np.asarray(side, dtype=np.int64)
    qty, stp, t1p, t2p = (np.asarray(a, dtype=np.float64) for a in (quantity, stop, tp1, tp2))
    k, n = len(sig), len(bars.open)
    if n == 0:
        raise InvalidDataError("simulate_trades: no candles")
    if any(len(a) != k for a in (d, qty, stp, t1p, t2p)):
        raise InvalidDataError("simulate_trades: per-trade arrays differ in length")
    if not np.isin(d, (1, -1)).all():
        raise InvalidDataError("simulate_trades: side must be +1 (long) or -1 (short)")
    if not (np.isfinite(qty).all() and (qty > 0).all() and (sig >= 0).all()):
        raise InvalidDataError("simulate_trades: quantities must be finite and > 0, signal_idx >= 0")
    if not ((d * stp < d * t1p) & (d * t1p <= d * t2p)).all():
        raise InvalidDataError("simulate_trades: need stop < tp1 <= tp2 (long) or stop > tp1 >= tp2 (short)")

    entry_idx = sig + 1
    has_bar = entry_idx < n
    e = np.minimum(entry_idx, n - 1)
    entry = bars.open[e] * (1.0 + d * model.slip)
    valid = has_bar & (d * (entry - stp) > 0) & (d * (entry - t1p) < 0)

    # A long's favourable extreme is the high and its adverse one the low; a short's the reverse. Lows are
    # negated so that every search is "first x >= threshold".
    highs, neg_lows = _Track(bars.high), _Track(-bars.low)
    tracks = {1: (highs, neg_lows), -1: (neg_lows, highs)}
    stop_i = np.full(k, n, dtype=np.int64)
    tp1_i, tp2_i, be_i = stop_i.copy(), stop_i.copy(), stop_i.copy()
    for sign, (fav, adv) in tracks.items():
        rows = np.flatnonzero(valid & (d == sign))
        stop_i[rows] = adv.first_at_or_above(e[rows], -sign * stp[rows])
        tp1_i[rows] = fav.first_at_or_above(e[rows], sign * t1p[rows])
        tp2_i[rows] = fav.first_at_or_above(e[rows], sign * t2p[rows])
        be_i[rows] = adv.first_at_or_above(tp1_i[rows] + 1, -sign * entry[rows])

    q1 = _tp1_quantities(qty, model.tp1_fraction, lot_step)
    stopped = valid & (stop_i < n) & (stop_i <= tp1_i)
    tp1_hit = valid & ~stopped & (tp1_i < n)
    all_at_tp1 = tp1_hit & (q1 == qty)
    tp2_same = tp1_hit & ~all_at_tp1 & (tp2_i == tp1_i)
    phase_b = tp1_hit & ~all_at_tp1 & ~tp2_same
    be_stopped = phase_b & (be_i < n) & (be_i <= tp2_i)
    tp2_later = phase_b & ~be_stopped & (tp2_i < n)

    def stop_fill(level: FloatArray, at: IntArray) -> FloatArray:
        reference = d * np.minimum(d * bars.open[np.minimum(at, n - 1)], d * level)
        return np.asarray(reference * (1.0 - d * model.slip), dtype=np.float64)

    rest = qty - q1
    exit_idx = np.full(k, -1, dtype=np.int64)
    exit_px = np.full(k, np.nan)
    exit_kind = np.full(k, None, dtype=object)
    gross = np.zeros(k)
    fees = np.where(valid, entry * qty * model.fee_rate, 0.0)
    open_qty = np.where(valid, qty, 0.0)

    def book(mask: npt.NDArray[np.bool_], at: IntArray, price: FloatArray, q: FloatArray, kind: FillKind) -> None:
        exit_idx[mask] = at[mask]
        exit_px[mask] = price[mask]
        exit_kind[mask] = kind.value
        gross[mask] += d[mask] * (price[mask] - entry[mask]) * q[mask]
        fees[mask] += price[mask] * q[mask] * model.fee_rate
        open_qty[mask] -= q[mask]

    book(stopped, stop_i, stop_fill(stp, stop_i), qty, FillKind.STOP)
    book(tp1_hit, tp1_i, t1p, q1, FillKind.TP1)
    book(tp2_same, tp1_i, t2p, rest, FillKind.TP2)
    book(be_stopped, be_i, stop_fill(entry, be_i), rest, FillKind.BREAKEVEN_STOP)
    book(tp2_later, tp2_i, t2p, rest, FillKind.TP2)
    closed = stopped | all_at_tp1 | tp2_same | be_stopped | tp2_later
    status = np.where(~valid, "VOID", np.where(closed, "CLOSED", "OPEN"))
    exit_kind[~closed] = None  # an open trade's TP1 is not its exit
    risk = np.where(valid, qty * np.abs(entry - stp), np.nan)
    net = gross - fees
    last_close = bars.close[-1]
    unrealised = np.where(valid & ~closed, d * (last_close - entry) * open_qty, 0.0)

    def idx_col(name: str, values: IntArray, present: npt.NDArray[np.bool_]) -> pl.Series:
        return pl.Series(name, np.where(present, values, 0)).set(pl.Series(~present), None)

    tp1_present = tp1_hit
    frame = pl.DataFrame(
        [
            pl.Series("signal_idx", sig),
            pl.Series("side", d.astype(np.int8)),
            pl.Series("status", status),
            idx_col("entry_idx", entry_idx, valid),
            idx_col("entry_ts_ms", bars.ts_ms[e], valid),
            pl.Series("entry_price", np.where(valid, entry, np.nan)),
            pl.Series("quantity", qty),
            idx_col("tp1_idx", tp1_i, tp1_present),
            pl.Series("tp1_quantity", np.where(tp1_present, q1, 0.0)),
            idx_col("exit_idx", exit_idx, closed),
            idx_col("exit_ts_ms", bars.ts_ms[np.maximum(exit_idx, 0)], closed),
            pl.Series("exit_kind", exit_kind.tolist(), dtype=pl.String),
            pl.Series("exit_price", np.where(closed, exit_px, np.nan)),
            pl.Series("gross_pnl", gross),
            pl.Series("fees", fees),
            pl.Series("net_pnl", net),
            pl.Series("unrealised_pnl", unrealised),
            pl.Series("initial_risk", risk),
            pl.Series("r_multiple", np.where(closed, net / np.where(valid, risk, 1.0), np.nan)),
        ]
    )
    return frame.with_columns(pl.col("entry_price", "exit_price", "initial_risk", "r_multiple").fill_nan(None))
