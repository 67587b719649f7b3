"""Store one validated batch: accepted candles upserted and rejects quarantined in the caller's transaction.

Accounting, for every batch: received = inserted + revised + duplicates + quarantined, where duplicates
counts both identical copies inside the batch and candles already stored with the same values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl
from sqlalchemy import Connection

from db.candles import upsert_candles
from db.quarantine import quarantine_rows
from domain.candles import ValidationResult


@dataclass(frozen=True, slots=True)
class BatchReport:
    symbol: str
    received: int
    inserted: int
    revised: int
    duplicates: int
    quarantined: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    flagged: int = 0

    def __post_init__(self) -> None:
        accounted = self.inserted + self.revised + self.duplicates + self.quarantined
        if accounted != self.received:
            raise AssertionError(f"{self.symbol}: received {self.received} but accounted for {accounted}")

    def as_row(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "received": self.received,
            "inserted": self.inserted,
            "revised": self.revised,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "flagged": self.flagged,
        }


def store_batch(
    conn: Connection, result: ValidationResult, *, exchange: str, symbol: str, timeframe: str, source: str
) -> BatchReport:
    """Upsert `result.accepted` and quarantine `result.rejected` for one series, in the caller's transaction."""
    accepted = result.accepted.with_columns(pl.lit(symbol, pl.String).alias("symbol"))
    counts = upsert_candles(conn, accepted, exchange=exchange, timeframe=timeframe).per_symbol.get(symbol)
    inserted, revised, stored_dupes = (counts.inserted, counts.revised, counts.duplicates) if counts else (0, 0, 0)
    quarantined = quarantine_rows(
        conn, result.rejected, exchange=exchange, symbol=symbol, timeframe=timeframe, source=source
    )
    return BatchReport(
        symbol=symbol,
        received=result.received,
        inserted=inserted,
        revised=revised,
        duplicates=stored_dupes + result.duplicates_in_batch,
        quarantined=quarantined,
        quarantined_by_reason=dict(Counter(result.rejected["reason"].to_list())),
        flagged=result.flagged.height,
    )
