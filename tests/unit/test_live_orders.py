"""The live-order client refuses every call unless enabled with credentials. No network is involved: every
refusal happens before ccxt is asked to do anything, and no test here ever enables the client."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from adapters.live_orders import LiveOrder, LiveOrderClient, LiveTradingDisabled
from domain.errors import ConfigurationError, PermanentError, is_retriable


@pytest.fixture
def exchange_without_keys() -> Iterator[ccxt_async.Exchange]:
    exchange = ccxt_async.binance()
    yield exchange
    asyncio.run(exchange.close())


@pytest.fixture
def exchange_with_keys() -> Iterator[ccxt_async.Exchange]:
    exchange = ccxt_async.binance({"apiKey": "not-a-real-key", "secret": "not-a-real-secret"})
    yield exchange
    asyncio.run(exchange.close())


def all_calls(client: LiveOrderClient) -> list[Coroutine[Any, Any, LiveOrder]]:
    return [
        client.create_order("BTC/USDT", "buy", 0.001),
        client.create_order("BTC/USDT", "sell", 0.001, order_type="limit", price=1e6, client_order_id="t1"),
        client.cancel_order("123", "BTC/USDT"),
        client.fetch_order("123", "BTC/USDT"),
    ]


def assert_every_call_refused(client: LiveOrderClient, match: str) -> None:
    for call in all_calls(client):
        with pytest.raises(LiveTradingDisabled, match=match) as info:
            asyncio.run(call)
        assert isinstance(info.value, PermanentError)
        assert isinstance(info.value, ConfigurationError)
        assert not is_retriable(info.value)
        assert "enabled=True" in str(info.value)  # the message says how to turn it on


def test_disabled_by_default_even_with_credentials(exchange_with_keys: ccxt_async.Exchange) -> None:
    client = LiveOrderClient(exchange_with_keys)
    assert not client.enabled
    assert_every_call_refused(client, "was not passed")


def test_enabled_flag_without_credentials_still_refuses(exchange_without_keys: ccxt_async.Exchange) -> None:
    client = LiveOrderClient(exchange_without_keys, enabled=True)
    assert not client.enabled
    assert_every_call_refused(client, "lacks required credentials")


def test_a_truthy_value_is_not_an_explicit_enable(exchange_with_keys: ccxt_async.Exchange) -> None:
    client = LiveOrderClient(exchange_with_keys, enabled=1)  # type: ignore[arg-type]
    assert not client.enabled


def test_venues_needing_a_password_need_it_too() -> None:
    exchange = ccxt_async.okx({"apiKey": "k", "secret": "s"})  # okx also requires a passphrase
    try:
        assert not LiveOrderClient(exchange, enabled=True).enabled
    finally:
        asyncio.run(exchange.close())


def test_refusal_does_not_leak_the_secret(exchange_with_keys: ccxt_async.Exchange) -> None:
    client = LiveOrderClient(exchange_with_keys)
    with pytest.raises(LiveTradingDisabled) as info:
        asyncio.run(client.fetch_order("1", "BTC/USDT"))
    assert "not-a-real-secret" not in str(info.value)
