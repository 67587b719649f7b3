"""Look-ahead audit of the backtest: cutting the data off must not change anything known before the cut.

The audit replays the full data once, then for each of a few seeded random moments replays the candles that
had closed by then, and compares, bar for bar:

- every per-bar signal column (indicators, Fibonacci structure, conditions, score components, direction,
  stop, targets) of every bar in the cut data;
- every evaluation (score, tier, decision, confidence, components) and every hypothetical setup (both
  populations) signalled before the last cut bar (the last one is excluded: its entry candle lies beyond the
  cut);
- every entry (sizes, prices, scores, equity before it) made on a candle inside the cut data;
- every exit the cut run already knows (trades that closed inside the cut data).

NaN equals NaN; everything else must be exactly equal. Any difference means a value computed before the cut
used candles after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from domain.backtest_config import BacktestConfig
from domain.backtest_market import prepare_market
from domain.backtest_replay import replay
from domain.timeframes import timeframe_ms

__all__ = ["LookaheadAudit", "audit_lookahead", "compare_frames"]


@dataclass(frozen=True, kw_only=True)
class LookaheadAudit:
    """What the audit compared at each cut (epoch ms) and every difference found (empty = no look-ahead)."""

    cuts: tuple[int, ...]
    bars_compared: int
    evaluations_compared: int
    trades_compared: int
    setups_compared: int
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def compare_frames(label: str, full: pl.DataFrame, cut: pl.DataFrame) -> list[str]:
    """Differences between two frames that should be equal (NaN equals NaN), one line per column."""
    if full.columns != cut.columns:
        return [f"{label}: columns differ ({full.columns} vs {cut.columns})"]
    if full.height != cut.height:
        return [f"{label}: {full.height} rows in the full run, {cut.height} in the cut run"]
    found = []
    for name in full.columns:
        a, b = full[name], cut[name]
        if not a.equals(b):
            differs = a.ne_missing(b)
            if a.dtype.is_float():
                differs = differs & ~(a.is_nan() & b.is_nan()).fill_null(False)
            row = int(np.flatnonzero(differs.to_numpy())[0]) if differs.any() else 0
            found.append(f"{label}: column {name!r} differs first at row {row}: {a[row]!r} vs {b[row]!r}")
    return found


_ENTRY_COLUMNS = (
    "symbol",
    "signal_ts",
    "ts",
    "signal_idx",
    "entry_idx",
    "score",
    "tier",
    "direction",
    "setup",
    "confidence",
    "equity_before",
    "quantity",
    "entry_price",
    "stop",
    "tp1",
    "tp2",
)
_EXIT_COLUMNS = ("exit_ts", "exit_idx", "exit_kind", "exit_price", "net_pnl", "r_multiple")


def _known_before(frame: pl.DataFrame, cut_bars: Mapping[str, int], index: str) -> pl.DataFrame:
    """Rows of ``frame`` whose ``index`` bar lies before the last bar of the cut data (so its next candle,
    which an entry needs, exists in the cut data too)."""
    limit = pl.col("symbol").replace_strict(cut_bars, default=0, return_dtype=pl.Int64)
    return frame.filter(pl.col(index) < limit - 1)


def audit_lookahead(
    candles_by_symbol: Mapping[str, pl.DataFrame],
    *,
    timeframe: str,
    config: BacktestConfig | None = None,
    cuts: int = 5,
    seed: int = 0,
) -> LookaheadAudit:
    """Cut the data at ``cuts`` random moments (seeded) and check that every per-bar signal column, every
    evaluation and every entry signalled before the cut, and every exit known before it, equal the full
    run's. The cut keeps the candles that have closed by the cut moment.
    """
    cfg = config or BacktestConfig()
    step = timeframe_ms(timeframe)
    full_market = prepare_market(candles_by_symbol, timeframe=timeframe, config=cfg)
    full = replay(full_market, config=cfg)
    first = min(int(s.bars.ts_ms[0]) for s in full_market)
    last = max(int(s.close_ts[-1]) for s in full_market)
    rng = np.random.default_rng(seed)
    moments = sorted(int(x) for x in rng.integers(first + (last - first) // 10, last, size=cuts))
    mismatches: list[str] = []
    counts = dict.fromkeys(("bars", "evaluations", "trades", "setups", "every setup bar"), 0)
    for moment in moments:
        cut_candles = {
            name: kept
            for name, frame in candles_by_symbol.items()
            if (kept := frame.filter(pl.col("ts") + step <= moment)).height >= 2
        }
        if not cut_candles:
            continue
        cut_market = prepare_market(cut_candles, timeframe=timeframe, config=cfg)
        cut = replay(cut_market, config=cfg)
        bars = {s.symbol: s.n for s in cut_market}
        by_symbol = {s.symbol: s for s in full_market}
        for s in cut_market:
            counts["bars"] += s.n
            mismatches += compare_frames(
                f"cut {moment} {s.symbol} signals", by_symbol[s.symbol].series.frame.head(s.n), s.series.frame
            )
        pairs = (
            ("evaluations", full.evaluations.drop("action"), cut.evaluations.drop("action"), "signal_idx"),
            (
                "setups",
                full.setups.drop("status", "exit_ts", "exit_kind", "r_multiple", "traded"),
                cut.setups.drop("status", "exit_ts", "exit_kind", "r_multiple", "traded"),
                "signal_idx",
            ),
            (
                "every setup bar",
                full.every_setup.drop("status", "exit_ts", "r_multiple"),
                cut.every_setup.drop("status", "exit_ts", "r_multiple"),
                "signal_idx",
            ),
            ("trades", full.trades.select(_ENTRY_COLUMNS), cut.trades.select(_ENTRY_COLUMNS), "entry_idx"),
        )
        for name, a, b, index in pairs:
            a_known = _known_before(a.filter(pl.col("symbol").is_in(list(bars))), bars, index)
            b_known = _known_before(b, bars, index)
            counts[name] += b_known.height
            mismatches += compare_frames(f"cut {moment} {name}", a_known, b_known)
        exits = list(_EXIT_COLUMNS)
        closed_cut = cut.trades.filter(pl.col("status") == "CLOSED").select("symbol", "entry_idx", *exits)
        closed_full = full.trades.join(closed_cut.select("symbol", "entry_idx"), on=("symbol", "entry_idx")).select(
            "symbol", "entry_idx", *exits
        )
        mismatches += compare_frames(
            f"cut {moment} exits", closed_full.sort("symbol", "entry_idx"), closed_cut.sort("symbol", "entry_idx")
        )
    return LookaheadAudit(
        cuts=tuple(moments),
        bars_compared=counts["bars"],
        evaluations_compared=counts["evaluations"],
        trades_compared=counts["trades"],
        setups_compared=counts["setups"] + counts["every setup bar"],
        mismatches=tuple(mismatches),
    )
