"""What tasks build from block names: the database engine, the cache, the market-data source.

Call these from sync code: inside a running event loop Prefect's block `load` returns a coroutine.

Tasks receive block names and plain values (never live clients): these factories turn them into clients.
Engines are pooled per process and URL (built on first use, never at import).
"""

from __future__ import annotations

import functools

from sqlalchemy import Engine

from adapters.cache import MarketDataCache
from blocks.database import TimescaleDatabase
from blocks.exchange_account import ExchangeAccount
from blocks.keys import EncryptionKeys
from blocks.market_cache import MarketCache
from blocks.registration import require_block
from db.engine import make_engine
from db.migrate import require_head


@functools.lru_cache(maxsize=8)
def _engine(url: str, pool_size: int) -> Engine:
    engine = make_engine(url, pool_size=pool_size)
    require_head(engine)
    return engine


def engine_for(block_name: str) -> Engine:
    """The pooled engine of the TimescaleDatabase block `block_name` (schema checked once per process)."""
    block = require_block(TimescaleDatabase, block_name)
    return _engine(block.url.get_secret_value(), block.pool_size)


def cache_for(block_name: str) -> MarketDataCache:
    """A cache client per the MarketCache block (close it when done)."""
    return require_block(MarketCache, block_name).cache()


def account_for(block_name: str) -> ExchangeAccount:
    """The ExchangeAccount block; with `credentials_name`, a copy carrying those credentials decrypted in
    memory (never returned from a task, never saved)."""
    account = require_block(ExchangeAccount, block_name)
    if account.credentials_name is None or account.api_key is not None:
        return account
    return account.with_stored_credentials(
        require_block(TimescaleDatabase, block_name), require_block(EncryptionKeys, block_name)
    )
