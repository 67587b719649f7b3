"""The 0-100 signal score and its execution tier.

Five components, each a continuous fraction in [0, 1] (never all-or-nothing), weighted to points:

==================  ======  ==============================================================================
component           points  fraction
==================  ======  ==============================================================================
technical              30   0.35 EMA stack + (0.40 Fibonacci proximity x level strength + 0.25 RSI confirmation)
                            x trend gate (1 with the EMAs stacked for the trade, ``trend_gate_floor`` 0.5 without)
volume                 20   linear ramp of the volume ratio from ``volume_floor`` (0.8) to ``volume_full`` (2.0)
volatility             20   bell curve of ATR / its 100-bar average around ``volatility_center`` (1.0): calm
                            markets give no room to the targets, explosive ones blow through the stop
win_rate               15   ramp of the shrunk historical win rate from ``win_rate_floor`` to ``win_rate_full``
market                 15   0.7 ADX ramp (15 -> 35) + 0.3 efficiency-ratio ramp (0.1 -> 0.5)
==================  ======  ==============================================================================

The weights live in :class:`ScoreWeights` so the backtest can fit them; the total is normalised by their sum,
so any non-negative weights keep the score within 0-100. NaN inputs (indicator warm-up) give a component 0.

Historical win rate: beta-binomial shrinkage in two levels. The symbol's closed trades update a Beta prior
(mean ``prior_win_rate``, strength ``prior_strength`` pseudo-trades); the setup's own trades then update a
Beta centred on the symbol's posterior mean (strength ``setup_prior_strength``). With no trades the rate is
the prior; with many it converges to the observed rate.

Tiers come from :mod:`domain.tiers` (FULL >= 75, REDUCED 60-75, SKIP < 60).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from domain.errors import InvalidDataError
from domain.indicators import FloatArray
from domain.tiers import Tier, tier_for_score

__all__ = [
    "COMPONENTS",
    "ScoreWeights",
    "ScoringConfig",
    "SignalScore",
    "WinRecord",
    "market_fraction",
    "score_total",
    "shrunk_win_rate",
    "technical_fraction",
    "to_signal_score",
    "volatility_fraction",
    "volume_fraction",
    "win_rate_fraction",
]

COMPONENTS: tuple[str, ...] = ("technical", "volume", "volatility", "win_rate", "market")


@dataclass(frozen=True, kw_only=True)
class ScoreWeights:
    """Points of each component when its fraction is 1 (normalised to a 100 total)."""

    technical: float = 30.0
    volume: float = 20.0
    volatility: float = 20.0
    win_rate: float = 15.0
    market: float = 15.0

    def __post_init__(self) -> None:
        values = [getattr(self, name) for name in COMPONENTS]
        if min(values) < 0 or sum(values) <= 0:
            raise InvalidDataError(f"score weights must be non-negative and not all zero, got {values}")

    def normalised(self) -> dict[str, float]:
        """Weights rescaled to sum to 100 points."""
        values = {name: float(getattr(self, name)) for name in COMPONENTS}
        total = sum(values.values())
        return {name: 100.0 * value / total for name, value in values.items()}


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """Shapes of the component curves; see the module docstring."""

    weights: ScoreWeights = ScoreWeights()
    fib_share: float = 0.40
    ema_share: float = 0.35
    rsi_share: float = 0.25
    #: Fib proximity earns partial credit out to this many condition-1 tolerances from the level.
    fib_proximity_span: float = 2.0
    #: EMA gap (in ATRs, in the trade's direction) that earns full credit for each of the two gaps.
    ema_gap_full_atr: float = 0.5
    rsi_long_full: float = 40.0
    rsi_short_full: float = 60.0
    #: Share (0-1) of the Fib and RSI credit kept when the EMAs are not stacked in the trade's direction.
    trend_gate_floor: float = 0.5
    #: RSI points over which the RSI credit falls from 1 to 0 past the full-credit level.
    rsi_ramp: float = 20.0
    volume_floor: float = 0.8
    volume_full: float = 2.0
    volatility_center: float = 1.0
    #: Width of the volatility bell in natural-log units of the ATR ratio (0.5: ratio 1.65 or 0.61 -> 0.61).
    volatility_sigma: float = 0.5
    adx_floor: float = 15.0
    adx_full: float = 35.0
    er_floor: float = 0.1
    er_full: float = 0.5
    adx_share: float = 0.7
    prior_win_rate: float = 0.5
    prior_strength: float = 10.0
    setup_prior_strength: float = 10.0
    win_rate_floor: float = 0.25
    win_rate_full: float = 0.75


@dataclass(frozen=True, slots=True)
class WinRecord:
    """Closed trades of one symbol or setup: ``wins`` of ``trades``."""

    wins: int = 0
    trades: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.wins <= self.trades:
            raise InvalidDataError(f"WinRecord needs 0 <= wins <= trades, got {self.wins}/{self.trades}")


@dataclass(frozen=True, slots=True)
class SignalScore:
    """A total score (0-100), its points per component and the tier it earns."""

    total: float
    points: Mapping[str, float]
    tier: Tier


def _unit(x: FloatArray) -> FloatArray:
    """``x`` clipped to [0, 1] with NaN -> 0 (fmax/fmin drop NaN: cheaper than nan_to_num + clip)."""
    return np.asarray(np.fmin(np.fmax(x, 0.0), 1.0), dtype=np.float64)


def _ramp(x: FloatArray, lo: float, hi: float) -> FloatArray:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between; NaN -> 0."""
    with np.errstate(invalid="ignore"):
        return _unit((x - lo) / (hi - lo))


