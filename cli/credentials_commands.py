"""`strategy-engine credentials ...`: exchange API credentials, encrypted in the database."""

from __future__ import annotations

import typer
from pydantic import SecretStr
from rich.table import Table

from blocks.registration import resolve_keyring
from cli.common import console, friendly_errors, settings
from db.engine import make_engine
from db.migrate import require_head
from db.secrets import ExchangeCredentials, add_credentials, list_credentials, remove_credentials
from domain.errors import InvalidDataError

app = typer.Typer(help="Exchange API credentials (stored encrypted; never shown).", no_args_is_help=True)


@app.command("add")
@friendly_errors
def add_command(
    name: str = typer.Argument(..., help="A name for this set of credentials, e.g. binance-main."),
    exchange: str = typer.Option(..., help="ccxt exchange id, e.g. binance."),
    api_key: str = typer.Option(..., prompt=True, hide_input=True, envvar="SE_NEW_API_KEY", help="API key."),
    secret: str = typer.Option(..., prompt=True, hide_input=True, envvar="SE_NEW_API_SECRET", help="API secret."),
    password: str = typer.Option("", envvar="SE_NEW_API_PASSWORD", help="API passphrase, if the exchange uses one."),
    sandbox: bool = typer.Option(False, help="Credentials for the exchange's sandbox/testnet."),
    replace: bool = typer.Option(False, help="Overwrite credentials of the same name."),
) -> None:
    """Encrypt and store API credentials (read from a hidden prompt or SE_NEW_API_* variables)."""
    if not api_key.strip() or not secret.strip():
        raise InvalidDataError("API key and secret must not be empty")
    cfg = settings()
    keyring = resolve_keyring(cfg)
    engine = make_engine(cfg.database_url.get_secret_value())
    try:
        require_head(engine)
        creds = ExchangeCredentials(
            name=name,
            exchange=exchange,
            api_key=SecretStr(api_key),
            secret=SecretStr(secret),
            password=SecretStr(password) if password else None,
            sandbox=sandbox,
        )
        row_id = add_credentials(engine, keyring, creds, replace=replace)
    finally:
        engine.dispose()
    console.print(f"stored credentials {name!r} (id {row_id}) encrypted with key {keyring.primary_id}")


@app.command("list")
@friendly_errors
def list_command() -> None:
    """Stored credentials: name, exchange, which key encrypted them. Never the secrets."""
    engine = make_engine(settings().database_url.get_secret_value())
    try:
        require_head(engine)
        rows = list_credentials(engine)
    finally:
        engine.dispose()
    table = Table("name", "exchange", "sandbox", "key", "updated")
    for row in rows:
        table.add_row(
            row.name,
            row.exchange,
            "yes" if row.sandbox else "no",
            row.key_id,
            f"{row.updated_at:%Y-%m-%d %H:%M}",
        )
    console.print(table if rows else "no credentials stored")


@app.command("remove")
@friendly_errors
def remove_command(name: str = typer.Argument(..., help="Name of the credentials to delete.")) -> None:
    """Delete stored credentials."""
    engine = make_engine(settings().database_url.get_secret_value())
    try:
        require_head(engine)
        removed = remove_credentials(engine, name)
    finally:
        engine.dispose()
    if not removed:
        raise InvalidDataError(f"no credentials named {name!r}")
    console.print(f"removed credentials {name!r}")
