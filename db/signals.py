"""Every signal evaluation, stored: score, components, conditions, tier, decision and reasons."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
from sqlalchemy import Connection, text

_MS = "(extract(epoch FROM {0}) * 1000)::bigint"


def store_signals(
    conn: Connection, *, exchange: str, evaluations: Sequence[Mapping[str, Any]], run_id: str | None
) -> list[int]:
    """Insert evaluations (`SignalEvaluation.to_dict()` values) in two statements whatever their number; an
    evaluation of the same (exchange, symbol, timeframe, ts) by the same run is stored once (task retries).
    Returns the signal ids, in order."""
    if not evaluations:
        return []
    keys = [(ev["symbol"], ev["timeframe"], int(ev["ts"])) for ev in evaluations]
    found = conn.execute(
        text(
            f"SELECT s.symbol, s.timeframe, {_MS.format('s.ts')}, s.id FROM signals s"
            " JOIN unnest(CAST(:symbols AS text[]), CAST(:timeframes AS text[]), CAST(:ts AS bigint[]))"
            " AS k(symbol, timeframe, ts) ON s.symbol = k.symbol AND s.timeframe = k.timeframe"
            " AND s.ts = to_timestamp(k.ts / 1000.0)"
            " WHERE s.exchange = :exchange AND s.run_id IS NOT DISTINCT FROM CAST(:run_id AS text)"
        ),
        {
            "symbols": [k[0] for k in keys],
            "timeframes": [k[1] for k in keys],
            "ts": [k[2] for k in keys],
            "exchange": exchange,
            "run_id": run_id,
        },
    ).all()
    ids = {(symbol, timeframe, int(ts)): int(signal_id) for symbol, timeframe, ts, signal_id in found}
    new = [ev for ev, key in zip(evaluations, keys, strict=True) if key not in ids]
    if new:
        rows = [
            {
                "symbol": ev["symbol"],
                "timeframe": ev["timeframe"],
                "ts": int(ev["ts"]),
                "direction": ev.get("direction"),
                "score": ev["score"],
                "confidence": ev.get("confidence"),
                "tier": ev["tier"],
                "decision": ev["decision"],
                "components": ev.get("components", {}),
                "conditions": {
                    "results": ev["conditions"],
                    "confidence": ev.get("confidence"),
                    "rejected": ev.get("rejected"),
                    "setup": ev.get("setup"),
                    "fib": ev.get("fib"),
                },
                "reasons": ev.get("reasons", []),
                "entry": ev.get("entry"),
                "stop": ev.get("stop"),
                "targets": ev.get("targets", []),
            }
            for ev in new
        ]
        inserted = conn.execute(
            text(
                "INSERT INTO signals (exchange, symbol, timeframe, ts, direction, score, confidence, tier, decision,"
                " components, conditions, reasons, entry, stop, targets, run_id)"
                " SELECT :exchange, r.symbol, r.timeframe, to_timestamp(r.ts / 1000.0), r.direction, r.score,"
                " r.confidence, r.tier, r.decision, r.components, r.conditions, r.reasons, r.entry, r.stop,"
                " r.targets, :run_id"
                " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(symbol text, timeframe text, ts bigint,"
                " direction text, score float8, confidence float8, tier text, decision text, components jsonb,"
                " conditions jsonb, reasons jsonb, entry float8, stop float8, targets jsonb)"
                f" RETURNING symbol, timeframe, {_MS.format('ts')}, id"
            ),
            {"exchange": exchange, "rows": _json(rows), "run_id": run_id},
        ).all()
        ids.update({(symbol, timeframe, int(ts)): int(signal_id) for symbol, timeframe, ts, signal_id in inserted})
    return [ids[key] for key in keys]


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def pending_entries(conn: Connection, *, exchange: str, since_ms: int) -> pl.DataFrame:
    """ENTER signals newer than `since_ms` that no order was placed for yet (newest per symbol)."""
    rows = (
        conn.execute(
            text(
                f"""
            SELECT DISTINCT ON (s.symbol) s.id, s.symbol, s.timeframe, {_MS.format("s.ts")} AS ts, s.direction,
                   s.score, s.tier, s.entry, s.stop, s.targets
            FROM signals s
            WHERE s.exchange = :exchange AND s.decision = 'enter' AND s.ts >= to_timestamp(:since / 1000.0)
              AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.signal_id = s.id)
            ORDER BY s.symbol, s.ts DESC, s.id DESC
            """
            ),
            {"exchange": exchange, "since": since_ms},
        )
        .mappings()
        .all()
    )
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "id": pl.Int64,
        "symbol": pl.Utf8,
        "timeframe": pl.Utf8,
        "ts": pl.Int64,
        "direction": pl.Utf8,
        "score": pl.Float64,
        "tier": pl.Utf8,
        "entry": pl.Float64,
        "stop": pl.Float64,
        "targets": pl.List(pl.Float64),
    }
    return pl.DataFrame([dict(r) for r in rows], schema=schema)


def signal_counts(conn: Connection, *, exchange: str, since_ms: int | None = None) -> dict[tuple[str, str], int]:
    """Evaluations per (tier, decision)."""
    rows = conn.execute(
        text(
            "SELECT tier, decision, count(*) FROM signals WHERE exchange = :exchange"
            " AND (CAST(:since AS bigint) IS NULL OR evaluated_at >= to_timestamp(CAST(:since AS bigint) / 1000.0))"
            " GROUP BY tier, decision"
        ),
        {"exchange": exchange, "since": since_ms},
    ).all()
    return {(str(t), str(d)): int(n) for t, d, n in rows}
