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
    """Insert evaluations (`SignalEvaluation.to_dict()` values); an evaluation of the same (exchange, symbol,
    timeframe, ts) by the same run is stored once (task retries). Returns the signal ids, in order."""
    ids: list[int] = []
    for ev in evaluations:
        existing = conn.execute(
            text(
                "SELECT id FROM signals WHERE exchange = :exchange AND symbol = :symbol AND timeframe = :timeframe"
                " AND ts = to_timestamp(:ts / 1000.0) AND run_id IS NOT DISTINCT FROM :run_id"
            ),
            {
                "exchange": exchange,
                "symbol": ev["symbol"],
                "timeframe": ev["timeframe"],
                "ts": ev["ts"],
                "run_id": run_id,
            },
        ).scalar_one_or_none()
        if existing is not None:
            ids.append(int(existing))
            continue
        conditions = {
            "results": ev["conditions"],
            "confidence": ev.get("confidence"),
            "rejected": ev.get("rejected"),
            "setup": ev.get("setup"),
            "fib": ev.get("fib"),
        }
        new_id = conn.execute(
            text(
                "INSERT INTO signals (exchange, symbol, timeframe, ts, direction, score, confidence, tier, decision,"
                " components, conditions, reasons, entry, stop, targets, run_id)"
                " VALUES (:exchange, :symbol, :timeframe, to_timestamp(:ts / 1000.0), :direction, :score, :confidence,"
                " :tier, :decision, CAST(:components AS jsonb), CAST(:conditions AS jsonb), CAST(:reasons AS jsonb),"
                " :entry, :stop, CAST(:targets AS jsonb), :run_id) RETURNING id"
            ),
            {
                "exchange": exchange,
                "symbol": ev["symbol"],
                "timeframe": ev["timeframe"],
                "ts": ev["ts"],
                "direction": ev.get("direction"),
                "score": ev["score"],
                "confidence": ev.get("confidence"),
                "tier": ev["tier"],
                "decision": ev["decision"],
                "components": _json(ev.get("components", {})),
                "conditions": _json(conditions),
                "reasons": _json(ev.get("reasons", [])),
                "entry": ev.get("entry"),
                "stop": ev.get("stop"),
                "targets": _json(ev.get("targets", [])),
                "run_id": run_id,
            },
        ).scalar_one()
        ids.append(int(new_id))
    return ids


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
