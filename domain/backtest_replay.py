"""One replay of the whole signal path over candle history, without look-ahead.

:func:`domain.backtest_market.prepare_market` has computed, per symbol, every bar's indicators, Fibonacci
structure, conditions 1-5 and market score components (vectorised) and every setup bar's trade outcome.
``SignalSeries.decisions`` then marks the bars
that COULD be entered (the score with the best possible historical win rate reaches a tier and conditions 6/7
pass): only those bars can act. The replay walks them, merged across symbols in time order (a bar acts when it
closes, at ``ts + timeframe``), and for each:

1. applies every trade outcome known by then (equity, win records, scheduler successes/failures);
2. skips the symbol while it holds a position (one position per symbol, no pyramiding);
3. recomputes the score with the CURRENT win records (a cheap scalar check) and drops bars that cannot earn
   a tier;
4. asks the :class:`~domain.scheduling.SmartScheduler` (>= 5 min between trades of a symbol, cool-off after
   consecutive failures);
5. evaluates the bar with ``SignalSeries.evaluate_at`` and the portfolio context of that moment (equity,
   proposed size, returns of the open positions for condition 7, win records): the verdict is exactly what
   the live path would have said;
6. sizes by tier with :func:`~domain.execution.size_position` on the realised equity and enters at the next
   candle's open; the exit comes from :func:`~domain.trade_simulation.simulate_trades` (fees, slippage,
   TP1/break-even/TP2, stop first) and only becomes known to the replay when the exit candle has closed.

The future is read in one place only: the prepared outcome says where a trade exits, and the replay applies
it at the exit candle's close. A failure is a void entry (the next open is already beyond the stop or TP1) or,
with ``losses_are_failures``, a closed trade with net P&L < 0. A position still open when its symbol's data
ends is marked to the last close and frees its slot just after.

Hypothetical population ("every scored setup"). Every bar with a Fibonacci setup (direction != 0) is
scored by the pipeline, most of them SKIP or REJECT. To measure whether the score predicts P&L over all of
them, the replay also simulates, per symbol, the setups a trader would meet by taking EVERY setup one at a
time regardless of score: the first setup bar, then the first setup bar after that trade's exit is known
(and >= the scheduler gap later), and so on. The selection never looks at the score, the trades of one
symbol never overlap, and each is evaluated with the same context the real path has at that moment.

The widest population, ``every_setup``, is every setup bar with its own hypothetical trade: thousands of
signals, but overlapping ones (consecutive bars of one Fibonacci leg share their stop and targets and most of
their path), so its intervals resample whole blocks of bars (see ``domain.backtest``). Its score is computed
vectorised (base score plus the win-rate points from the real path's records at that bar's close), equal to
``evaluate_at``'s up to rounding.

Units: prices in quote currency, quantities in base units, P&L/fees/equity in quote currency, timestamps in
epoch ms (a candle's open unless named otherwise), R as net P&L / initial risk.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from domain.backtest_config import BacktestConfig
from domain.backtest_market import MARKET_FRACTIONS, PreparedSeries, equity_curve
from domain.errors import InvalidDataError
from domain.execution import size_position
from domain.indicators import FloatArray
from domain.scheduling import SmartScheduler
from domain.scoring import ScoringConfig, WinRecord, shrunk_win_rate, win_rate_fraction
from domain.signals import Decision, SignalContext, SignalEvaluation, setup_key
from domain.tiers import Tier, tier_for_score

IntArray = npt.NDArray[np.int64]

__all__ = ["ReplayRun", "replay"]

_BIG = 10**9  # pseudo-trades that pin the shrunk win rate to ~1 (best case) or ~0 (worst case)


@dataclass(frozen=True, eq=False)
class ReplayRun:
    """The output of one replay (frame columns are listed in :mod:`domain.backtest`)."""

    timeframe: str
    config: BacktestConfig
    trades: pl.DataFrame
    setups: pl.DataFrame
    every_setup: pl.DataFrame
    evaluations: pl.DataFrame
    equity: pl.DataFrame
    funnel: Mapping[str, int]
    series: pl.DataFrame


def _decision_bounds(s: PreparedSeries) -> tuple[IntArray, FloatArray]:
    """(bars that could be entered with the best possible win record, score of every bar without its
    win-rate points). Conditions 6/7 pass in both contexts (no size proposed, no open position)."""

    def context(wins: int) -> SignalContext:
        return SignalContext(
            symbol=s.symbol,
            timeframe=s.timeframe,
            equity=1.0,
            proposed_notional=0.0,
            symbol_record=WinRecord(wins, _BIG),
        )

    best = s.series.decisions(context=context(_BIG))
    can_enter = (best["decision"] == str(Decision.ENTER)).to_numpy()
    candidates = np.intersect1d(np.flatnonzero(can_enter), s.setups).astype(np.int64)
    return candidates, s.series.decisions(context=context(0))["score"].to_numpy()


def _hypothetical_walk(s: PreparedSeries, gap_ms: int) -> list[int]:
    """Setup bars taken one at a time regardless of score (see the module docstring)."""
    taken: list[int] = []
    pos = 0
    while pos < s.setups.size:
        i = int(s.setups[pos])
        if i + 1 >= s.n:
            break
        result = s.outcome(i)
        taken.append(i)
        if result.status == "VOID":
            pos += 1
            continue
        if result.status == "OPEN":
            break
        free_at = max(int(s.close_ts[result.exit_idx]), int(s.close_ts[i]) + gap_ms)
        first_bar = int(np.searchsorted(s.close_ts, free_at, side="left"))
        pos = int(np.searchsorted(s.setups, first_bar, side="left"))
    return taken


def _win_fraction(symbol: WinRecord, setups: Mapping[str, WinRecord], key: str, config: ScoringConfig) -> float:
    return win_rate_fraction(shrunk_win_rate(symbol, setups.get(key, WinRecord()), config), config)


_TRADE_SCHEMA: dict[str, Any] = {
    "symbol": pl.String,
    "signal_ts": pl.Int64,
    "ts": pl.Int64,
    "exit_ts": pl.Int64,
    "signal_idx": pl.Int64,
    "entry_idx": pl.Int64,
    "exit_idx": pl.Int64,
    "tp1_idx": pl.Int64,
    "score": pl.Float64,
    "tier": pl.String,
    "direction": pl.String,
    "setup": pl.String,
    "confidence": pl.Float64,
    "equity_before": pl.Float64,
    "quantity": pl.Float64,
    "notional": pl.Float64,
    "entry_price": pl.Float64,
    "stop": pl.Float64,
    "tp1": pl.Float64,
    "tp2": pl.Float64,
    "tp1_quantity": pl.Float64,
    "exit_price": pl.Float64,
    "exit_kind": pl.String,
    "status": pl.String,
    "gross_pnl": pl.Float64,
    "fees": pl.Float64,
    "net_pnl": pl.Float64,
    "unrealised_pnl": pl.Float64,
    "initial_risk": pl.Float64,
    "r_multiple": pl.Float64,
}
_FRACTION_SCHEMA: dict[str, Any] = {f"f_{name}": pl.Float64 for name in (*MARKET_FRACTIONS, "win_rate")}
_EVAL_SCHEMA: dict[str, Any] = {
    "symbol": pl.String,
    "signal_ts": pl.Int64,
    "signal_idx": pl.Int64,
    "candidate": pl.Boolean,
    "hypothetical": pl.Boolean,
    "score": pl.Float64,
    "tier": pl.String,
    "decision": pl.String,
    "confidence": pl.Float64,
    "direction": pl.String,
    "setup": pl.String,
    **_FRACTION_SCHEMA,
    "action": pl.String,
}
_EVERY_SCHEMA: dict[str, Any] = {
    "symbol": pl.String,
    "signal_ts": pl.Int64,
    "signal_idx": pl.Int64,
    "leg": pl.Int64,
    "score": pl.Float64,
    **_FRACTION_SCHEMA,
    "status": pl.String,
    "exit_ts": pl.Int64,
    "r_multiple": pl.Float64,
}
_SETUP_SCHEMA: dict[str, Any] = {
    "symbol": pl.String,
    "signal_ts": pl.Int64,
    "signal_idx": pl.Int64,
    "score": pl.Float64,
    "tier": pl.String,
    "decision": pl.String,
    "direction": pl.String,
    "setup": pl.String,
    **_FRACTION_SCHEMA,
    "status": pl.String,
    "entry_ts": pl.Int64,
    "exit_ts": pl.Int64,
    "exit_kind": pl.String,
    "r_multiple": pl.Float64,
    "traded": pl.Boolean,
}


class _Replay:
    """The mutable state of one replay; :func:`replay` is its only user."""

    def __init__(self, market: tuple[PreparedSeries, ...], config: BacktestConfig) -> None:
        if not market:
            raise InvalidDataError("a backtest needs at least one symbol")
        self.config = config
        self.series = tuple(s.with_signal_config(config.signal) for s in market)
        self.timeframe = self.series[0].timeframe
        if any(s.timeframe != self.timeframe for s in self.series):
            raise InvalidDataError("one replay runs one timeframe")
        bounds = [_decision_bounds(s) for s in self.series]
        self.candidates = [c for c, _ in bounds]
        self.base_score = [b for _, b in bounds]
        self.scoring = config.signal.scoring
        self.w_win = self.scoring.weights.normalised()["win_rate"]
        self.equity = config.initial_equity
        self.open: dict[int, int] = {}  # series index -> row in self.trades
        self.closures: list[tuple[int, int, int]] = []  # heap of (known at ms, trade row, series index)
        self.scheduler = SmartScheduler(config.scheduler)
        self.symbol_records = [WinRecord() for _ in self.series]
        self.setup_records: list[dict[str, WinRecord]] = [{} for _ in self.series]
        self.trades: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.setups: list[dict[str, Any]] = []
        self.funnel: Counter[str] = Counter()
        self.win_memo: dict[tuple[int, int, float], float] = {}

    # --- outcomes becoming known ---------------------------------------------------------------------
    def settle(self, now_ms: int) -> None:
        """Apply every trade outcome known at ``now_ms`` (its exit candle has closed)."""
        while self.closures and self.closures[0][0] <= now_ms:
            known_at, row, k = heapq.heappop(self.closures)
            trade, symbol = self.trades[row], self.series[k].symbol
            del self.open[k]
            self.win_memo.clear()
            if trade["status"] != "CLOSED":  # marked out at the end of the symbol's data
                self.equity += trade["net_pnl"] + trade["unrealised_pnl"]
                continue
            self.equity += trade["net_pnl"]
            won = trade["net_pnl"] > 0
            old = self.symbol_records[k]
            self.symbol_records[k] = WinRecord(old.wins + won, old.trades + 1)
            old = self.setup_records[k].get(trade["setup"], WinRecord())
            self.setup_records[k][trade["setup"]] = WinRecord(old.wins + won, old.trades + 1)
            if self.config.losses_are_failures and trade["net_pnl"] < 0:
                self._failure(symbol, known_at, f"losing trade ({trade['r_multiple']:.2f} R)")
            else:
                self.scheduler.record_success(symbol)

    def _failure(self, symbol: str, now_ms: int, reason: str) -> None:
        if self.scheduler.record_failure(symbol, now_ms, reason).entered_cooloff:
            self.funnel["cool-offs entered"] += 1

    # --- one bar ---------------------------------------------------------------------------------------
    def _win(self, k: int, i: int) -> float:
        s = self.series[k]
        memo = (k, int(s.direction[i]), float(s.ratio[i]))
        win = self.win_memo.get(memo)
        if win is None:  # records change only when a trade settles, which clears the memo
            key = setup_key(memo[1], memo[2])
            win = _win_fraction(self.symbol_records[k], self.setup_records[k], key, self.scoring)
            self.win_memo[memo] = win
        return win

    def evaluate(self, k: int, i: int, now_ms: int) -> tuple[SignalEvaluation, float]:
        """The live path's verdict on bar ``i`` with the portfolio as it is at ``now_ms``."""
        s, cfg = self.series[k], self.config
        # The FULL-tier size is the largest any tier proposes: condition 6 passing for it passes for all.
        proposed = size_position(
            equity=self.equity,
            entry_price=float(s.bars.close[i]),
            stop_price=float(s.stop[i]),
            tier=Tier.FULL,
            limits=cfg.limits,
        ).notional
        # A size capped at the notional limit comes back as quantity x price, and condition 6 divides it by
        # the equity again: float rounding puts a capped position a hair above 5% about half of the time, and
        # it would be rejected at random. Step the cap down to the largest value that passes that division.
        cap = cfg.limits.max_position_fraction * self.equity
        while cap / self.equity > cfg.limits.max_position_fraction:
            cap = math.nextafter(cap, 0.0)
        proposed = min(proposed, cap)
        window = cfg.returns_window
        others = {self.series[o].symbol: self.series[o].returns_upto(now_ms, window) for o in self.open if o != k}
        context = SignalContext(
            symbol=s.symbol,
            timeframe=self.timeframe,
            equity=self.equity,
            proposed_notional=proposed,
            returns=s.returns[max(0, i + 1 - window) : i + 1],
            open_position_returns=MappingProxyType(others),
            symbol_record=self.symbol_records[k],
            setup_records=MappingProxyType(dict(self.setup_records[k])),
        )
        return s.series.evaluate_at(i, context=context), self._win(k, i)

    def _fractions(self, k: int, i: int, win: float | None) -> dict[str, float]:
        s = self.series[k]
        market = {f"f_{name}": float(s.fractions[name][i]) for name in MARKET_FRACTIONS}
        return market | {"f_win_rate": math.nan if win is None else win}

    def hypothetical(self, k: int, i: int, ev: SignalEvaluation, win: float) -> None:
        s = self.series[k]
        o = s.outcome(i)
        self.setups.append(
            {
                "symbol": s.symbol,
                "signal_ts": ev.ts,
                "signal_idx": i,
                "score": ev.score,
                "tier": str(ev.tier),
                "decision": str(ev.decision),
                "direction": str(ev.direction),
                "setup": ev.setup,
                **self._fractions(k, i, win),
                "status": o.status,
                "entry_ts": int(s.bars.ts_ms[o.entry_idx]) if o.entry_idx >= 0 else None,
                "exit_ts": int(s.bars.ts_ms[o.exit_idx]) if o.exit_idx >= 0 else None,
                "exit_kind": o.exit_kind,
                "r_multiple": o.r_multiple if o.status == "CLOSED" else None,
                "traded": False,
            }
        )

    def candidate(
        self, k: int, i: int, now_ms: int, ev: SignalEvaluation | None, win: float | None
    ) -> tuple[str, SignalEvaluation | None, float | None]:
        """Try to trade bar ``i`` of series ``k``: (what happened as a funnel label, the evaluation if any)."""
        s = self.series[k]
        if k in self.open:
            return "skipped: position open on the symbol", ev, win
        if self.equity <= 0:
            return "skipped: equity exhausted", ev, win
        if win is None:
            win = self._win(k, i)
        # The exact score is the win-less base plus the win-rate points; the margin keeps this a superset.
        if tier_for_score(min(100.0, float(self.base_score[k][i]) + self.w_win * win + 1e-9)) is Tier.SKIP:
            return "skipped: score below 60 with the current win records", ev, win
        if i + 1 >= s.n:
            return "skipped: no next candle to enter on", ev, win
        gate = self.scheduler.gate(s.symbol, now_ms)
        if not gate.allowed:
            return f"gated: {gate.reasons[0].code}", ev, win
        if ev is None:
            ev, win = self.evaluate(k, i, now_ms)
        return self._enter(k, i, now_ms, ev), ev, win

    def _enter(self, k: int, i: int, now_ms: int, ev: SignalEvaluation) -> str:
        s, cfg = self.series[k], self.config
        if ev.decision is not Decision.ENTER:
            return f"decision: {ev.decision}"
        if ev.entry is None or ev.stop is None:  # an ENTER always has a setup; this narrows the types
            return "decision: no setup"
        sizing = size_position(
            equity=self.equity,
            entry_price=ev.entry,
            stop_price=ev.stop,
            tier=ev.tier,
            limits=cfg.limits,
            open_positions=len(self.open),
        )
        if sizing.quantity <= 0:
            return f"no size: {sizing.reasons[0]}"
        if s.outcome(i).status == "VOID":
            self._failure(s.symbol, now_ms, "entry void: the next open was beyond the stop or TP1")
            return "void entry"
        o = s.exact(i, sizing.quantity, cfg.limits.lot_step)
        closed = o.status == "CLOSED"
        row = len(self.trades)
        self.trades.append(
            {
                "symbol": s.symbol,
                "signal_ts": ev.ts,
                "ts": int(s.bars.ts_ms[o.entry_idx]),
                "exit_ts": int(s.bars.ts_ms[o.exit_idx]) if closed else None,
                "signal_idx": i,
                "entry_idx": o.entry_idx,
                "exit_idx": o.exit_idx if closed else None,
                "tp1_idx": o.tp1_idx if o.tp1_idx >= 0 else None,
                "score": ev.score,
                "tier": str(ev.tier),
                "direction": str(ev.direction),
                "setup": ev.setup,
                "confidence": ev.confidence,
                "equity_before": self.equity,
                "quantity": o.quantity,
                "notional": o.quantity * o.entry_price,
                "entry_price": o.entry_price,
                "stop": float(s.stop[i]),
                "tp1": float(s.tp1[i]),
                "tp2": float(s.tp2[i]),
                "tp1_quantity": o.tp1_quantity,
                "exit_price": o.exit_price if closed else None,
                "exit_kind": o.exit_kind,
                "status": o.status,
                "gross_pnl": o.gross,
                "fees": o.fees,
                "net_pnl": o.net,
                "unrealised_pnl": o.unrealised,
                "initial_risk": o.initial_risk,
                "r_multiple": o.r_multiple if closed else None,
            }
        )
        self.scheduler.record_trade(s.symbol, now_ms)
        self.open[k] = row
        # A position still open when the data ends frees its slot just after the symbol's last close.
        known_at = int(s.close_ts[o.exit_idx]) if closed else int(s.close_ts[-1]) + 1
        heapq.heappush(self.closures, (known_at, row, k))
        return "traded"

    def _eval_row(
        self, k: int, i: int, ev: SignalEvaluation, win: float | None, *, candidate: bool, hyp: bool, action: str | None
    ) -> dict[str, Any]:
        return {
            "symbol": self.series[k].symbol,
            "signal_ts": ev.ts,
            "signal_idx": i,
            "candidate": candidate,
            "hypothetical": hyp,
            "score": ev.score,
            "tier": str(ev.tier),
            "decision": str(ev.decision),
            "confidence": ev.confidence,
            "direction": str(ev.direction),
            "setup": ev.setup,
            **self._fractions(k, i, win),
            "action": action,
        }

    # --- the whole run ---------------------------------------------------------------------------------
    def _events(self) -> zip[tuple[int, int, int, bool, bool]]:
        """Every bar that acts, as (close time ms, series index, bar, is a candidate, is hypothetical), in
        time order (ties by symbol name)."""
        gap = self.config.scheduler.min_trade_gap_ms
        now, sym, bar, cand, hyp = [], [], [], [], []
        for k, s in enumerate(self.series):
            walk = np.asarray(_hypothetical_walk(s, gap) if self.config.hypothetical else [], dtype=np.int64)
            bars = np.union1d(self.candidates[k], walk).astype(np.int64)
            now.append(s.close_ts[bars])
            sym.append(np.full(bars.size, k, dtype=np.int64))
            bar.append(bars)
            cand.append(np.isin(bars, self.candidates[k]))
            hyp.append(np.isin(bars, walk))
        now_all, sym_all = np.concatenate(now), np.concatenate(sym)
        order = np.lexsort((sym_all, now_all))
        columns = (now_all, sym_all, np.concatenate(bar), np.concatenate(cand), np.concatenate(hyp))
        return zip(*(c[order].tolist() for c in columns), strict=True)

    def run(self) -> ReplayRun:
        for now_ms, k, i, is_candidate, is_hyp in self._events():
            self.settle(now_ms)
            ev: SignalEvaluation | None = None
            win: float | None = None
            action: str | None = None
            if is_hyp and self.equity > 0:
                ev, win = self.evaluate(k, i, now_ms)
                self.hypothetical(k, i, ev, win)
            if is_candidate:
                self.funnel["candidate bars (could reach a tier)"] += 1
                action, ev, win = self.candidate(k, i, now_ms, ev, win)
                self.funnel[action] += 1
                if is_hyp and self.setups and self.setups[-1]["signal_idx"] == i:
                    self.setups[-1]["traded"] = action == "traded"
            if ev is not None:
                row = self._eval_row(k, i, ev, win, candidate=is_candidate, hyp=is_hyp, action=action)
                self.evaluations.append(row)
        self.settle(2**62)
        trades = pl.DataFrame(self.trades, schema=_TRADE_SCHEMA)
        series = pl.DataFrame(
            {
                "symbol": [s.symbol for s in self.series],
                "bars": [s.n for s in self.series],
                "first_ts": [int(s.bars.ts_ms[0]) for s in self.series],
                "last_ts": [int(s.bars.ts_ms[-1]) for s in self.series],
                "split_ts": [s.split_ts for s in self.series],
                "setup_bars": [int(s.setups.size) for s in self.series],
                "candidate_bars": [int(c.size) for c in self.candidates],
            }
        )
        return ReplayRun(
            timeframe=self.timeframe,
            config=self.config,
            trades=trades,
            setups=pl.DataFrame(self.setups, schema=_SETUP_SCHEMA),
            every_setup=pl.concat([self._every_setup_bar(k, trades) for k in range(len(self.series))]),
            evaluations=pl.DataFrame(self.evaluations, schema=_EVAL_SCHEMA),
            equity=equity_curve(
                self.series, trades, initial_equity=self.config.initial_equity, fee_rate=self.config.execution.fee_rate
            ),
            funnel=MappingProxyType(dict(sorted(self.funnel.items()))),
            series=series,
        )

    def _every_setup_bar(self, k: int, trades: pl.DataFrame) -> pl.DataFrame:
        """Every setup bar of series ``k`` with its one-unit trade and its score given the win records the
        real path had when the bar closed (vectorised: the win-less base score plus the win-rate points)."""
        s = self.series[k]
        bars = s.setups
        now = s.close_ts[bars]
        closed = trades.filter((pl.col("symbol") == s.symbol) & (pl.col("status") == "CLOSED"))
        known = s.close_ts[closed["exit_idx"].to_numpy().astype(np.int64)]
        won = (closed["net_pnl"].to_numpy() > 0).astype(np.int64)
        setup_of_trade = np.asarray(closed["setup"].to_list(), dtype=object)

        def records(mask: npt.NDArray[np.bool_], at: IntArray) -> tuple[IntArray, IntArray]:
            order = np.argsort(known[mask], kind="stable")
            times, wins = known[mask][order], np.concatenate([[0], np.cumsum(won[mask][order])])
            count = np.searchsorted(times, at, side="right")  # outcomes known at or before the bar's close
            return wins[count], count

        sym_wins, sym_trades = records(np.ones(known.size, dtype=bool), now)
        key_wins, key_trades = np.zeros(bars.size, dtype=np.int64), np.zeros(bars.size, dtype=np.int64)
        pairs, pair_of_bar = np.unique(np.column_stack([s.direction[bars], s.ratio[bars]]), axis=0, return_inverse=True)
        keys = np.asarray([setup_key(int(d), float(r)) for d, r in pairs], dtype=object)[pair_of_bar.ravel()]
        for key in np.unique(keys):
            on = keys == key
            key_wins[on], key_trades[on] = records(setup_of_trade == key, now[on])
        combos, where = np.unique(
            np.column_stack([sym_wins, sym_trades, key_wins, key_trades]), axis=0, return_inverse=True
        )
        fraction = np.asarray(
            [
                win_rate_fraction(
                    shrunk_win_rate(WinRecord(int(a), int(b)), WinRecord(int(c), int(d)), self.scoring), self.scoring
                )
                for a, b, c, d in combos
            ]
        )
        win = fraction[where.ravel()] if combos.size else np.zeros(0)
        trade = s.setup_trades
        exit_idx = trade["exit_idx"]
        return pl.DataFrame(
            {
                "symbol": pl.Series([s.symbol] * bars.size, dtype=pl.String),
                "signal_ts": s.bars.ts_ms[bars],
                "signal_idx": bars,
                "leg": s.series.fib.leg_id[bars],
                "score": self.base_score[k][bars] + self.w_win * win,
                **{f"f_{name}": s.fractions[name][bars] for name in MARKET_FRACTIONS},
                "f_win_rate": win,
                "status": trade["status"],
                "exit_ts": pl.Series(s.bars.ts_ms[exit_idx.fill_null(0).to_numpy()]).set(exit_idx.is_null(), None),
                "r_multiple": trade["r_multiple"],
            },
            schema=_EVERY_SCHEMA,
        )


def replay(market: tuple[PreparedSeries, ...], *, config: BacktestConfig) -> ReplayRun:
    """Replay the signal path over prepared symbols (:func:`domain.backtest_market.prepare_market`) under
    ``config``, whose signal configuration may differ from the prepared one in its score weights only.

    Raises:
        InvalidDataError: no symbol, mixed timeframes, or a signal configuration that needs a new preparation.
    """
    return _Replay(market, config).run()
