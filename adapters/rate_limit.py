"""Pacing requests to an exchange: request weights, one shared weight limiter per exchange, accounting, backoff.

Exchanges such as Binance meter an IP by *request weight* per fixed minute (6,000 on Binance spot) and answer
HTTP 429 once a minute's budget is spent (418, an IP ban, if the client keeps going). ccxt's own limiter
paces one client instance; the `WeightLimiter` here is shared by every client and task in the process that
talks to the same exchange, so many symbols fetched in parallel stay inside one budget together.

The limiter is a token bucket of capacity `burst` refilled at `(budget * (1 - headroom) - burst) / window_s`
weight per second. Over ANY interval of `window_s` seconds it grants at most `budget * (1 - headroom)` (as long
as no single request outweighs `burst`), so a server that counts fixed windows never sees more than that; the
headroom absorbs requests granted at the end of one window that arrive in the next.

Its state is guarded by a `threading.Lock` and waiting is a plain `asyncio.sleep`, so one limiter serves
coroutines on several event loops (Prefect runs tasks in worker threads) without loop-bound primitives.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from domain.errors import TransientError

T = TypeVar("T")

Bands = tuple[tuple[float, float], ...]
"""Weight by request `limit`: ((max_limit, weight), ...) ascending; the first band with limit <= max_limit wins."""


@dataclass(frozen=True)
class WeightTable:
    """Request weight per endpoint (the last path segment, e.g. "klines"), optionally banded by `limit`.

    Both the adapter (to pace itself) and the test emulator (to meter requests) read the same table, so their
    arithmetic cannot drift apart.
    """

    bands: Mapping[str, Bands]
    default_limits: Mapping[str, int] = field(default_factory=dict)
    default_weight: float = 1.0

    def weight(self, endpoint: str, limit: int | None = None) -> float:
        """Weight of one request to `endpoint` with the given `limit` (the endpoint's default limit if None)."""
        table = self.bands.get(endpoint)
        if table is None:
            return self.default_weight
        effective = limit if limit is not None else self.default_limits.get(endpoint, 0)
        for max_limit, weight in table:
            if effective <= max_limit:
                return weight
        return table[-1][1]

    def with_bands(self, endpoint: str, bands: Bands) -> WeightTable:
        """A copy with `endpoint` weighed by `bands` instead."""
        return WeightTable({**self.bands, endpoint: bands}, self.default_limits, self.default_weight)


BINANCE_SPOT_WEIGHTS = WeightTable(
    # Binance spot REST weights as documented in 2025 (ccxt's costs x 5 give the same numbers).
    bands={
        "klines": ((math.inf, 2.0),),
        "depth": ((100, 5.0), (500, 25.0), (1000, 50.0), (math.inf, 250.0)),
        "exchangeInfo": ((math.inf, 20.0),),
        "account": ((math.inf, 20.0),),
        "ping": ((math.inf, 1.0),),
        "time": ((math.inf, 1.0),),
    },
    default_limits={"klines": 500, "depth": 100},
)
"""Binance spot weights; budget `BINANCE_SPOT_WEIGHT_BUDGET` per minute."""

BINANCE_KLINES_WEIGHT_BY_LIMIT: Bands = ((100, 1.0), (500, 2.0), (1000, 5.0), (math.inf, 10.0))
"""Binance's older klines weighting by `limit`; use with `WeightTable.with_bands("klines", ...)`."""

BINANCE_SPOT_WEIGHT_BUDGET = 6000.0
"""Binance spot REQUEST_WEIGHT limit, weight per minute."""


class WeightAccounting:
    """What a limiter granted: (time in s on the limiter's clock, weight) per request, plus what servers said.

    Thread-safe. Used by benchmarks to print achieved weight per minute against the budget.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: list[tuple[float, float]] = []
        self._waited_s = 0.0
        self._server_used: list[tuple[float, float]] = []

    def record_grant(self, at_s: float, weight: float, waited_s: float) -> None:
        """One request of `weight` allowed to go at `at_s` after waiting `waited_s` seconds."""
        with self._lock:
            self._grants.append((at_s, weight))
            self._waited_s += waited_s

    def record_server_used(self, at_s: float, used_weight: float) -> None:
        """The weight the server reported as used in its current window (e.g. X-MBX-USED-WEIGHT-1M)."""
        with self._lock:
            self._server_used.append((at_s, used_weight))

    @property
    def total_weight(self) -> float:
        with self._lock:
            return sum(w for _, w in self._grants)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._grants)

    @property
    def waited_s(self) -> float:
        """Total seconds callers spent waiting for the limiter."""
        with self._lock:
            return self._waited_s

    @property
    def last_server_used(self) -> float | None:
        with self._lock:
            return self._server_used[-1][1] if self._server_used else None

    def grants(self) -> list[tuple[float, float]]:
        """A copy of (time s, weight) per granted request."""
        with self._lock:
            return list(self._grants)

    def weight_per_minute(self, *, skip_first_s: float = 0.0) -> float:
        """Average granted weight per minute from `skip_first_s` after the first grant to the last grant."""
        grants = self.grants()
        if not grants:
            return 0.0
        origin = grants[0][0] + skip_first_s
        kept = [(t, w) for t, w in grants if t >= origin]
        if len(kept) < 2 or kept[-1][0] <= origin:
            return 0.0
        return sum(w for _, w in kept) * 60.0 / (kept[-1][0] - origin)


class WeightLimiter:
    """A weight token bucket shared by all concurrent requests against one exchange (see module docstring)."""

    def __init__(
        self,
        budget: float,
        *,
        window_s: float = 60.0,
        burst: float | None = None,
        headroom: float = 0.03,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`budget`: weight the server allows per `window_s` seconds. `burst`: bucket capacity in weight
        (default 3% of the budget, at least 1). `headroom`: fraction of the budget left unused on purpose.
        `clock` (seconds) and `sleep` are injectable for tests in virtual time."""
        if budget <= 0 or window_s <= 0 or not 0 <= headroom < 1:
            raise ValueError("budget and window_s must be positive and headroom in [0, 1)")
        self.budget = budget
        self.window_s = window_s
        self.burst = burst if burst is not None else max(1.0, 0.03 * budget)
        usable = budget * (1.0 - headroom) - self.burst
        if usable <= 0:
            raise ValueError(f"burst {self.burst} leaves no refill inside budget {budget} minus headroom")
        self.rate_per_s = usable / window_s
        self.accounting = WeightAccounting()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._at = clock()
        self._paused_until = -math.inf

    def __repr__(self) -> str:
        return f"WeightLimiter(budget={self.budget}, window_s={self.window_s}, burst={self.burst})"

    def _reserve(self, weight: float) -> tuple[float, float]:
        """Book the next free slot for `weight`: returns (now, send_at) on the limiter clock."""
        with self._lock:
            now = self._clock()
            # FIFO: nobody goes before an earlier reservation, nor during a server-imposed pause.
            start = max(now, self._at, self._paused_until)
            tokens = min(self.burst, self._tokens + (start - self._at) * self.rate_per_s)
            need = min(weight, self.burst)  # a request heavier than the bucket waits for a full bucket
            send_at = start if tokens >= need else start + (need - tokens) / self.rate_per_s
            tokens = min(self.burst, tokens + (send_at - start) * self.rate_per_s)
            self._tokens = tokens - weight
            self._at = send_at
        self.accounting.record_grant(send_at, weight, send_at - now)
        return now, send_at

    async def acquire(self, weight: float) -> float:
        """Wait until `weight` may be spent; returns the seconds waited."""
        if weight <= 0:
            return 0.0
        now, send_at = self._reserve(weight)
        while True:
            delay = max(send_at, self._paused_until_now()) - self._clock()
            if delay <= 0:
                return self._clock() - now
            await self._sleep(delay)

    def _paused_until_now(self) -> float:
        with self._lock:
            return self._paused_until

    def pause_remaining_s(self) -> float:
        """Seconds left of a server-imposed pause (0 when none)."""
        return max(0.0, self._paused_until_now() - self._clock())

    def pause_for(self, seconds: float) -> None:
        """Hold every caller for `seconds` (the server answered 429/418 with Retry-After)."""
        with self._lock:
            until = self._clock() + seconds
            self._paused_until = max(self._paused_until, until)
            if self._at < until:
                # Our count disagreed with the server's: resume with an empty bucket, not a full one.
                refilled = min(self.burst, self._tokens + (until - self._at) * self.rate_per_s)
                self._tokens = min(refilled, 0.0)
                self._at = until


_shared_lock = threading.Lock()
_shared: dict[str, WeightLimiter] = {}


def shared_limiter(key: str, *, budget: float, window_s: float = 60.0) -> WeightLimiter:
    """The process-wide limiter for `key` (an exchange id, optionally with its API base URL).

    The first caller's budget wins; later callers get the same instance, which is the point: every client of
    one exchange in this process draws from one bucket.
    """
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = WeightLimiter(budget, window_s=window_s)
            _shared[key] = limiter
        return limiter


def forget_shared_limiters() -> None:
    """Drop every shared limiter (tests that need a fresh budget)."""
    with _shared_lock:
        _shared.clear()


def backoff_delay_s(
    attempt: int, *, base_delay_s: float, max_delay_s: float, retry_after_s: float | None = None
) -> float:
    """Seconds to wait before retry number `attempt` (1-based): exponential with jitter in [0.5, 1.0] of
    the step, never less than the server's Retry-After."""
    step = min(max_delay_s, base_delay_s * 2.0 ** (attempt - 1))
    delay = step * random.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.5,
    max_delay_s: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call `fn` until it succeeds, retrying `TransientError` up to `attempts` calls in total.

    For callers outside Prefect (the CLI backfill); Prefect tasks use their own retry policy instead.
    Permanent errors and anything else propagate at once; the last transient error propagates when the
    attempts are used up. Retry-After (`retry_after_s` on the error) is honoured.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except TransientError as exc:
            if attempt == attempts:
                raise
            await sleep(
                backoff_delay_s(
                    attempt, base_delay_s=base_delay_s, max_delay_s=max_delay_s, retry_after_s=exc.retry_after_s
                )
            )
    raise AssertionError("unreachable")  # pragma: no cover
