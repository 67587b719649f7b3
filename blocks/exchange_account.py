"""An exchange account: ccxt id and, for private endpoints, credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from adapters.sources import open_source
from blocks.database import TimescaleDatabase
from blocks.keys import DOCS_URL, EncryptionKeys
from db.secrets import load_credentials
from domain.errors import ConfigurationError


class ExchangeAccount(Block):
    """A ccxt exchange and the API credentials used for balances and (when enabled) live orders."""

    _block_type_name = "Strategy Engine Exchange Account"
    _block_type_slug = "se-exchange-account"
    _description = "A ccxt exchange id with optional API credentials; 'replay' is the offline exchange."
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _code_example = """```python
from blocks import ExchangeAccount

account = ExchangeAccount.load("BLOCK_NAME")
```"""

    exchange_id: str = Field(
        default="replay", description="ccxt exchange id such as binance, or replay.", examples=["binance"]
    )
    api_key: SecretStr | None = Field(default=None, description="API key; only needed for private endpoints.")
    secret: SecretStr | None = Field(default=None, description="API secret matching the API key.")
    password: SecretStr | None = Field(default=None, description="API passphrase, for exchanges that use one.")
    sandbox: bool = Field(default=False, description="Use the exchange's sandbox/testnet.")
    timeout_ms: int = Field(default=10_000, gt=0, description="Per-request timeout, in milliseconds.")
    api_url: str | None = Field(
        default=None, description="Override of every REST base URL (loopback emulators in tests)."
    )

    credentials_name: str | None = Field(
        default=None,
        description="Name of credentials stored encrypted in the database (strategy-engine credentials add); "
        "used when api_key/secret are not set here.",
    )

    @property
    def has_credentials(self) -> bool:
        return (self.api_key is not None and self.secret is not None) or self.credentials_name is not None

    def with_stored_credentials(self, database: TimescaleDatabase, keys: EncryptionKeys) -> ExchangeAccount:
        """A copy carrying the credentials named `credentials_name`, decrypted (in memory only) with `keys` from
        `database`; unchanged when the block holds its own key/secret or names none. Never save the copy."""
        if self.api_key is not None or self.credentials_name is None:
            return self
        engine = database.engine()
        try:
            creds = load_credentials(engine, keys.keyring(), self.credentials_name)
        finally:
            engine.dispose()
        return self.model_copy(update={"api_key": creds.api_key, "secret": creds.secret, "password": creds.password})

    @asynccontextmanager
    async def open_source(self, symbols: Sequence[str] = (), *, history_days: int = 30) -> AsyncIterator[Any]:
        """The exchange client (or the replay exchange) for this account, closed on exit."""
        if self.credentials_name is not None and self.api_key is None:
            raise ConfigurationError(
                f"ExchangeAccount uses stored credentials {self.credentials_name!r}: open it from "
                "`with_stored_credentials(database, keys)`"
            )
        async with open_source(
            self.exchange_id,
            api_url=self.api_url,
            api_key=self.api_key,
            secret=self.secret,
            password=self.password,
            sandbox=self.sandbox,
            timeout_ms=self.timeout_ms,
            symbols=symbols,
            history_days=history_days,
        ) as source:
            yield source
