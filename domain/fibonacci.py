"""Dynamic Fibonacci structure: confirmed zigzag swings, ATR-wide retracement zones, extension targets and
confluence with historical support/resistance.

Swings. An ATR-scaled zigzag: after a swing low, the highest high since then is the candidate swing high; it
is CONFIRMED at the first later bar whose close lies ``threshold`` below it (and symmetrically for lows), where
``threshold = max(atr_multiple * ATR[t], min_move_pct * close[t])`` at that confirming bar ``t``. Because the
threshold is in ATRs it adapts to the timeframe and to the current volatility by itself. The state machine
reads bars strictly in order, so everything known at bar ``t`` depends on candles ``[0, t]`` only, and each
:class:`Swing` records both the bar of its extreme (``index``) and the bar that confirmed it
(``confirmed_index``). Appending future candles never changes a swing confirmed at or before ``t``.

Structure at bar t. The last two swings confirmed by ``t`` form the impulse leg: low -> high is an UP leg (a
pullback in it is a long setup), high -> low a DOWN leg. Retracements ``extreme - r * (extreme - origin)`` for
r in 0.236/0.382/0.5/0.618/0.786 are zones ``level +- zone_atr_multiple * ATR[t]``; extensions ``origin +
e * (extreme - origin)`` for e in 1.272/1.618/2.618 are targets. The structure is void once price trades
beyond the origin (a >100% retracement) or above/below the extreme again.

Confluence. A level's strength starts from a per-ratio base (0.618 strongest) and grows with the number of
earlier confirmed swing extremes, highs and lows alike (support turns into resistance), that lie within
``confluence_atr_multiple * ATR`` of it: a price that has turned the market several times is a stronger level.
Only swings confirmed before the leg's own confirmation bar count, so this is free of look-ahead too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum

import numpy as np
import numpy.typing as npt
import polars as pl

from domain.errors import InvalidDataError
from domain.indicators import FloatArray, with_atr

__all__ = [
    "FibAnalysis",
    "FibConfig",
    "FibLevel",
    "FibStructure",
    "LevelKind",
    "Swing",
    "SwingKind",
    "analyze_fibonacci",
    "zigzag",
]

IntArray = npt.NDArray[np.int64]


class SwingKind(IntEnum):
    """A swing high (+1) or swing low (-1); the sign is the direction of the leg that ends there."""

    HIGH = 1
    LOW = -1


class LevelKind(StrEnum):
    RETRACEMENT = "retracement"
    EXTENSION = "extension"


@dataclass(frozen=True, slots=True)
class Swing:
    """A confirmed turning point: the extreme at bar ``index`` (open time ``ts``, ms), known from bar
    ``confirmed_index`` (open time ``confirmed_ts``) on."""

    kind: SwingKind
    index: int
    ts: int
    price: float
    confirmed_index: int
    confirmed_ts: int


@dataclass(frozen=True, slots=True)
class FibLevel:
    """One Fibonacci level: ``price`` with its zone ``[zone_low, zone_high]`` (price units), ``touches`` =
    earlier swing extremes near it, ``strength`` in [0, 1]."""

    kind: LevelKind
    ratio: float
    price: float
    zone_low: float
    zone_high: float
    touches: int
    strength: float


@dataclass(frozen=True, slots=True)
class FibStructure:
    """The Fibonacci map of the impulse leg ``origin -> extreme`` as known at bar ``as_of_index``."""

    as_of_index: int
    origin: Swing
    extreme: Swing
    atr: float
    retracements: tuple[FibLevel, ...]
    extensions: tuple[FibLevel, ...]

    @property
    def leg(self) -> int:
        """+1 for an up leg (low -> high, long setups), -1 for a down leg."""
        return int(self.extreme.kind)

    def nearest_retracement(self, price: float) -> FibLevel:
        """The retracement level closest to ``price``."""
        return min(self.retracements, key=lambda level: abs(level.price - price))


@dataclass(frozen=True, kw_only=True)
class FibConfig:
    """Zigzag and level parameters. ATR multiples are in units of ATR(``atr_period``)."""

    atr_period: int = 14
    atr_multiple: float = 2.5
    min_move_pct: float = 0.0
    retracement_ratios: tuple[float, ...] = (0.236, 0.382, 0.5, 0.618, 0.786)
    #: Base strength (0-1) of each retracement ratio before confluence; the golden ratio ranks first.
    retracement_weights: tuple[float, ...] = (0.4, 0.55, 0.6, 0.7, 0.5)
    extension_ratios: tuple[float, ...] = (1.272, 1.618, 2.618)
    extension_weight: float = 0.5
    zone_atr_multiple: float = 0.5
    confluence_atr_multiple: float = 0.5
    #: How many earlier swings count as historical support/resistance.
    confluence_lookback: int = 30
    #: Strength gained per touching swing, multiplicative on the base (capped at 1).
    confluence_bonus: float = 0.15

    def __post_init__(self) -> None:
        if len(self.retracement_weights) != len(self.retracement_ratios):
            raise InvalidDataError("retracement_weights needs one weight per retracement ratio")
        if self.atr_multiple <= 0 or self.min_move_pct < 0 or self.zone_atr_multiple < 0:
            raise InvalidDataError("atr_multiple must be > 0; min_move_pct, zone_atr_multiple >= 0")
        if self.confluence_lookback < 1:
            raise InvalidDataError("confluence_lookback must be >= 1 swing")


@dataclass(frozen=True, slots=True)
class SwingArrays:
    """Swings as parallel arrays in confirmation order (kinds alternate)."""

    kind: IntArray
    index: IntArray
    price: FloatArray
    confirmed_index: IntArray


def zigzag(
    high: FloatArray, low: FloatArray, close: FloatArray, threshold: FloatArray
) -> tuple[SwingArrays, FloatArray]:
    """Confirmed zigzag swings and, per bar, the pending extreme since the last confirmed swing.

    ``threshold`` is the reversal distance per bar in price units (NaN or <= 0 skips the bar, e.g. during the
    ATR warm-up). Returns (swings, pending) where ``pending[t]`` is the lowest low since the last confirmed
    high (or highest high since the last confirmed low) as of bar t, NaN before the first swing.
    """
    n = close.shape[0]
    hi_l, lo_l, cl_l, th_l = high.tolist(), low.tolist(), close.tolist(), threshold.tolist()
    kinds: list[int] = []
    idxs: list[int] = []
    prices: list[float] = []
    confs: list[int] = []
    pending = [math.nan] * n

    def record(kind: int, index: int, price: float, confirmed: int) -> None:
        kinds.append(kind)
        idxs.append(index)
        prices.append(price)
        confs.append(confirmed)

    # state 0: no swing yet; +1: last swing a low, tracking a candidate high; -1: the mirror image.
    state = 0
    cand = opp = math.nan
    cand_i = opp_i = -1
    top, top_i, bottom, bottom_i = -math.inf, -1, math.inf, -1
    for t in range(n):
        th = th_l[t]
        if not th > 0:  # also catches NaN
            continue
        h, lo, c = hi_l[t], lo_l[t], cl_l[t]
        if state == 0:
            if h > top:
                top, top_i = h, t
            if lo < bottom:
                bottom, bottom_i = lo, t
            high_done, low_done = c <= top - th, c >= bottom + th
            if high_done and (not low_done or top_i <= bottom_i):
                record(1, top_i, top, t)
                state, cand_i = -1, min(range(top_i, t + 1), key=lo_l.__getitem__)
                cand = lo_l[cand_i]
                opp_i = max(range(cand_i, t + 1), key=hi_l.__getitem__)
                opp = hi_l[opp_i]
            elif low_done:
                record(-1, bottom_i, bottom, t)
                state, cand_i = 1, max(range(bottom_i, t + 1), key=hi_l.__getitem__)
                cand = hi_l[cand_i]
                opp_i = min(range(cand_i, t + 1), key=lo_l.__getitem__)
                opp = lo_l[opp_i]
            else:
                continue
        elif state == 1:
            if h > cand:
                cand, cand_i, opp, opp_i = h, t, lo, t
            elif lo < opp:
                opp, opp_i = lo, t
            if c <= cand - th:
                record(1, cand_i, cand, t)
                # The lowest low since the confirmed high becomes the candidate low; the opposite tracker
                # restarts from it, scanning the few bars between it and now.
                state, cand, cand_i = -1, opp, opp_i
                opp_i = max(range(cand_i, t + 1), key=hi_l.__getitem__)
                opp = hi_l[opp_i]
        else:
            if lo < cand:
                cand, cand_i, opp, opp_i = lo, t, h, t
            elif h > opp:
                opp, opp_i = h, t
            if c >= cand + th:
                record(-1, cand_i, cand, t)
                state, cand, cand_i = 1, opp, opp_i
                opp_i = min(range(cand_i, t + 1), key=lo_l.__getitem__)
                opp = lo_l[opp_i]
        pending[t] = cand
    swings = SwingArrays(
        kind=np.asarray(kinds, dtype=np.int64),
        index=np.asarray(idxs, dtype=np.int64),
        price=np.asarray(prices, dtype=np.float64),
        confirmed_index=np.asarray(confs, dtype=np.int64),
    )
    return swings, np.asarray(pending, dtype=np.float64)


def _confluence_touches(prices: FloatArray, levels: FloatArray, tolerance: FloatArray, lookback: int) -> IntArray:
    """touches[j, k]: how many of the ``lookback`` swings before leg j's origin (swing j-1) lie within
    ``tolerance[j]`` of ``levels[j, k]``. Chunked so the (legs x levels x lookback) cube stays small."""
    m = levels.shape[0]
    padded = np.concatenate([np.full(lookback, np.nan), prices])
    # windows[i] = prices[i - lookback : i]; leg j (origin j-1) looks at prices before j-1.
    windows = np.lib.stride_tricks.sliding_window_view(padded, lookback)
    out = np.zeros(levels.shape, dtype=np.int64)
    chunk = 4096
    for start in range(1, m, chunk):
        stop = min(m, start + chunk)
        win = windows[start - 1 : stop - 1]
        near = np.abs(win[:, None, :] - levels[start:stop, :, None]) <= tolerance[start:stop, None, None]
        out[start:stop] = near.sum(axis=2)
    return out


@dataclass(frozen=True, eq=False)
class FibAnalysis:
    """Swings, per-leg level tables and per-bar structure arrays of one series (see :func:`analyze_fibonacci`).

    Per leg j (swing j-1 -> swing j; row 0 unused): ``level_price``/``touches``/``strength`` with one column
    per ratio, retracements first then extensions. Per bar t: ``leg_id[t]`` (-1 when no valid structure),
    ``leg[t]`` (+1 up, -1 down, 0 none), nearest retracement ``nearest[t]`` (column), ``distance[t]``
    (|close - level| / close, a fraction) and ``zone_half_width[t]`` (price units).
    """

    config: FibConfig
    ts: IntArray
    atr: FloatArray
    swings: SwingArrays
    level_price: FloatArray
    touches: IntArray
    strength: FloatArray
    leg_id: IntArray
    leg: IntArray
    nearest: IntArray
    distance: FloatArray
    zone_half_width: FloatArray

    def swing(self, j: int) -> Swing:
        s = self.swings
        return Swing(
            kind=SwingKind(int(s.kind[j])),
            index=int(s.index[j]),
            ts=int(self.ts[s.index[j]]),
            price=float(s.price[j]),
            confirmed_index=int(s.confirmed_index[j]),
            confirmed_ts=int(self.ts[s.confirmed_index[j]]),
        )

    def swings_confirmed_by(self, t: int) -> tuple[Swing, ...]:
        """Every swing confirmed at or before bar ``t``, oldest first."""
        count = int(np.searchsorted(self.swings.confirmed_index, t, side="right"))
        return tuple(self.swing(j) for j in range(count))

    def structure_at(self, t: int) -> FibStructure | None:
        """The valid Fibonacci structure at bar ``t`` or None (fewer than two swings, or void)."""
        j = int(self.leg_id[t])
        if j < 1:
            return None
        cfg, half = self.config, float(self.zone_half_width[t])
        n_ret = len(cfg.retracement_ratios)
        ratios = (*cfg.retracement_ratios, *cfg.extension_ratios)
        rows = zip(
            ratios,
            self.level_price[j].tolist(),
            self.touches[j].tolist(),
            self.strength[j].tolist(),
            strict=True,
        )
        levels = tuple(
            FibLevel(
                kind=LevelKind.RETRACEMENT if k < n_ret else LevelKind.EXTENSION,
                ratio=ratio,
                price=price,
                zone_low=price - half,
                zone_high=price + half,
                touches=touches,
                strength=strength,
            )
            for k, (ratio, price, touches, strength) in enumerate(rows)
        )
        return FibStructure(
            as_of_index=t,
            origin=self.swing(j - 1),
            extreme=self.swing(j),
            atr=float(self.atr[t]),
            retracements=levels[:n_ret],
            extensions=levels[n_ret:],
        )


def analyze_fibonacci(
    candles: pl.DataFrame, *, config: FibConfig | None = None, atr_column: str | None = None
) -> FibAnalysis:
    """Swings and per-bar Fibonacci structure of ONE series (candle schema, ascending ``ts``).

    ``atr_column`` names an ATR column already on the frame (e.g. from ``with_indicators``); without it ATR
    is computed with ``config.atr_period``.

    Raises:
        InvalidDataError: the frame holds more than one symbol or lacks a candle or the ATR column.
    """
    cfg = config or FibConfig()
    if "symbol" in candles.columns and candles["symbol"].n_unique() > 1:
        raise InvalidDataError("analyze_fibonacci takes one series; filter the frame to one symbol first")
    if atr_column is None:
        atr_column = f"atr_{cfg.atr_period}"
        if atr_column not in candles.columns:
            candles = with_atr(candles, period=cfg.atr_period)
    missing = [c for c in ("ts", "high", "low", "close", atr_column) if c not in candles.columns]
    if missing:
        raise InvalidDataError(f"analyze_fibonacci: frame lacks column(s) {missing}")
    high, low = candles["high"].to_numpy(), candles["low"].to_numpy()
    close, atr = candles["close"].to_numpy(), candles[atr_column].to_numpy()
    threshold = np.maximum(cfg.atr_multiple * atr, cfg.min_move_pct * close)
    swings, pending = zigzag(high, low, close, threshold)
    m = swings.kind.shape[0]

    # Per-leg level table: leg j runs from swing j-1 (origin) to swing j (extreme).
    ratios = np.asarray((*cfg.retracement_ratios, *cfg.extension_ratios))
    n_ret = len(cfg.retracement_ratios)
    extreme = swings.price
    origin = np.concatenate([[np.nan], swings.price[:-1]]) if m else swings.price
    span = extreme - origin
    level_price = np.empty((m, ratios.shape[0]))
    level_price[:, :n_ret] = extreme[:, None] - ratios[None, :n_ret] * span[:, None]
    level_price[:, n_ret:] = origin[:, None] + ratios[None, n_ret:] * span[:, None]
    tolerance = cfg.confluence_atr_multiple * atr[swings.confirmed_index] if m else np.empty(0)
    touches = _confluence_touches(swings.price, level_price, tolerance, cfg.confluence_lookback)
    base = np.asarray((*cfg.retracement_weights, *([cfg.extension_weight] * len(cfg.extension_ratios))))
    strength = np.minimum(1.0, base[None, :] * (1.0 + cfg.confluence_bonus * touches))

    # Per-bar structure: the last leg confirmed by t, void once price left the origin..extreme range.
    n = close.shape[0]
    leg_id = np.searchsorted(swings.confirmed_index, np.arange(n), side="right") - 1
    has_leg = leg_id >= 1
    j = np.where(has_leg, leg_id, 0)
    direction = np.where(has_leg, swings.kind[j], 0) if m else np.zeros(n, dtype=np.int64)
    org = origin[j] if m else np.full(n, np.nan)
    ext = extreme[j] if m else np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        # Up leg: the pullback (pending low) must hold above the origin and close stay below the extreme.
        intact = np.where(direction > 0, (pending > org) & (close < ext), (pending < org) & (close > ext))
    valid = has_leg & intact
    leg_id = np.where(valid, leg_id, -1)
    leg = np.where(valid, direction, 0).astype(np.int64)
    rets = level_price[j, :n_ret] if m else np.full((n, n_ret), np.nan)
    gaps = np.abs(rets - close[:, None])
    nearest = np.where(valid, np.argmin(np.where(np.isnan(gaps), np.inf, gaps), axis=1), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.where(valid, gaps[np.arange(n), np.maximum(nearest, 0)] / close, np.nan)
    return FibAnalysis(
        config=cfg,
        ts=candles["ts"].to_numpy(),
        atr=atr,
        swings=swings,
        level_price=level_price,
        touches=touches,
        strength=strength,
        leg_id=leg_id.astype(np.int64),
        leg=leg,
        nearest=nearest.astype(np.int64),
        distance=distance,
        zone_half_width=cfg.zone_atr_multiple * atr,
    )
