"""Loopback exchange emulators that the REAL ccxt clients talk to over HTTP (no mocks of ccxt)."""

from tests.emulator.binance import (
    BinanceEmulator,
    Fault,
    RequestRecord,
    binance_emulator,
    random_walk_candles,
    read_candle_csv,
    run_binance_emulator,
)

__all__ = [
    "BinanceEmulator",
    "Fault",
    "RequestRecord",
    "binance_emulator",
    "random_walk_candles",
    "read_candle_csv",
    "run_binance_emulator",
]
