"""An exchange account: ccxt id and, for private endpoints, credentials."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.keys import DOCS_URL


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

    @property
    def has_credentials(self) -> bool:
        return self.api_key is not None and self.secret is not None
