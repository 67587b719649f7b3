"""Scale-out: the real flows with their batch tasks on a local Dask cluster (worker processes), in Prefect's test
harness, against PostgreSQL, Redis and the Binance emulator. Skipped when the optional extra is not installed."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sqlalchemy import Engine, text

from domain.errors import ConfigurationError
from flows.ingest import ingest
from flows.scale_out import with_dask
from flows.signals import evaluate_signals
from tests.flows.conftest import SYMBOLS

LOOKBACK = 1200  # 1m candles: the signal window reads the newest 1000

HAS_DASK = importlib.util.find_spec("prefect_dask") is not None
needs_dask = pytest.mark.skipif(
    not HAS_DASK, reason="prefect-dask is not installed (optional extra: pip install 'strategy-engine[dask]')"
)


def test_a_missing_extra_is_a_configuration_error_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is what an import sees when the package is not installed (even if imported earlier)
    monkeypatch.setitem(sys.modules, "prefect_dask", None)
    monkeypatch.setitem(sys.modules, "prefect_dask.task_runners", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'strategy-engine\[dask\]'"):
        with_dask(evaluate_signals)


@needs_dask
def test_with_dask_swaps_only_the_task_runner() -> None:
    local = with_dask(evaluate_signals, n_workers=3)
    remote = with_dask(ingest, address="tcp://127.0.0.1:8786")
    local_runner: Any = local.task_runner
    remote_runner: Any = remote.task_runner
    assert type(local_runner).__name__ == "DaskTaskRunner"
    assert local_runner.cluster_kwargs["n_workers"] == 3
    assert local_runner.cluster_kwargs["processes"] is True
    assert remote_runner.address == "tcp://127.0.0.1:8786"
    assert (local.name, remote.name) == (evaluate_signals.name, ingest.name)
    assert type(evaluate_signals.task_runner).__name__ == "ThreadPoolTaskRunner"  # the original is untouched
    with pytest.raises(ConfigurationError):
        with_dask(ingest, address="tcp://127.0.0.1:8786", cluster_kwargs={"n_workers": 1})


def stored_candles(engine: Engine) -> dict[tuple[str, Any], tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT symbol, ts, open, high, low, close, volume FROM candles")).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def stored_signals(engine: Engine, run_id: str) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT symbol, ts, direction, score, confidence, tier, decision, conditions, entry, stop "
                "FROM signals WHERE run_id = :r"
            ),
            {"r": run_id},
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def run_ids(engine: Engine) -> list[str]:
    """Flow-run ids that stored signals, oldest first."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT run_id FROM signals GROUP BY run_id ORDER BY min(id)"))]


def without(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


@needs_dask
@pytest.mark.flows
@pytest.mark.integration
@pytest.mark.slow
def test_ingest_and_signals_on_a_local_dask_cluster_store_what_threads_store(db: Engine, emulator_blocks: str) -> None:
    common: dict[str, Any] = {
        "exchange": "binance",
        "symbols": SYMBOLS,
        "block": emulator_blocks,
        "symbols_per_task": 1,
    }

    threaded_ingest = ingest(**common, lookback=LOOKBACK)
    by_threads = stored_candles(db)
    with db.begin() as conn:
        conn.execute(text("TRUNCATE candles"))
    dask_ingest = with_dask(ingest)(**common, lookback=LOOKBACK)  # one batch task per symbol, worker processes
    by_dask = stored_candles(db)

    assert sorted(r["symbol"] for r in dask_ingest) == SYMBOLS
    assert all(r["error"] is None and r["quarantined"] == 0 for r in dask_ingest)
    # the emulator's newest candle is fixed, so a minute turning between the runs can only drop the oldest one
    assert sum(r["inserted"] for r in dask_ingest) in (3 * LOOKBACK, 3 * (LOOKBACK - 1))
    assert sum(r["inserted"] for r in threaded_ingest) in (3 * LOOKBACK, 3 * (LOOKBACK - 1))
    common_keys = by_threads.keys() & by_dask.keys()
    assert len(common_keys) >= 3 * (LOOKBACK - 1)
    assert {k: by_dask[k] for k in common_keys} == {k: by_threads[k] for k in common_keys}

    # signals on the 1m base timeframe read the newest stored candles only, so both runners must agree exactly
    same: dict[str, Any] = {"timeframe": "1m", "signal_timeframe": "1m"}
    threaded = evaluate_signals(**common, **same)
    on_dask = with_dask(evaluate_signals)(**common, **same)
    assert without(on_dask, "signal_id", "cache") == without(threaded, "signal_id", "cache")
    assert all(r["error"] is None and r["score"] is not None for r in on_dask)
    threads_run, dask_run = run_ids(db)
    assert set(stored_signals(db, dask_run)) == set(SYMBOLS)
    assert stored_signals(db, dask_run) == stored_signals(db, threads_run)

    # the tasks that ran in Dask's worker processes reported to the harness's Prefect server, under their flow run
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[dask_run])))
    evaluated = [t for t in tasks if t.name.startswith("evaluate-")]
    assert len(evaluated) == 3
    assert all(t.state is not None and t.state.is_completed() for t in evaluated)
