"""prefect.yaml is applied without prompts and its `ingest` deployment is run by a real process worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from sqlalchemy import Engine, text

from tests.emulator.binance import BinanceEmulator
from tests.flows.conftest import SYMBOLS

pytestmark = [pytest.mark.flows, pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def prefect(*args: str, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "prefect"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_deployment_from_prefect_yaml_runs_on_a_worker(
    db: Engine,
    emulator_blocks: str,
    emulator: BinanceEmulator,
) -> None:
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    prefect("work-pool", "create", "local-process", "--type", "process", "--overwrite", env=env)
    prefect("--no-prompt", "deploy", "--all", env=env)
    with get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments()}
    assert {"ingest", "backfill", "evaluate-signals", "execute", "pipeline", "backtest", "rotate-keys"} <= names

    prefect(
        "deployment",
        "run",
        "ingest/ingest",
        "--param",
        f"block={emulator_blocks}",
        "--param",
        "exchange=binance",
        "--param",
        f"symbols={json.dumps(SYMBOLS[:2])}",
        "--param",
        "lookback=30",
        env=env,
    )
    prefect("worker", "start", "--pool", "local-process", "--type", "process", "--run-once", env=env, timeout=300)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    ingest_runs = [r for r in runs if r.deployment_id is not None]
    assert ingest_runs
    assert ingest_runs[0].state is not None
    assert ingest_runs[0].state.is_completed(), ingest_runs[0].state
    with db.connect() as conn:
        assert 2 * 29 <= conn.execute(text("SELECT count(*) FROM candles")).scalar_one() <= 2 * 30
