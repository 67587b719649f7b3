"""The smart scheduler: decides whether a symbol may trade now, as a serialisable state machine.

Gates, per symbol:

- **trade gap**: at least ``min_trade_gap_ms`` (default 5 min) between two trades of the same symbol;
- **cool-off**: after ``max_consecutive_failures`` (default 5) failures in a row the symbol is skipped for
  ``cooloff_ms``. It then works like a half-open circuit breaker: one success resets the count, one more
  failure sends it straight back into cool-off;
- **order book**: spread, depth near the mid on the side we take, and slippage estimated by walking the book
  (:func:`check_order_book`, a pure function whose result :meth:`SmartScheduler.gate` accepts);
- **latency**: p50/p95 over the last ``latency_window`` samples per symbol and per venue; a p95 above
  ``slow_latency_ms`` flags the key as slow (it gates only when ``block_slow`` is set).

The clock is injected: every method that needs the time takes ``now_ms`` (epoch milliseconds, UTC).
:meth:`SmartScheduler.to_dict` returns plain JSON-safe values and :meth:`SmartScheduler.from_dict` restores an
equal scheduler, so a flow can keep the state between runs.

Units: times in epoch milliseconds, durations in milliseconds, latencies in milliseconds, ``*_bps`` in basis
points (1 bps = 0.0001 = 0.01%), prices in quote currency per unit, amounts in base units.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final, Literal

import numpy as np

from domain.errors import InvalidDataError

__all__ = [
    "BookCheck",
    "BookLimits",
    "CoolOff",
    "FailureOutcome",
    "GateCode",
    "GateDecision",
    "GateReason",
    "LatencyStats",
    "SchedulerConfig",
    "SmartScheduler",
    "check_order_book",
]

_STATE_VERSION: Final = 1
LatencyKind = Literal["symbol", "venue"]
_BPS: Final = 10_000.0


class GateCode(StrEnum):
    """Why a symbol was held back."""

    TRADE_GAP = "TRADE_GAP"
    COOLING_OFF = "COOLING_OFF"
    EMPTY_BOOK = "EMPTY_BOOK"
    CROSSED_BOOK = "CROSSED_BOOK"
    SPREAD_TOO_WIDE = "SPREAD_TOO_WIDE"
    DEPTH_TOO_THIN = "DEPTH_TOO_THIN"
    SLIPPAGE_TOO_HIGH = "SLIPPAGE_TOO_HIGH"
    SLOW = "SLOW"


@dataclass(frozen=True, slots=True)
class GateReason:
    """One reason a symbol is gated: a code for programs and a sentence for people."""

    code: GateCode
    detail: str


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Scheduler thresholds. Durations in ms, latencies in ms."""

    min_trade_gap_ms: int = 5 * 60_000
    max_consecutive_failures: int = 5
    cooloff_ms: int = 30 * 60_000
    latency_window: int = 200
    slow_latency_ms: float = 1_000.0
    block_slow: bool = False

    def __post_init__(self) -> None:
        if self.min_trade_gap_ms < 0 or self.cooloff_ms < 0:
            raise InvalidDataError("SchedulerConfig: durations must be >= 0 ms")
        if self.max_consecutive_failures < 1:
            raise InvalidDataError("SchedulerConfig: max_consecutive_failures must be >= 1")
        if self.latency_window < 1:
            raise InvalidDataError("SchedulerConfig: latency_window must be >= 1 sample")
        if not self.slow_latency_ms > 0:
            raise InvalidDataError("SchedulerConfig: slow_latency_ms must be > 0")


@dataclass(frozen=True, slots=True)
class BookLimits:
    """Order-book thresholds.

    ``depth_band_bps``: the band around the mid (in bps of the mid) in which depth is counted;
    ``min_depth_multiple``: that depth, on the side we take, must be >= this many times the order amount;
    ``max_slippage_bps``: the average fill price from walking the book may be at most this far from the mid.
    """

    max_spread_bps: float = 10.0
    depth_band_bps: float = 50.0
    min_depth_multiple: float = 3.0
    max_slippage_bps: float = 20.0

    def __post_init__(self) -> None:
        values = (self.max_spread_bps, self.depth_band_bps, self.min_depth_multiple, self.max_slippage_bps)
        if any(math.isnan(v) or v < 0 for v in values):
            raise InvalidDataError("BookLimits: every threshold must be a number >= 0")


