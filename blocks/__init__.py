"""Prefect blocks: configuration and secrets, plus factories for the clients they describe.

Register with `strategy-engine blocks register` (or `prefect block register -m blocks`).
"""

from blocks.database import TimescaleDatabase
from blocks.exchange_account import ExchangeAccount
from blocks.keys import EncryptionKeys
from blocks.market_cache import MarketCache

__all__ = ["BLOCK_TYPES", "EncryptionKeys", "ExchangeAccount", "MarketCache", "TimescaleDatabase"]

BLOCK_TYPES = (EncryptionKeys, ExchangeAccount, TimescaleDatabase, MarketCache)
