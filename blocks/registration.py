"""Register block types and create the default block documents from settings when they are absent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr

from blocks.database import TimescaleDatabase
from blocks.exchange_account import ExchangeAccount
from blocks.keys import EncryptionKeys
from blocks.market_cache import MarketCache
from config.settings import Settings, split_keys
from db.crypto import Keyring
from domain.errors import ConfigurationError

B = TypeVar("B", bound=Block)


@dataclass(frozen=True, slots=True)
class RegisteredDocument:
    block_type: str
    name: str
    created: bool


def register_block_types() -> list[str]:
    """Register every block type and schema with the Prefect API (idempotent)."""
    registered = []
    for block_type in (EncryptionKeys, ExchangeAccount, TimescaleDatabase, MarketCache):
        block_type.register_type_and_schema()
        registered.append(block_type.get_block_type_slug())
    return registered


def load_block(block_type: type[B], name: str) -> B | None:
    """The named block document, or None when it does not exist."""
    try:
        return cast(B, block_type.load(name))
    except (ValueError, ObjectNotFound):
        return None


def require_block(block_type: type[B], name: str) -> B:
    """The named block document, or a ConfigurationError saying how to create it. Call from sync code (in
    a running event loop Prefect's `load` returns a coroutine)."""
    block = load_block(block_type, name)
    if block is None:
        raise ConfigurationError(
            f"no {block_type.get_block_type_slug()} block named {name!r}: run `strategy-engine blocks register`"
        )
    return block


def ensure_default_documents(settings: Settings) -> list[RegisteredDocument]:
    """Create the `settings.block_prefix` documents that do not exist yet; never overwrite one."""
    name = settings.block_prefix
    wanted: list[Block] = [
        TimescaleDatabase(url=settings.database_url),
        MarketCache(redis_url=settings.redis_url),
        ExchangeAccount(exchange_id=settings.exchange),
    ]
    if settings.encryption_keys is not None:
        wanted.append(EncryptionKeys(keys=split_keys(settings.encryption_keys)))
    results = []
    for block in wanted:
        exists = load_block(type(block), name) is not None
        if not exists:
            block.save(name)
        results.append(RegisteredDocument(type(block).get_block_type_slug(), name, created=not exists))
    return results


def sync_documents(settings: Settings) -> list[str]:
    """Make the `settings.block_prefix` database, cache and exchange documents match `settings` (creating or
    overwriting them); returns what changed. `strategy-engine run` uses it so the flows it starts write to the
    database it just migrated. Encryption keys are never touched here."""
    name = settings.block_prefix
    wanted: list[tuple[Block, str, object]] = [
        (TimescaleDatabase(url=settings.database_url), "url", settings.database_url.get_secret_value()),
        (MarketCache(redis_url=settings.redis_url), "redis_url", settings.redis_url.get_secret_value()),
        (ExchangeAccount(exchange_id=settings.exchange), "exchange_id", settings.exchange),
    ]
    changed = []
    for block, field, value in wanted:
        current = load_block(type(block), name)
        current_value = None if current is None else getattr(current, field)
        if isinstance(current_value, SecretStr):
            current_value = current_value.get_secret_value()
        if current is None:
            block.save(name)
            changed.append(f"{type(block).get_block_type_slug()}/{name} created")
        elif current_value != value:
            block.save(name, overwrite=True)
            changed.append(f"{type(block).get_block_type_slug()}/{name} {field} updated from settings")
    return changed


def resolve_keyring(settings: Settings) -> Keyring:
    """Keys from SE_ENCRYPTION_KEYS when set, else from the EncryptionKeys block; else a clear error."""
    if settings.encryption_keys is not None:
        return Keyring(settings.require_encryption_keys())
    block = load_block(EncryptionKeys, settings.block_prefix)
    if block is None:
        raise ConfigurationError(
            f"no encryption key configured: no EncryptionKeys block named {settings.block_prefix!r} and "
            "SE_ENCRYPTION_KEYS is unset; run `strategy-engine keys generate`"
        )
    return block.keyring()
