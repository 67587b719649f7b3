"""Blocks against a real Prefect API: registration from settings, key generation and rotation via the CLI."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from typer.testing import CliRunner

from blocks import EncryptionKeys, MarketCache, TimescaleDatabase
from blocks.registration import load_block, resolve_keyring
from cli.main import app
from db.secrets import ExchangeCredentials, add_credentials, count_stale_rows, load_credentials

pytestmark = [pytest.mark.flows, pytest.mark.integration]
runner = CliRunner()


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch, db: Engine, pg_url: str, redis_url: str) -> str:
    import uuid

    name = f"t-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SE_BLOCK_PREFIX", name)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("SE_ENCRYPTION_KEYS", raising=False)
    return name


def test_register_creates_defaults_once_and_never_overwrites(prefix: str, pg_url: str) -> None:
    first = runner.invoke(app, ["blocks", "register"])
    assert first.exit_code == 0, first.output
    assert f"se-timescale-database/{prefix}: created" in first.output
    db_block = load_block(TimescaleDatabase, prefix)
    assert db_block is not None and db_block.url.get_secret_value() == pg_url
    assert pg_url not in first.output or "@" not in pg_url  # trust-auth URLs have no password to leak
    second = runner.invoke(app, ["blocks", "register"])
    assert f"se-timescale-database/{prefix}: exists, left unchanged" in second.output
    cache = load_block(MarketCache, prefix)
    assert cache is not None and cache.order_book_ttl_ms == 500


def test_keys_generate_then_rotate_then_drop_old(prefix: str, db: Engine) -> None:
    from cli.common import settings

    assert runner.invoke(app, ["keys", "generate"]).exit_code == 0
    ring1 = resolve_keyring(settings())
    add_credentials(
        db,
        ring1,
        ExchangeCredentials(name="a", exchange="binance", api_key=SecretStr("K1"), secret=SecretStr("S1")),
    )
    generated = runner.invoke(app, ["keys", "generate"])
    assert "2 key(s)" in generated.output
    block = load_block(EncryptionKeys, prefix)
    assert block is not None
    for key in block.keys:
        assert key.get_secret_value() not in generated.output

    ring2 = resolve_keyring(settings())
    assert count_stale_rows(db, ring2) == {"exchange_credentials": 1}
    rotated = runner.invoke(app, ["keys", "rotate", "--drop-old"])
    assert rotated.exit_code == 0, rotated.output
    assert "rotated 1 rows" in rotated.output and "0 remain" in rotated.output
    newest = load_block(EncryptionKeys, prefix)
    assert newest is not None and len(newest.keys) == 1
    assert load_credentials(db, newest.keyring(), "a").secret.get_secret_value() == "S1"


def test_no_key_anywhere_is_a_clear_error(prefix: str) -> None:
    result = runner.invoke(app, ["keys", "rotate"])
    assert result.exit_code == 2
    assert "no encryption key configured" in result.output and "keys generate" in result.output


def test_sync_documents_makes_blocks_follow_settings(prefix: str, pg_url: str) -> None:
    from blocks.registration import sync_documents
    from cli.common import settings

    TimescaleDatabase(url=SecretStr("postgresql+psycopg://postgres@127.0.0.1:5432/some_other_db")).save(prefix)
    changes = sync_documents(settings())
    assert f"se-timescale-database/{prefix} url updated from settings" in changes
    block = load_block(TimescaleDatabase, prefix)
    assert block is not None
    assert block.url.get_secret_value() == pg_url
    assert all("url" not in c for c in sync_documents(settings()))  # nothing left to change
    assert all(pg_url not in c for c in changes)  # never print the URL


def test_exchange_account_uses_credentials_stored_encrypted(prefix: str, db: Engine, pg_url: str) -> None:
    import asyncio

    from blocks.keys import EncryptionKeys
    from db.crypto import generate_key
    from tasks.resources import account_for
    from tests.emulator.binance import run_binance_emulator

    keys = EncryptionKeys(keys=[generate_key()])
    keys.save(prefix)
    TimescaleDatabase(url=SecretStr(pg_url)).save(prefix)
    add_credentials(
        db,
        keys.keyring(),
        ExchangeCredentials(name="main", exchange="binance", api_key=SecretStr("EMU-KEY"), secret=SecretStr("EMU-SEC")),
    )
    with run_binance_emulator(api_key="EMU-KEY", secret="EMU-SEC") as emulator:
        from blocks import ExchangeAccount

        ExchangeAccount(exchange_id="binance", api_url=emulator.url, credentials_name="main").save(prefix)
        stored = load_block(ExchangeAccount, prefix)
        assert stored is not None
        assert stored.api_key is None  # the block itself holds no secret, only the name
        account = account_for(prefix)
        assert "EMU-KEY" not in repr(account)

        async def balance() -> dict[str, Any]:
            async with account.open_source() as source:
                result: dict[str, Any] = await source.fetch_balance()
                return result

        balances = asyncio.run(balance())
    assert balances["USDT"].total == 1000.0
