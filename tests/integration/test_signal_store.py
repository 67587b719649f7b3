from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from db.signals import pending_entries, signal_counts, store_signals

pytestmark = pytest.mark.integration
T0 = 1_700_000_100_000 - 1_700_000_100_000 % 900_000


def evaluation(symbol: str, ts: int, decision: str = "skip", score: float = 55.0) -> dict[str, object]:
    return {
        "symbol": symbol,
        "timeframe": "15m",
        "ts": ts,
        "direction": "long",
        "score": score,
        "confidence": 0.7,
        "tier": "FULL" if score >= 75 else "SKIP",
        "decision": decision,
        "components": {"technical": 20.0},
        "conditions": [{"name": "rsi", "passed": True, "value": 38.0, "threshold": 40.0, "detail": "ok"}],
        "reasons": ["volume ratio 1.2 < 1.5"],
        "entry": 100.0,
        "stop": 95.0,
        "targets": [110.0, 120.0],
    }


def test_a_retried_batch_stores_each_evaluation_once(db: Engine) -> None:
    batch = [evaluation("A/B", T0), evaluation("C/D", T0, "enter", 80.0), evaluation("A/B", T0 + 900_000)]
    with db.begin() as conn:
        first = store_signals(conn, exchange="x", evaluations=batch, run_id="run-1")
    with db.begin() as conn:
        again = store_signals(conn, exchange="x", evaluations=list(reversed(batch)), run_id="run-1")
        other_run = store_signals(conn, exchange="x", evaluations=batch[:1], run_id="run-2")
    assert again == list(reversed(first))
    assert other_run[0] not in first
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM signals")).scalar_one() == 4
        stored = conn.execute(text("SELECT conditions, targets FROM signals WHERE id = :i"), {"i": first[1]}).one()
        assert stored[0]["results"][0]["name"] == "rsi"
        assert stored[1] == [110.0, 120.0]
        pending = pending_entries(conn, exchange="x", since_ms=T0)
        counts = signal_counts(conn, exchange="x")
    assert pending["id"].to_list() == [first[1]]
    assert counts[("FULL", "enter")] == 1
