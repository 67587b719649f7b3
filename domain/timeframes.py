"""Timeframes as ccxt spells them ("1m", "15m", "4h", "1d", "1w") and the millisecond arithmetic on them.

All timestamps are integer milliseconds since the epoch, UTC, marking a candle's open.
"""

from __future__ import annotations

from datetime import UTC, datetime

from domain.errors import InvalidDataError

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

MINUTE_MS = 60_000
DAY_MS = 86_400_000


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle of `timeframe` in milliseconds.

    >>> timeframe_ms("15m")
    900000
    """
    if len(timeframe) < 2 or timeframe[-1] not in _UNIT_MS or not timeframe[:-1].isdigit():
        raise InvalidDataError(f"unknown timeframe {timeframe!r}: expected a number and one of s/m/h/d/w, e.g. '1m'")
    amount = int(timeframe[:-1])
    if amount <= 0:
        raise InvalidDataError(f"unknown timeframe {timeframe!r}: the amount must be positive")
    return amount * _UNIT_MS[timeframe[-1]]


def align_down(ts_ms: int, timeframe: str) -> int:
    """The open time of the candle containing `ts_ms` (weeks align to the epoch's Thursday like ccxt)."""
    step = timeframe_ms(timeframe)
    return ts_ms - ts_ms % step


def align_up(ts_ms: int, timeframe: str) -> int:
    """The first candle open at or after `ts_ms`."""
    step = timeframe_ms(timeframe)
    return -(-ts_ms // step) * step


def last_closed_open(now_ms: int, timeframe: str) -> int:
    """Open time of the newest candle that has closed at `now_ms` (the one before the still-open candle)."""
    return align_down(now_ms, timeframe) - timeframe_ms(timeframe)


def to_ms(moment: datetime) -> int:
    """A timezone-aware datetime to epoch milliseconds; naive datetimes are refused (UTC everywhere)."""
    if moment.tzinfo is None:
        raise InvalidDataError(f"naive datetime {moment!r}: pass a timezone-aware (UTC) datetime")
    return int(moment.timestamp() * 1000)


def from_ms(ts_ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
