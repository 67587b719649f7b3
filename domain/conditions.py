"""The 7-condition validator (issue 5): a setup is traded only when enough of these hold.

1. ``fib_proximity``    close within the tolerance of the nearest Fibonacci retracement of the leg; the
                        tolerance is the level's ATR zone (half-width, as a fraction of price), never wider
                        than ``fib_max_distance_pct`` (1%) of price; with ``use_atr_zone=False`` it is the 1%.
2. ``rsi``              RSI confirms the pullback: <= ``rsi_long_max`` for a long, >= ``rsi_short_min`` for a
                        short. The defaults 40/60 rather than 30/70 because in a trend RSI's range shifts (in
                        an uptrend it swings roughly 40-80), so a trend pullback rarely reaches 30.
3. ``ema_alignment``    EMA fast > mid > slow (20 > 50 > 200) for a long, the reverse for a short.
4. ``volume``           volume ratio (volume / 20-bar average) > ``volume_ratio_min`` (1.5).
5. ``market_structure`` the market trends: ADX(14) >= ``adx_trending_min`` (20; ADX < 20 is Wilder's range).
                        Why ADX: every setup here is a trend-continuation trade (a pullback inside an impulse
                        leg, entered in the leg's direction), so "consistent with the trade" means "trending".
                        ADX is direction-free, so the counter-move the entry waits for does not flip it, while
                        the efficiency ratio or an EMA slope measured over the pullback turn against the trade
                        exactly when the setup is best. Direction itself is condition 3's job.
6. ``position_size``    the sized position's notional <= ``max_position_fraction`` (5%) of equity.
7. ``correlation``      |Pearson correlation| of this symbol's recent returns with each open position's
                        < ``max_correlation`` (0.7). Absolute, because a strongly anti-correlated position
                        also concentrates risk when one side is short; too short an overlap (fewer than
                        ``min_correlation_samples`` returns) is not assessed and passes, saying so.

Confidence is the weighted share of conditions that pass (equal weights by default), in [0, 1]. A setup is
rejected when confidence < ``min_confidence`` (0.6) or when a hard condition fails (by default the risk limits
6 and 7: a position twice the size limit must not pass because six other conditions did). Every rejection
carries the failing conditions' details as its reasons.

Conditions 1-5 are computed on numpy arrays (one bar or a whole series at once, same code); 6 and 7 depend on
the portfolio and are computed per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from domain.errors import InvalidDataError
from domain.indicators import FloatArray

__all__ = [
    "CONDITION_NAMES",
    "ConditionConfig",
    "ConditionReport",
    "ConditionResult",
    "MarketSnapshot",
    "check_correlation",
    "check_position_size",
    "confidence_of",
    "fib_tolerance",
    "market_condition_flags",
    "validate_conditions",
]

BoolArray = npt.NDArray[np.bool_]

CONDITION_NAMES: tuple[str, ...] = (
    "fib_proximity",
    "rsi",
    "ema_alignment",
    "volume",
    "market_structure",
    "position_size",
    "correlation",
)


@dataclass(frozen=True, kw_only=True)
class ConditionConfig:
    """Thresholds of the 7 conditions. Fractions are 0-1 (0.01 = 1%), RSI and ADX on their 0-100 scale."""

    fib_max_distance_pct: float = 0.01
    use_atr_zone: bool = True
    rsi_long_max: float = 40.0
    rsi_short_min: float = 60.0
    volume_ratio_min: float = 1.5
    adx_trending_min: float = 20.0
    max_position_fraction: float = 0.05
    max_correlation: float = 0.7
    min_correlation_samples: int = 20
    min_confidence: float = 0.6
    #: Weight of each condition in the confidence, in CONDITION_NAMES order.
    weights: tuple[float, ...] = (1.0,) * 7
    #: Conditions whose failure rejects regardless of confidence.
    hard_conditions: frozenset[str] = frozenset({"position_size", "correlation"})

    def __post_init__(self) -> None:
        if len(self.weights) != len(CONDITION_NAMES) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise InvalidDataError("weights: one non-negative weight per condition, not all zero")
        unknown = self.hard_conditions - set(CONDITION_NAMES)
        if unknown:
            raise InvalidDataError(f"unknown hard condition(s) {sorted(unknown)}; known: {CONDITION_NAMES}")
        if not 0 <= self.min_confidence <= 1:
            raise InvalidDataError("min_confidence is a fraction in [0, 1]")


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """One condition's outcome: the measured ``value`` against its ``threshold`` (units in ``detail``)."""

    name: str
    passed: bool
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True, slots=True)
class ConditionReport:
    """All seven results in CONDITION_NAMES order, the confidence (0-1) and, when rejected, why."""

    results: tuple[ConditionResult, ...]
    confidence: float
    rejected: bool
    reasons: tuple[str, ...]

    @property
    def failed(self) -> tuple[ConditionResult, ...]:
        return tuple(r for r in self.results if not r.passed)


