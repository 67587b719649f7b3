"""The market side of a backtest, computed once per symbol: signal series, bars, and every setup's trade.

:func:`prepare_market` runs :func:`domain.signals.signal_series` over each symbol's candles and simulates,
with one vectorised :func:`domain.trade_simulation.simulate_trades` call per symbol, the trade that every
setup bar (a bar with a Fibonacci direction) would open for ONE unit of quantity: entry at the next open,
stop and targets from the signal. The outcome of a bar's trade depends on the bar and the market, never on
the score, the portfolio or the size (P&L scales linearly with the quantity when there is no lot step), so
one preparation serves every replay of the same candles, e.g. before and after fitting the score weights.

Reading the future happens here and only here: an outcome knows where its trade exits. The replay must not
use an outcome before the exit candle has closed (see :mod:`domain.backtest_replay`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import polars as pl

from domain.backtest_config import BacktestConfig
from domain.errors import InvalidDataError
from domain.execution import ExecutionModel
from domain.indicators import FloatArray
from domain.signals import SignalConfig, SignalSeries, signal_series
from domain.timeframes import timeframe_ms
from domain.trade_simulation import BarArrays, simulate_trades

__all__ = ["CANDLE_COLUMNS", "MARKET_FRACTIONS", "PreparedSeries", "UnitOutcome", "equity_curve", "prepare_market"]

IntArray = npt.NDArray[np.int64]
CANDLE_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
#: Score components the signal series computes per bar (the fifth, win_rate, depends on the trade history).
MARKET_FRACTIONS: tuple[str, ...] = ("technical", "volume", "volatility", "market")


@dataclass(frozen=True, slots=True)
class UnitOutcome:
    """A simulated trade: status CLOSED / OPEN (at the data end) / VOID (entry beyond stop or TP1, or no next
    candle); bar indices into the symbol's candles, -1 when not applicable; money for ``quantity`` units."""

    status: str
    entry_idx: int
    exit_idx: int
    tp1_idx: int
    entry_price: float
    exit_price: float
    exit_kind: str | None
    quantity: float
    tp1_quantity: float
    gross: float
    fees: float
    net: float
    unrealised: float
    initial_risk: float
    r_multiple: float

    def scaled(self, quantity: float) -> UnitOutcome:
        """The same trade with ``quantity`` units (exact without a lot step: every amount is linear in it)."""
        k = quantity / self.quantity
        return replace(
            self,
            quantity=quantity,
            tp1_quantity=self.tp1_quantity * k,
            gross=self.gross * k,
            fees=self.fees * k,
            net=self.net * k,
            unrealised=self.unrealised * k,
            initial_risk=self.initial_risk * k,
        )


def _column(frame: pl.DataFrame, name: str, fill: float) -> npt.NDArray[np.float64]:
    return frame[name].cast(pl.Float64).fill_null(fill).to_numpy()


class _Outcomes:
    """simulate_trades output as numpy columns, looked up by signal bar."""

    def __init__(self, frame: pl.DataFrame, signal_idx: IntArray, offset: int, n: int) -> None:
        self.row_of = np.full(n, -1, dtype=np.int64)
        self.row_of[signal_idx] = np.arange(signal_idx.size)
        self.status = frame["status"].to_list()
        self.exit_kind = frame["exit_kind"].to_list()
        self.idx = {
            name: (_column(frame, name, -1 - offset) + offset).astype(np.int64)
            for name in ("entry_idx", "exit_idx", "tp1_idx")
        }
        self.money = {
            name: _column(frame, name, math.nan)
            for name in (
                "entry_price",
                "exit_price",
                "quantity",
                "tp1_quantity",
                "gross_pnl",
                "fees",
                "net_pnl",
                "unrealised_pnl",
                "initial_risk",
                "r_multiple",
            )
        }

    def get(self, row: int) -> UnitOutcome:
        m, ix = self.money, self.idx
        return UnitOutcome(
            status=self.status[row],
            entry_idx=int(ix["entry_idx"][row]),
            exit_idx=int(ix["exit_idx"][row]),
            tp1_idx=int(ix["tp1_idx"][row]),
            entry_price=float(m["entry_price"][row]),
            exit_price=float(m["exit_price"][row]),
            exit_kind=self.exit_kind[row],
            quantity=float(m["quantity"][row]),
            tp1_quantity=float(m["tp1_quantity"][row]),
            gross=float(m["gross_pnl"][row]),
            fees=float(m["fees"][row]),
            net=float(m["net_pnl"][row]),
            unrealised=float(m["unrealised_pnl"][row]),
            initial_risk=float(m["initial_risk"][row]),
            r_multiple=float(m["r_multiple"][row]),
        )


