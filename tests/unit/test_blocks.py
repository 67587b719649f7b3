"""Every block passes Prefect's BlockStandardTestSuite and never shows its secrets."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites.blocks import BlockStandardTestSuite
from pydantic import SecretStr

from blocks import BLOCK_TYPES, EncryptionKeys, ExchangeAccount, MarketCache, TimescaleDatabase
from db.crypto import generate_key
from domain.errors import ConfigurationError


@pytest.mark.parametrize("block", BLOCK_TYPES)
class TestAllBlocks(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:
        return block

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # The suite downloads the logo; this project runs offline and ships no logos.
        assert block._logo_url is None


def test_secrets_are_masked_in_repr_and_dump() -> None:
    key = generate_key()
    blocks = [
        EncryptionKeys(keys=[key]),
        ExchangeAccount(exchange_id="binance", api_key=SecretStr("AK-123"), secret=SecretStr("SK-456")),
        TimescaleDatabase(url=SecretStr("postgresql+psycopg://u:pw-789@127.0.0.1/x")),
        MarketCache(redis_url=SecretStr("redis://:rpw-000@127.0.0.1:6379/0")),
    ]
    for block in blocks:
        shown = repr(block) + str(block) + str(block.model_dump())
        for secret in (key.get_secret_value(), "AK-123", "SK-456", "pw-789", "rpw-000"):
            assert secret not in shown


def test_encryption_keys_refuse_invalid_keys_and_rotate_in_front() -> None:
    with pytest.raises((ConfigurationError, ValueError)):
        EncryptionKeys(keys=[SecretStr("nope")])
    first = EncryptionKeys(keys=[generate_key()])
    second = first.with_new_key()
    assert second.keys[1] == first.keys[0] and len(second.keys) == 2
    assert second.keyring().primary_id != first.keyring().primary_id
    assert second.newest_only().keys == second.keys[:1]
