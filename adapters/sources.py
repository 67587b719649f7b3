"""Open a market-data source by name: `replay` is the offline exchange, anything else a ccxt exchange id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from adapters.exchange import ExchangeClient

REPLAY = "replay"


@asynccontextmanager
async def open_source(
    exchange_id: str,
    *,
    api_url: str | None = None,
    api_key: SecretStr | None = None,
    secret: SecretStr | None = None,
    password: SecretStr | None = None,
    sandbox: bool = False,
    timeout_ms: int = 10_000,
    replay_options: dict[str, Any] | None = None,
) -> AsyncIterator[Any]:
    """An async source with the ExchangeClient interface; closed on exit."""
    if exchange_id == REPLAY:
        from adapters.replay import open_replay

        async with open_replay(**(replay_options or {})) as replay:
            yield replay
        return
    client = ExchangeClient(
        exchange_id,
        api_key=api_key,
        secret=secret,
        password=password,
        sandbox=sandbox,
        timeout_ms=timeout_ms,
        api_url=api_url,
    )
    try:
        yield client
    finally:
        await client.close()