@dataclass(frozen=True, eq=False)
class PreparedSeries:
    """One symbol ready to replay: per-bar signal columns and the unit trade of every setup bar.

    ``close_ts`` is each bar's close (its open ``ts`` + one timeframe, ms): the moment the bar can act.
    ``returns`` are per-bar simple returns of the close (NaN for the first bar). ``setups`` are the bars
    with a direction whose stop/targets make an orderable trade, ascending; ``setup_trades`` is the
    ``simulate_trades`` frame of their one-unit trades, row k for ``setups[k]``. ``split_ts`` opens the test
    period: the first bar after the oldest ``train_fraction`` of the series.
    """

    symbol: str
    timeframe: str
    series: SignalSeries
    bars: BarArrays
    close_ts: IntArray
    returns: FloatArray
    direction: IntArray
    ratio: FloatArray
    stop: FloatArray
    tp1: FloatArray
    tp2: FloatArray
    fractions: Mapping[str, FloatArray]
    setups: IntArray
    split_ts: int
    model: ExecutionModel
    setup_trades: pl.DataFrame
    _outcomes: _Outcomes

    @property
    def n(self) -> int:
        return int(self.bars.ts_ms.shape[0])

    def outcome(self, i: int) -> UnitOutcome:
        """The one-unit trade signalled at setup bar ``i``."""
        row = int(self._outcomes.row_of[i])
        if row < 0:
            raise InvalidDataError(f"{self.symbol}: bar {i} is not a setup bar")
        return self._outcomes.get(row)

    def exact(self, i: int, quantity: float, lot_step: float) -> UnitOutcome:
        """The trade at bar ``i`` with its real ``quantity``: scaled from the unit trade, or with a lot step
        (which rounds the TP1 part and may change the exit) simulated again on the bars it needs."""
        unit = self.outcome(i)
        if lot_step <= 0:
            return unit.scaled(quantity)
        end = self.n if unit.exit_idx < 0 else min(self.n, unit.exit_idx + 2)
        b = self.bars
        part = BarArrays(b.ts_ms[i:end], b.open[i:end], b.high[i:end], b.low[i:end], b.close[i:end])
        frame = simulate_trades(
            part,
            signal_idx=[0],
            side=[int(self.direction[i])],
            quantity=[quantity],
            stop=[float(self.stop[i])],
            tp1=[float(self.tp1[i])],
            tp2=[float(self.tp2[i])],
            model=self.model,
            lot_step=lot_step,
        )
        return _Outcomes(frame, np.asarray([0], dtype=np.int64), i, 1).get(0)

    def returns_upto(self, now_ms: int, window: int) -> FloatArray:
        """The last ``window`` per-bar returns of the bars closed by ``now_ms``."""
        end = int(np.searchsorted(self.close_ts, now_ms, side="right"))
        return self.returns[max(0, end - window) : end]

    def with_signal_config(self, config: SignalConfig) -> PreparedSeries:
        """The same series scored under ``config``, which may differ from the prepared one in its score
        weights only (nothing computed per bar depends on them)."""
        mine = self.series.config
        if replace(config, scoring=replace(config.scoring, weights=mine.scoring.weights)) != mine:
            raise InvalidDataError("with_signal_config: only the score weights may change; prepare again")
        return replace(self, series=replace(self.series, config=config))