@dataclass(frozen=True, slots=True)
class BookCheck:
    """What the order book says about filling ``amount`` (base units) on ``side`` ("buy" or "sell").

    ``spread_bps`` and ``slippage_bps`` are relative to the mid; ``slippage_bps`` is adverse-positive (a buy
    filling above the mid is positive) and ``inf`` when the book cannot fill the whole amount.
    ``depth_in_band`` is the base amount resting within ``depth_band_bps`` of the mid on the side we take.
    """

    side: str
    amount: float
    mid: float
    spread_bps: float
    depth_in_band: float
    avg_fill_price: float
    slippage_bps: float
    reasons: tuple[GateReason, ...]

    @property
    def ok(self) -> bool:
        """True when the book passes every limit."""
        return not self.reasons


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency percentiles (ms) over the retained window of one symbol or venue."""

    key: str
    kind: LatencyKind
    samples: int
    p50_ms: float
    p95_ms: float
    slow: bool


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether ``symbol`` may trade at ``now_ms``; ``retry_at_ms`` is the earliest time the time-based gates
    open (None when only the book or latency holds it back, or when allowed)."""

    symbol: str
    now_ms: int
    allowed: bool
    reasons: tuple[GateReason, ...]
    retry_at_ms: int | None
    slow: bool


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """The effect of one recorded failure."""

    symbol: str
    consecutive_failures: int
    entered_cooloff: bool
    cooloff_until_ms: int | None


@dataclass(frozen=True, slots=True)
class CoolOff:
    """A symbol currently skipped, for reports."""

    symbol: str
    until_ms: int
    consecutive_failures: int
    last_failure: str | None


@dataclass(slots=True)
class _SymbolState:
    last_trade_ms: int | None = None
    consecutive_failures: int = 0
    cooloff_until_ms: int | None = None
    last_failure: str | None = None