def technical_fraction(
    *,
    direction: npt.NDArray[np.int64],
    fib_distance: FloatArray,
    tolerance: FloatArray,
    strength: FloatArray,
    rsi: FloatArray,
    ema_fast: FloatArray,
    ema_mid: FloatArray,
    ema_slow: FloatArray,
    atr: FloatArray,
    config: ScoringConfig,
) -> FloatArray:
    """Technical alignment in [0, 1]: Fib proximity weighted by level strength, EMA stack, RSI."""
    c = config
    sign = np.sign(direction).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        proximity = _ramp(-fib_distance / (c.fib_proximity_span * tolerance), -1.0, 0.0)
        fib = proximity * (0.5 + 0.5 * _unit(strength))
        gap_fast = _ramp(sign * (ema_fast - ema_mid) / atr, 0.0, c.ema_gap_full_atr)
        gap_slow = _ramp(sign * (ema_mid - ema_slow) / atr, 0.0, c.ema_gap_full_atr)
    ema = 0.5 * (gap_fast + gap_slow)
    rsi_long = _ramp(-rsi, -(c.rsi_long_full + c.rsi_ramp), -c.rsi_long_full)
    rsi_short = _ramp(rsi, c.rsi_short_full - c.rsi_ramp, c.rsi_short_full)
    rsi_part = np.where(direction > 0, rsi_long, np.where(direction < 0, rsi_short, 0.0))
    shares = c.fib_share + c.ema_share + c.rsi_share
    # A pullback against the EMA trend is a weaker setup even at a perfect level: the trend gates the rest.
    gate = c.trend_gate_floor + (1.0 - c.trend_gate_floor) * ema
    total = (c.ema_share * ema + gate * (c.fib_share * fib + c.rsi_share * rsi_part)) / shares
    return np.asarray(np.where(direction != 0, total, 0.0), dtype=np.float64)


def volume_fraction(volume_ratio: FloatArray, config: ScoringConfig) -> FloatArray:
    """Volume confirmation in [0, 1] from the volume ratio (1.0 = average volume)."""
    return _ramp(volume_ratio, config.volume_floor, config.volume_full)


def volatility_fraction(atr_ratio: FloatArray, config: ScoringConfig) -> FloatArray:
    """Volatility context in [0, 1]: 1 when ATR equals ``volatility_center`` x its usual level."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log(atr_ratio / config.volatility_center) / config.volatility_sigma
        out = np.exp(-0.5 * z * z)
    return _unit(out)


def market_fraction(adx: FloatArray, efficiency_ratio: FloatArray, config: ScoringConfig) -> FloatArray:
    """Market condition in [0, 1]: trend strength (ADX) and cleanliness (efficiency ratio)."""
    c = config
    adx_part = _ramp(adx, c.adx_floor, c.adx_full)
    er_part = _ramp(efficiency_ratio, c.er_floor, c.er_full)
    return np.asarray(c.adx_share * adx_part + (1.0 - c.adx_share) * er_part, dtype=np.float64)


def shrunk_win_rate(symbol: WinRecord, setup: WinRecord, config: ScoringConfig) -> float:
    """Posterior mean win rate (0-1) of a setup, shrunk toward the symbol's, shrunk toward the prior."""
    c = config
    symbol_rate = (symbol.wins + c.prior_strength * c.prior_win_rate) / (symbol.trades + c.prior_strength)
    return (setup.wins + c.setup_prior_strength * symbol_rate) / (setup.trades + c.setup_prior_strength)


def win_rate_fraction(win_rate: float, config: ScoringConfig) -> float:
    """Historical win-rate component in [0, 1]."""
    return float(_ramp(np.array([win_rate]), config.win_rate_floor, config.win_rate_full)[0])


def score_total(fractions: Mapping[str, FloatArray], config: ScoringConfig) -> FloatArray:
    """The 0-100 score from component fractions (arrays or 1-element arrays, all in [0, 1])."""
    weights = config.weights.normalised()
    # NaN counts as 0 so a warm-up gap can never produce an undefined score (tier_for_score refuses NaN).
    total = sum(weights[name] * _unit(np.asarray(fractions[name], dtype=np.float64)) for name in COMPONENTS)
    return np.asarray(np.fmin(np.fmax(total, 0.0), 100.0), dtype=np.float64)


def to_signal_score(fractions: Mapping[str, float], config: ScoringConfig) -> SignalScore:
    """One setup's :class:`SignalScore` from its component fractions."""
    weights = config.weights.normalised()
    total = float(score_total({k: np.array([v]) for k, v in fractions.items()}, config)[0])
    clean = {name: float(_unit(np.array([fractions[name]]))[0]) for name in COMPONENTS}
    points = {name: weights[name] * clean[name] for name in COMPONENTS}
    return SignalScore(total=total, points=MappingProxyType(points), tier=tier_for_score(total))
