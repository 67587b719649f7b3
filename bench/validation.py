"""Validation alone: 1M simulated 1m candles over 20 symbols (with holes, bad rows and in-batch duplicates),
validated as one multi-symbol frame (pages in arrival order, and the same rows shuffled), as 20 per-symbol
frames, and from ccxt-style row lists. Prints rows/s (target >= 2M rows/s for 1M candles), best of 5."""

from __future__ import annotations

import time
from collections.abc import Callable

import polars as pl

from domain.candles import parse_ccxt_rows, validate_frame, validate_rows
from domain.market_sim import MarketSimConfig, series_seed, simulate_candles
from domain.timeframes import MINUTE_MS

SYMBOLS, PER_SYMBOL = 20, 50_000
START_MS = 1_700_006_400_000
NOW_MS = START_MS + 60 * 86_400_000
ROUNDS = 5
TARGET_ROWS_S = 2_000_000


def _best_of(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _market() -> pl.DataFrame:
    """PER_SYMBOL rows per symbol as ccxt pages of 1000 arrive: in order, each page re-sending the previous
    page's last candle (an in-batch duplicate), with the simulator's holes and bad rows (~0.1% each)."""
    config = MarketSimConfig(gap_rate=0.001, bad_row_rate=0.001)
    pages_per_symbol = PER_SYMBOL // 1000
    frames = []
    for i in range(SYMBOLS):
        symbol = f"S{i:03d}/USDT"
        sim = simulate_candles(
            start_ms=START_MS,
            end_ms=START_MS + int(PER_SYMBOL * 1.01) * MINUTE_MS,
            seed=series_seed(42, symbol),
            config=config,
        ).head(PER_SYMBOL - pages_per_symbol + 1)
        candles = sim.select(pl.lit(symbol).alias("symbol"), "ts", "open", "high", "low", "close", "volume")
        resent = candles.gather(list(range(999, candles.height - 1, 999)))
        frames.append(pl.concat([candles, resent]).sort("ts", maintain_order=True))
    return pl.concat(frames)


def main() -> None:
    market = _market()
    n = market.height
    result = validate_frame(market, timeframe="1m", now_ms=NOW_MS)
    print(
        f"   {n:,} candles, {SYMBOLS} symbols: accepted {result.accepted.height:,}, duplicates "
        f"{result.duplicates_in_batch:,}, rejected {result.rejected.height:,} "
        f"({', '.join(f'{k.value} {v}' for k, v in result.counts.items())}), flagged {result.flagged.height}"
    )

    one_s = _best_of(lambda: validate_frame(market, timeframe="1m", now_ms=NOW_MS))
    print(f"   one multi-symbol frame:        {n / one_s:12,.0f} rows/s ({one_s:.3f} s; target >= {TARGET_ROWS_S:,})")

    per_symbol = [g.drop("symbol") for _, g in market.group_by("symbol", maintain_order=True)]
    each_s = _best_of(lambda: [validate_frame(g, timeframe="1m", now_ms=NOW_MS) for g in per_symbol])
    print(f"   20 per-symbol frames:          {n / each_s:12,.0f} rows/s ({each_s:.3f} s)")

    shuffled = market.sample(fraction=1.0, shuffle=True, seed=2)
    shuffled_s = _best_of(lambda: validate_frame(shuffled, timeframe="1m", now_ms=NOW_MS))
    print(f"   one frame, rows shuffled:      {n / shuffled_s:12,.0f} rows/s ({shuffled_s:.3f} s; worst case)")

    # ccxt delivers lists of [ts, o, h, l, c, v] in pages of 1000; turning Python objects into columns is the
    # cost here, and validating page by page pays polars' fixed per-call cost every 1000 rows.
    pages = [
        (symbol, list(map(list, group.drop("symbol").rows()[i : i + 1000])))
        for (symbol,), group in market.group_by("symbol", maintain_order=True)
        for i in range(0, group.height, 1000)
    ]
    batched_s = _best_of(
        lambda: validate_frame(
            pl.concat([parse_ccxt_rows(rows, symbol=str(symbol)) for symbol, rows in pages]),
            timeframe="1m",
            now_ms=NOW_MS,
        )
    )
    print(f"   ccxt rows: {len(pages)} pages parsed, validated as one frame: {n / batched_s:12,.0f} rows/s")
    some = pages[:100]
    some_n = sum(len(rows) for _, rows in some)
    each_page_s = _best_of(lambda: [validate_rows(rows, timeframe="1m", now_ms=NOW_MS) for _, rows in some])
    print(
        f"   ccxt rows: one validate_rows call per page:         {some_n / each_page_s:12,.0f} rows/s "
        f"({each_page_s / len(some) * 1000:.1f} ms per page)"
    )
    print(f"   ratio to target (one frame): {n / one_s / TARGET_ROWS_S:.2f}x")


if __name__ == "__main__":
    main()