@dataclass(frozen=True, kw_only=True, slots=True)
class MarketSnapshot:
    """The market side of one bar: ``direction`` +1 long / -1 short, ``fib_distance`` = |close - level| /
    close (fraction), ``fib_zone_half_width`` in price units, indicators on their own scales."""

    direction: int
    close: float
    fib_ratio: float
    fib_distance: float
    fib_zone_half_width: float
    rsi: float
    ema_fast: float
    ema_mid: float
    ema_slow: float
    volume_ratio: float
    adx: float


def fib_tolerance(close: FloatArray, zone_half_width: FloatArray, config: ConditionConfig) -> FloatArray:
    """Allowed |close - level| / close for condition 1 (a fraction of price)."""
    cap = np.full(close.shape, config.fib_max_distance_pct)
    if not config.use_atr_zone:
        return cap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.fmin(zone_half_width / close, cap), dtype=np.float64)


def market_condition_flags(
    *,
    direction: npt.NDArray[np.int64],
    fib_distance: FloatArray,
    tolerance: FloatArray,
    rsi: FloatArray,
    ema_fast: FloatArray,
    ema_mid: FloatArray,
    ema_slow: FloatArray,
    volume_ratio: FloatArray,
    adx: FloatArray,
    config: ConditionConfig,
) -> dict[str, BoolArray]:
    """Pass/fail of conditions 1-5 per bar. NaN inputs (warm-up) and direction 0 fail."""
    long, short = direction > 0, direction < 0
    with np.errstate(invalid="ignore"):
        return {
            "fib_proximity": (long | short) & (fib_distance <= tolerance),
            "rsi": (long & (rsi <= config.rsi_long_max)) | (short & (rsi >= config.rsi_short_min)),
            "ema_alignment": (long & (ema_fast > ema_mid) & (ema_mid > ema_slow))
            | (short & (ema_fast < ema_mid) & (ema_mid < ema_slow)),
            "volume": volume_ratio > config.volume_ratio_min,
            "market_structure": adx >= config.adx_trending_min,
        }


def confidence_of(flags: Mapping[str, BoolArray | bool], config: ConditionConfig) -> FloatArray:
    """Weighted share (0-1) of passing conditions; ``flags`` maps every name in CONDITION_NAMES."""
    total = sum(config.weights)
    acc = np.zeros(1)
    for name, weight in zip(CONDITION_NAMES, config.weights, strict=True):
        acc = acc + weight * np.asarray(flags[name], dtype=np.float64)
    return np.asarray(acc / total, dtype=np.float64)


def check_position_size(*, proposed_notional: float, equity: float, config: ConditionConfig) -> ConditionResult:
    """Condition 6: the sized position's notional (quote currency) as a fraction of equity."""
    limit = config.max_position_fraction
    if not equity > 0:
        return ConditionResult("position_size", False, float("nan"), limit, f"equity {equity} is not positive")
    fraction = abs(proposed_notional) / equity
    # A size capped at exactly the limit comes back as quantity x price; float rounding must not reject it.
    passed = fraction <= limit * (1 + 1e-9)
    verb = "within" if passed else "exceeds"
    return ConditionResult(
        "position_size", passed, fraction, limit, f"position {fraction:.2%} of equity {verb} the {limit:.0%} limit"
    )


def check_correlation(
    *, returns: FloatArray, open_position_returns: Mapping[str, FloatArray], config: ConditionConfig
) -> ConditionResult:
    """Condition 7: the largest |correlation| of ``returns`` with any open position's returns.

    Series are aligned on their most recent end (both must be per-bar returns of the same timeframe);
    pairs with non-finite values are dropped.
    """
    limit = config.max_correlation
    worst, worst_name, assessed = 0.0, "", 0
    for name, other in open_position_returns.items():
        size = min(returns.shape[0], other.shape[0])
        a, b = returns[returns.shape[0] - size :], other[other.shape[0] - size :]
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        if a.shape[0] < config.min_correlation_samples:
            continue
        assessed += 1
        sa, sb = float(a.std()), float(b.std())
        corr = 0.0 if sa == 0 or sb == 0 else abs(float(np.mean((a - a.mean()) * (b - b.mean()))) / (sa * sb))
        if corr > worst:
            worst, worst_name = corr, name
    passed = worst < limit
    if not open_position_returns:
        detail = "no open positions"
    elif assessed == 0:
        detail = f"fewer than {config.min_correlation_samples} overlapping returns with any open position"
    else:
        relation = "<" if passed else ">="
        detail = f"|correlation| with {worst_name or 'open positions'} {worst:.2f} {relation} {limit:.2f}"
    return ConditionResult("correlation", passed, worst, limit, detail)


