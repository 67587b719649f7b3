"""Open a market-data source by name: `replay` is the offline exchange, anything else a ccxt exchange id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from adapters.exchange import ExchangeClient
from adapters.replay import ReplayExchange

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
    symbols: Sequence[str] = (),
    history_days: int = 30,
    seed: int = 0,
) -> AsyncIterator[Any]:
    """An async source with the ExchangeClient interface; closed on exit. The replay exchange simulates
    `symbols` from `history_days` (plus one) before now, seeded: the same day gives the same candles."""
    if exchange_id == REPLAY:
        async with ReplayExchange.simulated(list(symbols), days=history_days + 1, seed=seed) as replay:
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