def _candle_frame(symbol: str, candles: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise InvalidDataError(f"{symbol}: candle frame lacks {missing}")
    frame = candles.select(pl.col("ts").cast(pl.Int64), *(pl.col(c).cast(pl.Float64) for c in CANDLE_COLUMNS[1:]))
    if frame.height < 2 or not np.isfinite(frame.select(CANDLE_COLUMNS[1:]).to_numpy()).all():
        raise InvalidDataError(f"{symbol}: need >= 2 candles with finite OHLCV (validate them first)")
    return frame


def _prepare(symbol: str, candles: pl.DataFrame, timeframe: str, config: BacktestConfig) -> PreparedSeries:
    series = signal_series(_candle_frame(symbol, candles), config=config.signal)
    f = series.frame
    bars = BarArrays.from_frame(f)
    close = bars.close
    direction = f["direction"].to_numpy().astype(np.int64)
    stop = f["stop"].to_numpy()
    tp1 = f[f"target_{config.tp1_target + 1}"].to_numpy()
    tp2 = f[f"target_{config.tp2_target + 1}"].to_numpy()
    with np.errstate(invalid="ignore"):
        orderable = (direction != 0) & (direction * stop < direction * tp1) & (direction * tp1 <= direction * tp2)
    setups = np.flatnonzero(orderable).astype(np.int64)
    n = f.height
    outcomes = simulate_trades(
        bars,
        signal_idx=setups,
        side=direction[setups],
        quantity=np.ones(setups.size),
        stop=stop[setups],
        tp1=tp1[setups],
        tp2=tp2[setups],
        model=config.execution,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.concatenate([[np.nan], close[1:] / close[:-1] - 1.0])
    return PreparedSeries(
        symbol=symbol,
        timeframe=timeframe,
        series=series,
        bars=bars,
        close_ts=bars.ts_ms + timeframe_ms(timeframe),
        returns=returns,
        direction=direction,
        ratio=f["fib_ratio"].to_numpy(),
        stop=stop,
        tp1=tp1,
        tp2=tp2,
        fractions={name: f[f"f_{name}"].to_numpy() for name in MARKET_FRACTIONS},
        setups=setups,
        split_ts=int(bars.ts_ms[min(n - 1, int(config.train_fraction * n))]),
        model=config.execution,
        setup_trades=outcomes,
        _outcomes=_Outcomes(outcomes, setups, 0, n),
    )


def prepare_market(
    candles_by_symbol: Mapping[str, pl.DataFrame], *, timeframe: str, config: BacktestConfig
) -> tuple[PreparedSeries, ...]:
    """Prepare every symbol (sorted by name). Candles: one timeframe, ascending ``ts``, finite OHLCV.

    Raises:
        InvalidDataError: no symbol, a malformed frame or an unknown timeframe.
    """
    if not candles_by_symbol:
        raise InvalidDataError("a backtest needs at least one symbol")
    timeframe_ms(timeframe)  # refuse an unknown timeframe before any work
    return tuple(_prepare(symbol, candles_by_symbol[symbol], timeframe, config) for symbol in sorted(candles_by_symbol))


def equity_curve(
    series: tuple[PreparedSeries, ...], trades: pl.DataFrame, *, initial_equity: float, fee_rate: float
) -> pl.DataFrame:
    """Mark-to-market equity at every bar close of every symbol: ``ts`` (the bar's CLOSE, ms), ``equity``
    (quote) and ``drawdown`` (fraction below the running peak).

    Equity = initial + net P&L of closed trades (from their exit candle on) + for each open position its
    realised TP1 part, its unrealised P&L at the close and the fees paid so far. A symbol whose data ended
    keeps its last value. Positions of one symbol never overlap (the replay holds one at a time).
    """
    times, deltas = [], []
    for s in series:
        marked, booked = np.zeros(s.n), np.zeros(s.n)
        for t in trades.filter(pl.col("symbol") == s.symbol).iter_rows(named=True):
            e0, closed = t["entry_idx"], t["status"] == "CLOSED"
            e1 = t["exit_idx"] if closed else s.n
            if closed:
                booked[e1] += t["net_pnl"]
            if e1 <= e0:
                continue
            d = 1.0 if t["direction"] == "long" else -1.0
            q, q1, p, tp1 = t["quantity"], t["tp1_quantity"], t["entry_price"], t["tp1"]
            after = np.arange(e0, e1) >= (s.n if t["tp1_idx"] is None else t["tp1_idx"])
            open_q = np.where(after, q - q1, q)
            realised = np.where(after, d * (tp1 - p) * q1 - tp1 * q1 * fee_rate, 0.0)
            marked[e0:e1] = d * (s.bars.close[e0:e1] - p) * open_q + realised - p * q * fee_rate
        total = np.cumsum(booked) + marked
        times.append(s.close_ts)
        deltas.append(np.diff(total, prepend=0.0))
    ts = np.concatenate(times)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    equity = initial_equity + np.cumsum(np.concatenate(deltas)[order])
    last = np.append(ts[1:] != ts[:-1], True)  # one value per instant: after every symbol's bar at it
    ts, equity = ts[last], equity[last]
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, 1.0 - equity / peak, np.nan)
    return pl.DataFrame({"ts": ts, "equity": equity, "drawdown": drawdown})
