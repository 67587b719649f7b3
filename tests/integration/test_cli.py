"""The foundation commands, run in-process with Typer's runner against a scratch database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cli.main import app
from db.crypto import generate_key
from tests.conftest import create_scratch_database, drop_scratch_database

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def scratch_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name, url = create_scratch_database("se_cli")
    drop_scratch_database(name)  # `db upgrade` must create it itself
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    drop_scratch_database(name)


def test_db_upgrade_creates_the_database_and_status_reports_it(scratch_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "created database" in result.output and "migrated (empty) ->" in result.output
    again = runner.invoke(app, ["db", "upgrade"])
    assert "already at migration head" in again.output

    status = runner.invoke(app, ["db", "status"])
    assert status.exit_code == 0, status.output
    assert "timescale: off" in status.output
    for table in ("candles", "candle_quarantine", "backfill_jobs", "signals", "exchange_credentials"):
        assert table in status.output


def test_commands_refuse_a_database_behind_head(scratch_url: str) -> None:
    from db.engine import ensure_database

    ensure_database(scratch_url)
    result = runner.invoke(app, ["credentials", "list"])
    assert result.exit_code == 2
    assert "strategy-engine db upgrade" in result.output


def test_credentials_never_print_secrets(scratch_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("SE_ENCRYPTION_KEYS", key.get_secret_value())
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    add = runner.invoke(
        app,
        ["credentials", "add", "binance-main", "--exchange", "binance"],
        env={"SE_NEW_API_KEY": "AKIA-VISIBLE-NEVER", "SE_NEW_API_SECRET": "SHHH-SECRET-NEVER"},
    )
    assert add.exit_code == 0, add.output
    listing = runner.invoke(app, ["credentials", "list"])
    assert "binance-main" in listing.output
    duplicate = runner.invoke(
        app,
        ["credentials", "add", "binance-main", "--exchange", "binance"],
        env={"SE_NEW_API_KEY": "AKIA-VISIBLE-NEVER", "SE_NEW_API_SECRET": "SHHH-SECRET-NEVER"},
    )
    assert duplicate.exit_code == 2 and "already exist" in duplicate.output
    for output in (add.output, listing.output, duplicate.output):
        for secret in ("AKIA-VISIBLE-NEVER", "SHHH-SECRET-NEVER", key.get_secret_value()):
            assert secret not in output
    assert runner.invoke(app, ["credentials", "remove", "binance-main"]).exit_code == 0
    missing = runner.invoke(app, ["credentials", "remove", "binance-main"])
    assert missing.exit_code == 2 and "no credentials named" in missing.output


def test_missing_key_is_a_clear_configuration_error(scratch_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SE_ENCRYPTION_KEYS", "not-a-fernet-key")
    result = runner.invoke(app, ["credentials", "list"])
    assert result.exit_code == 2
    assert "SE_ENCRYPTION_KEYS entry 1 is not a Fernet key" in result.output
    assert "not-a-fernet-key" not in result.output


def test_malformed_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@127.0.0.1/x")
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 2
    assert "DATABASE_URL must start with one of" in result.output


def test_help_everywhere() -> None:
    for args in (
        ["--help"],
        ["db", "--help"],
        ["keys", "rotate", "--help"],
        ["credentials", "add", "--help"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout
