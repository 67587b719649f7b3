"""Signal evaluation: indicators -> Fibonacci structure -> direction -> 7 conditions -> score -> tier/decision.

Two entry points share one code path:

- :func:`evaluate_signal` for live use: the newest CLOSED candle at ``now_ms`` of one symbol.
- :func:`signal_series` for replays: indicators, swings, conditions 1-5 and the market score components are
  computed once, vectorised, for every bar of a long series; :meth:`SignalSeries.evaluate_at` then turns any bar
  into a full :class:`SignalEvaluation` with the portfolio context of that moment, and
  :meth:`SignalSeries.decisions` scores every bar at once for a fixed context.

Every per-bar value depends on candles ``[0, t]`` only (TA-Lib recursions run forward, swings count once
confirmed), so ``evaluate_signal(candles[:t+1])`` equals ``signal_series(candles).evaluate_at(t)``; the tests
check exactly that. Because recursive indicators depend on where the series starts, pass the live path the same
amount of history every time (EMA200 needs ~800 bars to forget its seed).

Direction comes from the leg: a pullback inside an up leg (last confirmed swing a high) is a long, inside a
down leg a short. Entry is the evaluated bar's close (execution fills at the next open), the stop sits
``stop_atr_buffer`` ATRs beyond the leg's origin (the structure is void past it), targets are the 1.272 /
1.618 / 2.618 extensions.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from domain.conditions import (
    CONDITION_NAMES,
    ConditionConfig,
    ConditionResult,
    MarketSnapshot,
    check_correlation,
    check_position_size,
    confidence_of,
    fib_tolerance,
    market_condition_flags,
    validate_conditions,
)
from domain.errors import InvalidDataError
from domain.fibonacci import FibAnalysis, FibConfig, FibStructure, analyze_fibonacci
from domain.indicators import FloatArray, IndicatorConfig, with_indicators
from domain.scoring import (
    ScoringConfig,
    WinRecord,
    market_fraction,
    score_total,
    shrunk_win_rate,
    technical_fraction,
    to_signal_score,
    volatility_fraction,
    volume_fraction,
    win_rate_fraction,
)
from domain.tiers import TIER_SIZE_MULTIPLIER, Tier, tier_for_score
from domain.timeframes import timeframe_ms

__all__ = [
    "Decision",
    "Direction",
    "SignalConfig",
    "SignalContext",
    "SignalEvaluation",
    "SignalSeries",
    "closed_candles",
    "evaluate_signal",
    "setup_key",
    "signal_series",
]

_MARKET_CONDITIONS = CONDITION_NAMES[:5]
_MARKET_FRACTIONS = ("technical", "volume", "volatility", "market")


class Direction(StrEnum):
    LONG = "long"
    SHORT = "short"
    NONE = "none"


class Decision(StrEnum):
    ENTER = "enter"
    SKIP = "skip"
    REJECT = "reject"
    NO_SETUP = "no_setup"


@dataclass(frozen=True, kw_only=True)
class SignalConfig:
    """Everything the signal path can be tuned by; ``stop_atr_buffer`` is in ATRs."""

    indicators: IndicatorConfig = field(default_factory=IndicatorConfig)
    fib: FibConfig = field(default_factory=FibConfig)
    conditions: ConditionConfig = field(default_factory=ConditionConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    stop_atr_buffer: float = 0.5

    def __post_init__(self) -> None:
        ind = self.indicators
        if len(ind.ema_periods) != 3 or ind.adx_period is None or ind.er_period is None:
            raise InvalidDataError("signals need three EMA periods (fast, mid, slow), ADX and ER")
        if ind.atr_ratio_period is None:
            raise InvalidDataError("signals need atr_ratio_period for the volatility context")


@dataclass(frozen=True, kw_only=True, eq=False)
class SignalContext:
    """The portfolio side of an evaluation. ``proposed_notional`` (quote currency) is the position the sizer
    would open; ``returns`` are this symbol's recent per-bar returns and ``open_position_returns`` those of
    each open position (aligned on their latest end); win records feed the historical win rate, per symbol
    and per :func:`setup_key`."""

    symbol: str
    timeframe: str
    equity: float
    proposed_notional: float
    returns: FloatArray = field(default_factory=lambda: np.empty(0))
    open_position_returns: Mapping[str, FloatArray] = field(default_factory=lambda: MappingProxyType({}))
    symbol_record: WinRecord = field(default_factory=WinRecord)
    setup_records: Mapping[str, WinRecord] = field(default_factory=lambda: MappingProxyType({}))


def setup_key(direction: int, ratio: float) -> str:
    """Name of a setup for win-rate bookkeeping, e.g. ``fib0.618_long``."""
    return f"fib{ratio:g}_{'long' if direction > 0 else 'short'}"


def _plain(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


@dataclass(frozen=True, kw_only=True)
class SignalEvaluation:
    """The verdict on one bar: score (0-100) with its component points, the 7 condition results, confidence
    (0-1), tier, decision and the reasons behind it; prices in quote currency, ``ts`` the bar's open (ms)."""

    symbol: str
    timeframe: str
    ts: int
    direction: Direction
    setup: str | None
    score: float
    components: Mapping[str, float]
    conditions: tuple[ConditionResult, ...]
    confidence: float
    rejected: bool
    tier: Tier
    decision: Decision
    reasons: tuple[str, ...]
    entry: float | None
    stop: float | None
    targets: tuple[float, ...]
    structure: FibStructure | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN -> None) for the signals table."""
        fib: dict[str, Any] | None = None
        if self.structure is not None and self.entry is not None:
            s, level = self.structure, self.structure.nearest_retracement(self.entry)
            fib = {
                "leg": "up" if s.leg > 0 else "down",
                "origin": {"ts": s.origin.ts, "price": s.origin.price, "confirmed_ts": s.origin.confirmed_ts},
                "extreme": {"ts": s.extreme.ts, "price": s.extreme.price, "confirmed_ts": s.extreme.confirmed_ts},
                "level": {
                    "ratio": level.ratio,
                    "price": level.price,
                    "zone": [level.zone_low, level.zone_high],
                    "touches": level.touches,
                    "strength": level.strength,
                },
            }
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "ts": self.ts,
            "direction": str(self.direction),
            "setup": self.setup,
            "score": self.score,
            "components": {k: _plain(v) for k, v in self.components.items()},
            "conditions": [
                {
                    "name": c.name,
                    "passed": c.passed,
                    "value": _plain(c.value),
                    "threshold": _plain(c.threshold),
                    "detail": c.detail,
                }
                for c in self.conditions
            ],
            "confidence": self.confidence,
            "rejected": self.rejected,
            "tier": str(self.tier),
            "decision": str(self.decision),
            "reasons": list(self.reasons),
            "entry": _plain(self.entry),
            "stop": _plain(self.stop),
            "targets": [_plain(t) for t in self.targets],
            "fib": fib,
        }


def _win_fraction(direction: int, ratio: float, context: SignalContext, config: ScoringConfig) -> float:
    record = context.setup_records.get(setup_key(direction, ratio), WinRecord())
    return win_rate_fraction(shrunk_win_rate(context.symbol_record, record, config), config)


def _no_setup_reason(row: Mapping[str, Any], leg: int) -> str:
    if not row["ready"]:
        return "indicators still warming up (EMA/RSI/ADX/ATR baseline undefined at this bar)"
    if leg == 0:
        return "no valid Fibonacci structure (fewer than two confirmed swings, or price left the leg)"
    return "no setup"


@dataclass(frozen=True, eq=False)
class SignalSeries:
    """Context-free per-bar signal columns of one series plus its Fibonacci analysis (see module doc)."""

    frame: pl.DataFrame
    fib: FibAnalysis
    config: SignalConfig
    symbol: str | None

    def _context_checks(self, context: SignalContext) -> tuple[ConditionResult, ConditionResult]:
        cfg = self.config.conditions
        size = check_position_size(proposed_notional=context.proposed_notional, equity=context.equity, config=cfg)
        corr = check_correlation(
            returns=context.returns, open_position_returns=context.open_position_returns, config=cfg
        )
        return size, corr

    def evaluate_at(self, index: int, *, context: SignalContext) -> SignalEvaluation:
        """The full evaluation of bar ``index`` (negative counts from the end) under ``context``."""
        n = self.frame.height
        if not -n <= index < n:
            raise IndexError(f"bar {index} outside a series of {n} bars")
        index %= n
        row = self.frame.row(index, named=True)
        ind, direction = self.config.indicators, int(row["direction"])
        symbol, timeframe, ts = context.symbol, context.timeframe, int(row["ts"])
        if direction == 0:
            return SignalEvaluation(
                symbol=symbol,
                timeframe=timeframe,
                ts=ts,
                direction=Direction.NONE,
                setup=None,
                score=0.0,
                components=MappingProxyType({}),
                conditions=(),
                confidence=0.0,
                rejected=False,
                tier=Tier.SKIP,
                decision=Decision.NO_SETUP,
                reasons=(_no_setup_reason(row, int(self.fib.leg[index])),),
                entry=None,
                stop=None,
                targets=(),
                structure=None,
            )
        fast, mid, slow = ind.ema_columns
        snapshot = MarketSnapshot(
            direction=direction,
            close=row["close"],
            fib_ratio=row["fib_ratio"],
            fib_distance=row["fib_distance"],
            fib_zone_half_width=row["fib_zone_half_width"],
            rsi=row[ind.rsi_column],
            ema_fast=row[fast],
            ema_mid=row[mid],
            ema_slow=row[slow],
            volume_ratio=row[ind.volume_ratio_column],
            adx=row[str(ind.adx_column)],
        )
        report = validate_conditions(
            snapshot,
            proposed_notional=context.proposed_notional,
            equity=context.equity,
            returns=context.returns,
            open_position_returns=context.open_position_returns,
            config=self.config.conditions,
        )
        fractions = {name: float(row[f"f_{name}"]) for name in _MARKET_FRACTIONS}
        fractions["win_rate"] = _win_fraction(direction, row["fib_ratio"], context, self.config.scoring)
        score = to_signal_score(fractions, self.config.scoring)
        failed = tuple(f"{r.name}: {r.detail}" for r in report.failed)
        if report.rejected:
            decision, reasons = Decision.REJECT, report.reasons
        elif score.tier is Tier.SKIP:
            decision, reasons = Decision.SKIP, (f"score {score.total:.1f} earns tier SKIP", *failed)
        else:
            decision, reasons = Decision.ENTER, (f"score {score.total:.1f} earns tier {score.tier}", *failed)
        return SignalEvaluation(
            symbol=symbol,
            timeframe=timeframe,
            ts=ts,
            direction=Direction.LONG if direction > 0 else Direction.SHORT,
            setup=setup_key(direction, row["fib_ratio"]),
            score=score.total,
            components=score.points,
            conditions=report.results,
            confidence=report.confidence,
            rejected=report.rejected,
            tier=score.tier,
            decision=decision,
            reasons=reasons,
            entry=row["close"],
            stop=row["stop"],
            targets=tuple(row[f"target_{k + 1}"] for k in range(len(self.config.fib.extension_ratios))),
            structure=self.fib.structure_at(index),
        )

    def decisions(self, *, context: SignalContext) -> pl.DataFrame:
        """Score, confidence, tier and decision of every bar for one fixed ``context`` (vectorised; equal to
        :meth:`evaluate_at` bar by bar). Columns: ts, direction, setup_ratio, score, confidence, rejected,
        tier, decision."""
        f, cfg = self.frame, self.config
        direction = f["direction"].to_numpy().astype(np.int64)
        ratio = f["fib_ratio"].to_numpy()
        size, corr = self._context_checks(context)
        flags: dict[str, Any] = {name: f[f"c_{name}"].to_numpy() for name in _MARKET_CONDITIONS}
        flags |= {"position_size": size.passed, "correlation": corr.passed}
        confidence = confidence_of(flags, cfg.conditions)
        hard_fail = any(not r.passed and r.name in cfg.conditions.hard_conditions for r in (size, corr))
        for name in cfg.conditions.hard_conditions & set(_MARKET_CONDITIONS):
            hard_fail = hard_fail | ~flags[name]
        has_setup = direction != 0
        rejected = has_setup & ((confidence < cfg.conditions.min_confidence) | hard_fail)
        win = np.zeros(f.height)
        for d in (1, -1):
            for r in self.config.fib.retracement_ratios:
                win[(direction == d) & (ratio == r)] = _win_fraction(d, r, context, cfg.scoring)
        fractions = {name: f[f"f_{name}"].to_numpy() for name in _MARKET_FRACTIONS} | {"win_rate": win}
        score = np.where(has_setup, score_total(fractions, cfg.scoring), 0.0)
        tier_code = np.where(has_setup, _tier_codes(score), 0)
        skip_code = _TIER_ORDER.index(Tier.SKIP)
        decision_code = np.where(~has_setup, 3, np.where(rejected, 2, np.where(tier_code == skip_code, 1, 0)))
        return pl.DataFrame(
            {
                "ts": f["ts"],
                "direction": f["direction"],
                "setup_ratio": f["fib_ratio"],
                "score": score,
                "confidence": np.where(has_setup, confidence, 0.0),
                "rejected": rejected,
                "tier": _labels(tier_code, [str(t) for t in _TIER_ORDER]),
                "decision": _labels(decision_code, [str(d) for d in Decision]),
            }
        )


#: Tiers from the smallest to the largest size multiplier (tier_for_score is monotone in the score).
_TIER_ORDER: tuple[Tier, ...] = tuple(sorted(Tier, key=TIER_SIZE_MULTIPLIER.__getitem__))


def _tier_codes(score: FloatArray) -> npt.NDArray[np.int64]:
    """``_TIER_ORDER`` index of ``tier_for_score(s)`` for every score, with O(log n) calls to it: because
    the tier is monotone in the score, the boundaries are found by bisection over the sorted scores."""
    ordered = np.unique(score)
    rank = {tier: k for k, tier in enumerate(_TIER_ORDER)}
    bounds = [
        ordered[bisect_left(range(ordered.shape[0]), k, key=lambda i: rank[tier_for_score(float(ordered[i]))])]
        if ordered.shape[0] and rank[tier_for_score(float(ordered[-1]))] >= k
        else np.inf
        for k in range(1, len(_TIER_ORDER))
    ]
    return np.searchsorted(np.asarray(bounds), score, side="right").astype(np.int64)


def _labels(codes: npt.NDArray[np.int64], labels: list[str]) -> pl.Series:
    return pl.Series(codes).replace_strict(list(range(len(labels))), labels, return_dtype=pl.String)


def closed_candles(candles: pl.DataFrame, *, timeframe: str, now_ms: int) -> pl.DataFrame:
    """The candles that have closed at ``now_ms`` (open + one timeframe <= now_ms)."""
    return candles.filter(pl.col("ts") + timeframe_ms(timeframe) <= now_ms)


def signal_series(candles: pl.DataFrame, *, config: SignalConfig | None = None) -> SignalSeries:
    """Per-bar signal columns of ONE series of closed candles (candle schema, ascending ``ts``).

    Raises:
        InvalidDataError: more than one symbol, or the candle schema is not met.
    """
    cfg = config or SignalConfig()
    symbol: str | None = None
    if "symbol" in candles.columns:
        symbols = candles["symbol"].unique().to_list()
        if len(symbols) > 1:
            raise InvalidDataError("signal_series takes one series; filter the frame to one symbol first")
        symbol = str(symbols[0]) if symbols else None
    ind = cfg.indicators
    frame = with_indicators(candles, config=ind)
    fib = analyze_fibonacci(frame, config=cfg.fib, atr_column=ind.atr_column)
    close, atr = frame["close"].to_numpy(), frame[ind.atr_column].to_numpy()
    fast, mid, slow = (frame[c].to_numpy() for c in ind.ema_columns)
    rsi, volume_ratio = frame[ind.rsi_column].to_numpy(), frame[ind.volume_ratio_column].to_numpy()
    adx, er = frame[str(ind.adx_column)].to_numpy(), frame[str(ind.er_column)].to_numpy()
    atr_ratio = frame[str(ind.atr_ratio_column)].to_numpy()
    # No setup before every indicator has warmed up: a NaN EMA200 would otherwise just fail condition 3
    # while the rest of the score still trades.
    ready = np.isfinite(slow) & np.isfinite(rsi) & np.isfinite(adx) & np.isfinite(atr_ratio)
    n, direction = frame.height, np.where(ready, fib.leg, 0)
    leg = np.maximum(fib.leg_id, 0)
    valid = direction != 0
    n_ret = len(cfg.fib.retracement_ratios)
    levels = fib.level_price[leg] if fib.level_price.shape[0] else np.full((n, fib.level_price.shape[1]), np.nan)
    ratios = np.asarray(cfg.fib.retracement_ratios)
    nearest = np.maximum(fib.nearest, 0)
    pick = (np.arange(n), nearest)
    strength = fib.strength[leg][pick] if fib.strength.shape[0] else np.full(n, np.nan)
    origin = fib.swings.price[np.maximum(leg - 1, 0)] if fib.swings.price.shape[0] else np.full(n, np.nan)
    tolerance = fib_tolerance(close, fib.zone_half_width, cfg.conditions)
    flags = market_condition_flags(
        direction=direction,
        fib_distance=fib.distance,
        tolerance=tolerance,
        rsi=rsi,
        ema_fast=fast,
        ema_mid=mid,
        ema_slow=slow,
        volume_ratio=volume_ratio,
        adx=adx,
        config=cfg.conditions,
    )
    sc = cfg.scoring
    fractions = {
        "technical": technical_fraction(
            direction=direction,
            fib_distance=fib.distance,
            tolerance=tolerance,
            strength=strength,
            rsi=rsi,
            ema_fast=fast,
            ema_mid=mid,
            ema_slow=slow,
            atr=atr,
            config=sc,
        ),
        "volume": volume_fraction(volume_ratio, sc),
        "volatility": volatility_fraction(atr_ratio, sc),
        "market": market_fraction(adx, er, sc),
    }
    nan = np.nan
    frame = frame.with_columns(
        pl.Series("ready", ready, dtype=pl.Boolean),
        pl.Series("direction", direction, dtype=pl.Int8),
        pl.Series("fib_ratio", np.where(valid, ratios[nearest], nan)),
        pl.Series("fib_level", np.where(valid, levels[:, :n_ret][pick], nan)),
        pl.Series("fib_distance", fib.distance),
        pl.Series("fib_zone_half_width", np.where(valid, fib.zone_half_width, nan)),
        pl.Series("fib_tolerance", np.where(valid, tolerance, nan)),
        pl.Series("fib_strength", np.where(valid, strength, nan)),
        pl.Series("stop", np.where(valid, origin - direction * cfg.stop_atr_buffer * atr, nan)),
        *(
            pl.Series(f"target_{k + 1}", np.where(valid, levels[:, n_ret + k], nan))
            for k in range(len(cfg.fib.extension_ratios))
        ),
        *(pl.Series(f"c_{name}", flag, dtype=pl.Boolean) for name, flag in flags.items()),
        *(pl.Series(f"f_{name}", value) for name, value in fractions.items()),
    )
    return SignalSeries(frame=frame, fib=fib, config=cfg, symbol=symbol)


def evaluate_signal(
    candles: pl.DataFrame, *, context: SignalContext, now_ms: int, config: SignalConfig | None = None
) -> SignalEvaluation:
    """Evaluate the newest candle of ``context.symbol`` that is closed at ``now_ms`` (epoch ms).

    ``candles`` may hold other symbols (a ``symbol`` column) and the still-open candle; both are dropped.

    Raises:
        InvalidDataError: no closed candle of the symbol, or the candle schema is not met.
    """
    if "symbol" in candles.columns:
        candles = candles.filter(pl.col("symbol") == context.symbol)
    window = closed_candles(candles, timeframe=context.timeframe, now_ms=now_ms)
    if window.height == 0:
        raise InvalidDataError(f"no closed {context.timeframe} candle of {context.symbol} at {now_ms}")
    return signal_series(window, config=config).evaluate_at(-1, context=context)
