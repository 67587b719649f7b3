"""Backtest: speed on a year of 1m candles, and the evidence run (does the score predict P&L?).

1. Speed: one symbol, 365 days of simulated 1m candles (``domain.market_sim``, seeded, with its regimes,
   volatility clusters and exchange-side holes; no bad rows) through the full backtest: preparation (signal
   series + every setup's trade), one replay, and ``run_backtest`` with the weight fit (two replays).
2. Evidence: every file in ../shared/data/candles at every timeframe it supports (native files as they are;
   1m files also aggregated to 5m/15m/1h, 5m files to 15m/1h; a native file wins over an aggregate of the
   same symbol and timeframe), one ``run_backtest`` per timeframe with seeded random-walk controls matched to
   the series, then everything pooled. Series too short to warm the indicators up are listed and left out.
   Skipped with a message when the folder is absent.

Set ``SE_BENCH_REPORTS=DIR`` to also write the markdown reports and plots there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl

from adapters.replay import FileCandleSource, aggregate_candles
from adapters.report_files import backtest_markdown, pooled_markdown, write_report
from domain.backtest import BacktestConfig, BacktestResult, audit_lookahead, pool_results, run_backtest
from domain.backtest_market import prepare_market
from domain.backtest_replay import replay
from domain.market_sim import MarketSimConfig, simulate_candles
from domain.timeframes import DAY_MS, timeframe_ms

SHARED_CANDLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "candles"
TIMEFRAMES = ("1m", "5m", "15m", "1h")
MIN_BARS = 400  # EMA200 and the 100-bar ATR baseline need ~300 bars before the first setup can be scored
SEED = 7


def _speed() -> None:
    start = 1_700_006_400_000
    candles = simulate_candles(
        start_ms=start, end_ms=start + 365 * DAY_MS, seed=SEED, config=MarketSimConfig(bad_row_rate=0.0)
    ).drop("regime", "corruption")
    symbols = {"SIM/USDT": candles}
    config = BacktestConfig()
    t0 = time.perf_counter()
    market = prepare_market(symbols, timeframe="1m", config=config)
    t1 = time.perf_counter()
    run = replay(market, config=config)
    t2 = time.perf_counter()
    result = run_backtest(symbols, timeframe="1m", config=config, seed=SEED)
    t3 = time.perf_counter()
    s = market[0]
    print(f"   a year of 1m candles, one symbol: {candles.height} candles, {s.setups.size} setup bars")
    print(f"   prepare (signal series + {s.setups.size} setup trades simulated): {t1 - t0:6.2f} s")
    print(
        f"   one replay ({run.trades.height} trades, {run.setups.height} hypothetical setups,"
        f" {run.evaluations.height} evaluate_at calls): {t2 - t1:6.2f} s"
    )
    fitted = result.calibration is not None and result.calibration.run is not None
    print(
        f"   run_backtest (prepare + replay + statistics + weight fit{' + refit replay' if fitted else ''}):"
        f" {t3 - t2:6.2f} s"
    )


def _evidence_series(source: FileCandleSource) -> tuple[dict[str, dict[str, pl.DataFrame]], list[str]]:
    """timeframe -> {series name -> candles}; and the lines saying where each series came from."""
    by_tf: dict[str, dict[str, pl.DataFrame]] = {tf: {} for tf in TIMEFRAMES}
    notes: list[str] = []
    for symbol in source.symbols():
        natives = source.timeframes(symbol)
        for tf in TIMEFRAMES:
            if tf in natives:
                frame, origin = source.load(symbol, tf), "native file"
            else:
                finer = [
                    n for n in natives if timeframe_ms(n) < timeframe_ms(tf) and timeframe_ms(tf) % timeframe_ms(n) == 0
                ]
                if not finer:
                    continue
                base = finer[0]
                frame, origin = aggregate_candles(source.load(symbol, base), tf), f"aggregated from {base}"
            if frame.height < MIN_BARS:
                notes.append(f"   left out: {symbol} {tf} ({origin}): {frame.height} candles < {MIN_BARS}")
                continue
            by_tf[tf][symbol] = frame
            notes.append(f"   {symbol} {tf}: {origin}, {frame.height} candles")
    return by_tf, notes


def _evidence() -> None:
    if not SHARED_CANDLES.is_dir():
        print(f"   evidence run skipped: {SHARED_CANDLES} not found")
        return
    by_tf, notes = _evidence_series(FileCandleSource.from_directory(SHARED_CANDLES))
    print(f"   data: {SHARED_CANDLES}")
    print("\n".join(notes))
    reports = os.environ.get("SE_BENCH_REPORTS")
    results: list[BacktestResult] = []
    for tf in TIMEFRAMES:
        series = by_tf[tf]
        if not series:
            continue
        controls = min(10, max(5, len(series)))
        started = time.perf_counter()
        result = run_backtest(series, timeframe=tf, seed=SEED, controls=controls, label=f"shared candles {tf}")
        took = time.perf_counter() - started
        print(f"\n---- {tf}: {len(series)} series + {controls} random-walk controls ({took:.1f} s)\n")
        print(backtest_markdown(result))
        if reports:
            written = write_report(result, Path(reports))
            print(f"   report written: {', '.join(str(p) for p in written)}")
        results.append(result)
    if not results:
        return
    real = pool_results(results, label="Pooled over every timeframe of the shared candles", seed=SEED)
    controls_pooled = pool_results(
        [r.control for r in results if r.control is not None], label="Pooled random-walk controls", seed=SEED
    )
    costless = pool_results(
        [r.control_costless for r in results if r.control_costless is not None],
        label="Pooled random-walk controls without costs",
        seed=SEED,
    )
    print("\n---- pooled (the same markets at several timeframes: not independent samples)\n")
    print(pooled_markdown(real, controls_pooled, costless))
    five = by_tf.get("5m") or next(iter(v for v in by_tf.values() if v))
    started = time.perf_counter()
    audit = audit_lookahead(five, timeframe="5m" if by_tf.get("5m") else TIMEFRAMES[0], cuts=3, seed=SEED)
    print(
        f"   look-ahead audit on the 5m shared candles, cuts at {list(audit.cuts)}: {audit.bars_compared} bars,"
        f" {audit.evaluations_compared} evaluations, {audit.trades_compared} entries, {audit.setups_compared}"
        f" setups compared; mismatches: {len(audit.mismatches)} ({time.perf_counter() - started:.1f} s)"
    )
    for line in audit.mismatches[:10]:
        print(f"     {line}")


def main() -> None:
    _speed()
    _evidence()


if __name__ == "__main__":
    main()
