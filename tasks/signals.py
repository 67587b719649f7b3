"""Signal evaluation for a batch of symbols: candle window (cache, read-through to the database) -> portfolio
context -> `evaluate_signal` -> stored in `signals`. A symbol's failure is its own result, never the batch's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import Connection, Engine

from adapters.cache import MarketDataCache
from db.candles import read_candles, read_windows
from db.signals import store_signals
from db.timescale import has_continuous_aggregates, read_aggregated
from db.trading import load_open_positions
from db.trading_stats import setup_win_stats, win_stats
from domain.errors import PermanentError, TransientError
from domain.execution import RiskLimits, size_position
from domain.signals import SignalContext, evaluate_signal
from domain.tiers import Tier
from domain.timeframes import timeframe_ms

WINDOW = 1000  # candles of the signal timeframe: EMA200 needs ~800 bars to forget its seed


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationSettings:
    equity: float = 10_000.0
    limits: RiskLimits = field(default_factory=RiskLimits)
    window: int = WINDOW


@dataclass
class SymbolSignal:
    symbol: str
    evaluation: dict[str, Any] | None = None
    signal_id: int | None = None
    error: str | None = None
    transient: bool = False

    def summary(self) -> dict[str, Any]:
        ev = self.evaluation or {}
        conditions = ev.get("conditions", [])
        return {
            "symbol": self.symbol,
            "score": round(float(ev.get("score", 0.0)), 1) if ev else None,
            "tier": ev.get("tier"),
            "decision": ev.get("decision", "error" if self.error else None),
            "direction": ev.get("direction"),
            "conditions_passed": f"{sum(1 for c in conditions if c['passed'])}/{len(conditions)}" if ev else None,
            "reasons": "; ".join(ev.get("reasons", []))[:200] if ev else (self.error or "")[:200],
        }


def read_signal_window(
    conn: Connection,
    *,
    exchange: str,
    symbol: str,
    base_timeframe: str,
    timeframe: str,
    newest: int,
    now_ms: int,
    continuous: bool | None = None,
) -> pl.DataFrame:
    """The newest `newest` candles of `timeframe`, derived from the stored `base_timeframe` candles when they
    differ (continuous aggregates on TimescaleDB, date_bin otherwise)."""
    if timeframe == base_timeframe:
        return read_candles(conn, exchange=exchange, symbol=symbol, timeframe=timeframe, newest=newest)
    start = datetime.fromtimestamp((now_ms - newest * timeframe_ms(timeframe)) / 1000, tz=UTC)
    end = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    rows = read_aggregated(conn, exchange, symbol, timeframe, start, end, continuous=continuous)
    return pl.DataFrame(
        {
            "ts": [int(r.ts.timestamp() * 1000) for r in rows],
            "open": [r.open for r in rows],
            "high": [r.high for r in rows],
            "low": [r.low for r in rows],
            "close": [r.close for r in rows],
            "volume": [r.volume for r in rows],
        },
        schema={
            "ts": pl.Int64,
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        },
    )


def read_signal_windows(
    conn: Connection,
    *,
    exchange: str,
    symbols: Sequence[str],
    base_timeframe: str,
    timeframe: str,
    newest: int,
    now_ms: int,
) -> pl.DataFrame:
    """The windows of many symbols as one frame with `symbol` first: one query when the signal timeframe is
    the stored one, else one aggregation per symbol."""
    if timeframe == base_timeframe:
        return read_windows(conn, exchange=exchange, symbols=symbols, timeframe=timeframe, newest=newest)
    continuous = has_continuous_aggregates(conn)
    frames = [
        read_signal_window(
            conn,
            exchange=exchange,
            symbol=symbol,
            base_timeframe=base_timeframe,
            timeframe=timeframe,
            newest=newest,
            now_ms=now_ms,
            continuous=continuous,
        ).with_columns(pl.lit(symbol, pl.String).alias("symbol"))
        for symbol in symbols
    ]
    return pl.concat([f.select("symbol", *f.columns[:-1]) for f in frames]) if frames else pl.DataFrame()


def _returns(window: pl.DataFrame, n: int = 100) -> np.ndarray:
    close = window["close"].to_numpy()[-(n + 1) :]
    return np.diff(close) / close[:-1] if close.size > 1 else np.empty(0)


def evaluate_symbols(
    engine: Engine,
    cache: MarketDataCache | None,
    *,
    exchange: str,
    symbols: Sequence[str],
    base_timeframe: str,
    timeframe: str,
    now_ms: int,
    settings: EvaluationSettings,
    run_id: str | None,
) -> list[SymbolSignal]:
    """Evaluate and store one signal per symbol; failures are per symbol."""
    results = [SymbolSignal(s) for s in symbols]
    with engine.connect() as conn:
        continuous = has_continuous_aggregates(conn)
        open_positions = load_open_positions(conn, exchange=exchange)

        def window_of(symbol: str) -> pl.DataFrame:
            def load() -> pl.DataFrame:
                return read_signal_window(
                    conn,
                    exchange=exchange,
                    symbol=symbol,
                    base_timeframe=base_timeframe,
                    timeframe=timeframe,
                    newest=settings.window,
                    now_ms=now_ms,
                    continuous=continuous,
                )

            return load() if cache is None else cache.get_window(exchange, symbol, timeframe, settings.window, load)

        open_returns = {p.position.symbol: _returns(window_of(p.position.symbol)) for p in open_positions}
        for result in results:
            try:
                window = window_of(result.symbol)
                context = SignalContext(
                    symbol=result.symbol,
                    timeframe=timeframe,
                    equity=settings.equity,
                    proposed_notional=settings.equity * settings.limits.max_position_fraction,
                    returns=_returns(window),
                    open_position_returns={s: r for s, r in open_returns.items() if s != result.symbol},
                    symbol_record=win_stats(conn, exchange=exchange, symbol=result.symbol),
                    setup_records=setup_win_stats(conn, exchange=exchange, symbol=result.symbol),
                )
                evaluation = evaluate_signal(window, context=context, now_ms=now_ms)
                if evaluation.entry is not None and evaluation.stop is not None and evaluation.tier != Tier.SKIP:
                    # Condition 6 judged on the size the broker would really open, not the cap.
                    sizing = size_position(
                        equity=settings.equity,
                        entry_price=evaluation.entry,
                        stop_price=evaluation.stop,
                        tier=evaluation.tier,
                        limits=settings.limits,
                        open_positions=len(open_positions),
                    )
                    if sizing.notional > 0:
                        context = replace(context, proposed_notional=sizing.notional)
                        evaluation = evaluate_signal(window, context=context, now_ms=now_ms)
                result.evaluation = evaluation.to_dict()
            except (TransientError, PermanentError) as exc:
                result.error, result.transient = f"{type(exc).__name__}: {exc}", isinstance(exc, TransientError)
    evaluated = [r for r in results if r.evaluation is not None]
    if evaluated:
        with engine.begin() as conn:
            ids = store_signals(
                conn, exchange=exchange, evaluations=[r.evaluation for r in evaluated if r.evaluation], run_id=run_id
            )
        for result, signal_id in zip(evaluated, ids, strict=True):
            result.signal_id = signal_id
    return results