def _percentiles(samples: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(samples, dtype=np.float64)
    p50, p95 = np.percentile(arr, [50.0, 95.0])
    return float(p50), float(p95)


class SmartScheduler:
    """Per-symbol trade gating with an injected clock. Not thread-safe; one instance per flow run."""

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self._symbols: dict[str, _SymbolState] = {}
        self._latency: dict[str, deque[float]] = {}
        self._venue_latency: dict[str, deque[float]] = {}

    def _state(self, symbol: str) -> _SymbolState:
        return self._symbols.setdefault(symbol, _SymbolState())

    # --- recording events -------------------------------------------------------------------------------
    def record_trade(self, symbol: str, now_ms: int) -> None:
        """A trade was placed for ``symbol`` at ``now_ms``: starts the minimum gap."""
        self._state(symbol).last_trade_ms = now_ms

    def record_success(self, symbol: str) -> None:
        """An attempt for ``symbol`` worked: the consecutive-failure count starts again from zero."""
        state = self._state(symbol)
        state.consecutive_failures = 0
        state.cooloff_until_ms = None

    def record_failure(self, symbol: str, now_ms: int, reason: str) -> FailureOutcome:
        """An attempt for ``symbol`` failed at ``now_ms``; enters cool-off at the configured count."""
        state = self._state(symbol)
        state.consecutive_failures += 1
        state.last_failure = reason
        entered = False
        if state.consecutive_failures >= self.config.max_consecutive_failures:
            already = state.cooloff_until_ms is not None and now_ms < state.cooloff_until_ms
            state.cooloff_until_ms = now_ms + self.config.cooloff_ms
            entered = not already
        return FailureOutcome(symbol, state.consecutive_failures, entered, state.cooloff_until_ms)

    def record_latency(self, symbol: str, latency_ms: float, *, venue: str | None = None) -> None:
        """One request's round trip (ms) for ``symbol`` (and its ``venue`` when given)."""
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise InvalidDataError(f"latency must be a finite number of ms >= 0, got {latency_ms!r}")
        window = self.config.latency_window
        self._latency.setdefault(symbol, deque(maxlen=window)).append(float(latency_ms))
        if venue is not None:
            self._venue_latency.setdefault(venue, deque(maxlen=window)).append(float(latency_ms))

    # --- questions ----------------------------------------------------------------------------------------
    def latency(self, key: str, *, kind: LatencyKind = "symbol") -> LatencyStats | None:
        """p50/p95 of ``key`` (a symbol, or a venue with ``kind="venue"``); None before any sample."""
        table = self._venue_latency if kind == "venue" else self._latency
        samples = table.get(key)
        if not samples:
            return None
        p50, p95 = _percentiles(samples)
        return LatencyStats(key, kind, len(samples), p50, p95, p95 > self.config.slow_latency_ms)

    def slow(self) -> tuple[LatencyStats, ...]:
        """Every symbol and venue whose p95 exceeds ``slow_latency_ms``, symbols first, by name."""
        found: list[LatencyStats] = []
        kinds: tuple[tuple[LatencyKind, dict[str, deque[float]]], ...] = (
            ("symbol", self._latency),
            ("venue", self._venue_latency),
        )
        for kind, table in kinds:
            for key in sorted(table):
                stats = self.latency(key, kind=kind)
                if stats is not None and stats.slow:
                    found.append(stats)
        return tuple(found)

    def cooling_off(self, now_ms: int) -> tuple[CoolOff, ...]:
        """Symbols skipped at ``now_ms`` because of repeated failures, by name."""
        report = []
        for symbol in sorted(self._symbols):
            state = self._symbols[symbol]
            if state.cooloff_until_ms is not None and now_ms < state.cooloff_until_ms:
                report.append(CoolOff(symbol, state.cooloff_until_ms, state.consecutive_failures, state.last_failure))
        return tuple(report)

    def gate(self, symbol: str, now_ms: int, *, book: BookCheck | None = None) -> GateDecision:
        """May ``symbol`` trade at ``now_ms``? Every failing gate is reported, not just the first.

        ``book`` is the result of :func:`check_order_book` for the intended order; without it the book is
        not checked (e.g. for paper trading on candles).
        """
        state = self._symbols.get(symbol, _SymbolState())
        reasons: list[GateReason] = []
        retry_at: int | None = None
        if state.last_trade_ms is not None:
            opens_at = state.last_trade_ms + self.config.min_trade_gap_ms
            if now_ms < opens_at:
                reasons.append(
                    GateReason(
                        GateCode.TRADE_GAP,
                        f"last trade {now_ms - state.last_trade_ms} ms ago; "
                        f"minimum gap is {self.config.min_trade_gap_ms} ms",
                    )
                )
                retry_at = opens_at
        if state.cooloff_until_ms is not None and now_ms < state.cooloff_until_ms:
            reasons.append(
                GateReason(
                    GateCode.COOLING_OFF,
                    f"{state.consecutive_failures} consecutive failures (last: {state.last_failure}); "
                    f"skipped until {state.cooloff_until_ms}",
                )
            )
            retry_at = max(retry_at or 0, state.cooloff_until_ms)
        if book is not None:
            reasons.extend(book.reasons)
        stats = self.latency(symbol)
        is_slow = stats is not None and stats.slow
        if is_slow and self.config.block_slow and stats is not None:
            reasons.append(
                GateReason(
                    GateCode.SLOW,
                    f"p95 latency {stats.p95_ms:.0f} ms > {self.config.slow_latency_ms:.0f} ms",
                )
            )
        return GateDecision(symbol, now_ms, not reasons, tuple(reasons), retry_at, is_slow)

    # --- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-safe values (str keys; int, float, bool, str, None, lists)."""
        return {
            "version": _STATE_VERSION,
            "config": asdict(self.config),
            "symbols": {name: asdict(state) for name, state in sorted(self._symbols.items())},
            "latency": {name: list(s) for name, s in sorted(self._latency.items())},
            "venue_latency": {name: list(s) for name, s in sorted(self._venue_latency.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmartScheduler:
        """Rebuild a scheduler from :meth:`to_dict` output.

        Raises:
            InvalidDataError: unknown version or malformed fields.
        """
        if data.get("version") != _STATE_VERSION:
            raise InvalidDataError(
                f"scheduler state version {data.get('version')!r} is not {_STATE_VERSION}; "
                "discard the stored state to start fresh"
            )
        try:
            scheduler = cls(SchedulerConfig(**data["config"]))
            for name, fields in data["symbols"].items():
                state = _SymbolState(**fields)
                _check_symbol_state(str(name), state)
                scheduler._symbols[str(name)] = state
            for target, source in (
                (scheduler._latency, data["latency"]),
                (scheduler._venue_latency, data["venue_latency"]),
            ):
                for name, samples in source.items():
                    for value in samples:
                        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                            raise InvalidDataError(f"bad latency sample {value!r} for {name!r}")
                    window = deque((float(v) for v in samples), maxlen=scheduler.config.latency_window)
                    target[str(name)] = window
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidDataError(f"malformed scheduler state: {exc}") from exc
        return scheduler


def _check_symbol_state(name: str, state: _SymbolState) -> None:
    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    ok = (
        (state.last_trade_ms is None or is_int(state.last_trade_ms))
        and is_int(state.consecutive_failures)
        and state.consecutive_failures >= 0
        and (state.cooloff_until_ms is None or is_int(state.cooloff_until_ms))
        and (state.last_failure is None or isinstance(state.last_failure, str))
    )
    if not ok:
        raise InvalidDataError(f"malformed scheduler state for {name!r}: {state!r}")


def _level(entry: Sequence[float]) -> tuple[float, float]:
    # ccxt levels are [price, amount] and sometimes carry a third field (order count).
    return float(entry[0]), float(entry[1])


def check_order_book(
    bids: Sequence[Sequence[float]],
    asks: Sequence[Sequence[float]],
    *,
    side: str,
    amount: float,
    limits: BookLimits | None = None,
) -> BookCheck:
    """Check a ccxt-shaped order book (bids best-first descending, asks best-first ascending; each level
    ``[price, amount]``) for an order of ``amount`` base units on ``side`` ("buy" takes asks, "sell" bids).

    The slippage estimate walks the levels on our side until ``amount`` is filled; the average fill price is
    compared with the mid. A book that cannot fill the whole amount gets ``slippage_bps = inf``.
    """
    limits = limits or BookLimits()
    if side not in ("buy", "sell"):
        raise InvalidDataError(f"side must be 'buy' or 'sell', got {side!r}")
    if not (math.isfinite(amount) and amount > 0):
        raise InvalidDataError(f"order amount must be a finite number > 0, got {amount!r}")
    nan = math.nan
    if not bids or not asks:
        reason = GateReason(GateCode.EMPTY_BOOK, f"book has {len(bids)} bid and {len(asks)} ask levels")
        return BookCheck(side, amount, nan, nan, 0.0, nan, math.inf, (reason,))
    best_bid, best_ask = _level(bids[0])[0], _level(asks[0])[0]
    mid = (best_bid + best_ask) / 2.0
    if not (best_bid > 0 and best_ask > best_bid):
        # A crossed or locked book is a stale or broken snapshot: nothing measured from it can be trusted.
        reason = GateReason(GateCode.CROSSED_BOOK, f"best bid {best_bid:g} >= best ask {best_ask:g}")
        return BookCheck(side, amount, mid, nan, 0.0, nan, math.inf, (reason,))
    spread_bps = (best_ask - best_bid) / mid * _BPS
    taken = [_level(x) for x in (asks if side == "buy" else bids)]
    sign = 1.0 if side == "buy" else -1.0
    band = mid * limits.depth_band_bps / _BPS
    depth = sum(qty for price, qty in taken if abs(price - mid) <= band)

    remaining, cost = amount, 0.0
    for price, qty in taken:
        take = min(qty, remaining)
        cost += take * price
        remaining -= take
        if remaining <= 0:
            break
    filled = remaining <= amount * 1e-12  # float residue of the subtraction counts as filled
    avg = cost / amount if filled else nan
    slippage_bps = sign * (avg - mid) / mid * _BPS if filled else math.inf

    reasons: list[GateReason] = []
    if spread_bps > limits.max_spread_bps:
        reasons.append(
            GateReason(GateCode.SPREAD_TOO_WIDE, f"spread {spread_bps:.2f} bps > {limits.max_spread_bps} bps")
        )
    needed = limits.min_depth_multiple * amount
    if depth < needed:
        reasons.append(
            GateReason(
                GateCode.DEPTH_TOO_THIN,
                f"{depth:g} within {limits.depth_band_bps} bps of mid on the {side} side; "
                f"need {limits.min_depth_multiple}x the order = {needed:g}",
            )
        )
    if not filled:
        reasons.append(
            GateReason(GateCode.SLIPPAGE_TOO_HIGH, f"the whole book cannot fill {amount:g}; {remaining:g} left")
        )
    elif slippage_bps > limits.max_slippage_bps:
        reasons.append(
            GateReason(
                GateCode.SLIPPAGE_TOO_HIGH,
                f"estimated slippage {slippage_bps:.2f} bps > {limits.max_slippage_bps} bps",
            )
        )
    return BookCheck(side, amount, mid, spread_bps, depth, avg, slippage_bps, tuple(reasons))