def _market_results(snapshot: MarketSnapshot, config: ConditionConfig) -> list[ConditionResult]:
    """Conditions 1-5 of one bar, with human-readable details, via the array code path."""
    s = snapshot
    tolerance = fib_tolerance(np.array([s.close]), np.array([s.fib_zone_half_width]), config)
    flags = market_condition_flags(
        direction=np.array([s.direction], dtype=np.int64),
        fib_distance=np.array([s.fib_distance]),
        tolerance=tolerance,
        rsi=np.array([s.rsi]),
        ema_fast=np.array([s.ema_fast]),
        ema_mid=np.array([s.ema_mid]),
        ema_slow=np.array([s.ema_slow]),
        volume_ratio=np.array([s.volume_ratio]),
        adx=np.array([s.adx]),
        config=config,
    )
    ok = {name: bool(flag[0]) for name, flag in flags.items()}
    tol = float(tolerance[0])
    side = "long" if s.direction > 0 else "short"
    rsi_limit = config.rsi_long_max if s.direction > 0 else config.rsi_short_min
    rsi_rule = f"<= {rsi_limit:g}" if s.direction > 0 else f">= {rsi_limit:g}"
    order = ">" if s.direction > 0 else "<"
    # The smaller of the two EMA gaps in the trade's direction (price units): > 0 means properly stacked.
    ema_margin = min(s.direction * (s.ema_fast - s.ema_mid), s.direction * (s.ema_mid - s.ema_slow))
    ema_text = f"EMA {s.ema_fast:.6g} / {s.ema_mid:.6g} / {s.ema_slow:.6g}"
    return [
        ConditionResult(
            "fib_proximity",
            ok["fib_proximity"],
            s.fib_distance,
            tol,
            f"close {s.fib_distance:.3%} from the {s.fib_ratio:g} level"
            + (" (inside its zone)" if ok["fib_proximity"] else f", beyond the {tol:.3%} tolerance"),
        ),
        ConditionResult(
            "rsi",
            ok["rsi"],
            s.rsi,
            rsi_limit,
            f"RSI {s.rsi:.1f} {'confirms' if ok['rsi'] else 'does not confirm'} a {side} (needs {rsi_rule})",
        ),
        ConditionResult(
            "ema_alignment",
            ok["ema_alignment"],
            ema_margin,
            0.0,
            f"{ema_text} in {order} order for a {side}"
            if ok["ema_alignment"]
            else f"{ema_text} not in {order} order for a {side} (EMA disorder)",
        ),
        ConditionResult(
            "volume",
            ok["volume"],
            s.volume_ratio,
            config.volume_ratio_min,
            f"volume ratio {s.volume_ratio:.2f} {'>' if ok['volume'] else '<='} {config.volume_ratio_min:g}"
            + ("" if ok["volume"] else " (no volume confirmation)"),
        ),
        ConditionResult(
            "market_structure",
            ok["market_structure"],
            s.adx,
            config.adx_trending_min,
            f"ADX {s.adx:.1f}: {'trending' if ok['market_structure'] else 'ranging'}"
            f" (trend needs >= {config.adx_trending_min:g})",
        ),
    ]


def validate_conditions(
    snapshot: MarketSnapshot,
    *,
    proposed_notional: float,
    equity: float,
    returns: FloatArray,
    open_position_returns: Mapping[str, FloatArray],
    config: ConditionConfig | None = None,
) -> ConditionReport:
    """Run all seven conditions for one setup (``snapshot.direction`` must be +1 or -1)."""
    cfg = config or ConditionConfig()
    if snapshot.direction not in (1, -1):
        raise InvalidDataError("validate_conditions needs a direction of +1 (long) or -1 (short)")
    results = [
        *_market_results(snapshot, cfg),
        check_position_size(proposed_notional=proposed_notional, equity=equity, config=cfg),
        check_correlation(returns=returns, open_position_returns=open_position_returns, config=cfg),
    ]
    confidence = float(confidence_of({r.name: r.passed for r in results}, cfg)[0])
    hard_failures = [r.name for r in results if not r.passed and r.name in cfg.hard_conditions]
    rejected = confidence < cfg.min_confidence or bool(hard_failures)
    reasons: list[str] = []
    if rejected:
        if confidence < cfg.min_confidence:
            reasons.append(f"confidence {confidence:.2f} < {cfg.min_confidence:.2f}")
        reasons += [f"hard limit failed: {name}" for name in hard_failures]
        reasons += [f"{r.name}: {r.detail}" for r in results if not r.passed]
    return ConditionReport(tuple(results), confidence, rejected, tuple(reasons))
