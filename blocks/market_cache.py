"""Redis market-data cache settings and TTL policy."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from adapters.cache import MarketDataCache, TtlPolicy
from blocks.keys import DOCS_URL


class MarketCache(Block):
    """Redis cache for candle windows, order books and balances, with its TTL policy."""

    _block_type_name = "Strategy Engine Market Cache"
    _block_type_slug = "se-market-cache"
    _description = "Redis cache of market data: candle windows, order books and balances with short TTLs."
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _code_example = """```python
from blocks import MarketCache

cache_settings = MarketCache.load("BLOCK_NAME")
```"""

    redis_url: SecretStr = Field(
        ..., description="Redis URL, e.g. redis://127.0.0.1:6379/0.", examples=["redis://127.0.0.1:6379/0"]
    )
    key_prefix: str = Field(default="se", description="Prefix of every key this project writes.")
    ohlcv_ttl_min_s: float = Field(default=5.0, gt=0, description="TTL of 1m candle windows, in seconds.")
    ohlcv_ttl_max_s: float = Field(default=60.0, gt=0, description="Upper bound of candle-window TTLs, in seconds.")
    order_book_ttl_ms: int = Field(default=500, gt=0, description="TTL of order books, in milliseconds.")
    balance_ttl_s: float = Field(default=60.0, gt=0, description="TTL of account balances, in seconds.")
    socket_timeout_s: float = Field(
        default=0.25, gt=0, description="Redis socket timeout; a slower cache is bypassed, in seconds."
    )

    def cache(self) -> MarketDataCache:
        """A cache client with this block's URL and TTL policy (close it when done)."""
        ttl = TtlPolicy(
            ohlcv_min_s=self.ohlcv_ttl_min_s,
            ohlcv_max_s=self.ohlcv_ttl_max_s,
            order_book_ms=self.order_book_ttl_ms,
            balance_s=self.balance_ttl_s,
        )
        return MarketDataCache(
            self.redis_url.get_secret_value(),
            key_prefix=self.key_prefix,
            ttl=ttl,
            socket_timeout_s=self.socket_timeout_s,
        )
