"""evaluate_signals over 500 symbols whose candles are stored: wall time of the Prefect flow (batched tasks)
against the same domain calls without Prefect, in the same run. Target: < 30 s, overhead < 50%.

Candles are stored at the signal timeframe (15m, 1,000 per symbol) so the figure measures evaluation, not
1m -> 15m aggregation."""

from __future__ import annotations

import functools
import os
import tempfile
import time

N_SYMBOLS, PER_SYMBOL, TIMEFRAME = 500, 1_000, "15m"


def main() -> None:
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="se-bench-prefect-"))
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"

    import polars as pl
    from prefect.testing.utilities import prefect_test_harness

    from bench.common import candle_frame, scratch_engine, timed
    from blocks import ExchangeAccount, MarketCache, TimescaleDatabase
    from blocks.registration import register_block_types
    from db.candles import upsert_candles
    from domain.timeframes import last_closed_open, timeframe_ms
    from flows.signals import evaluate_signals
    from tasks.signals import EvaluationSettings, evaluate_symbols

    step = timeframe_ms(TIMEFRAME)
    now = int(time.time() * 1000)
    start = last_closed_open(now, TIMEFRAME) - (PER_SYMBOL - 1) * step
    symbols = [f"S{i:03d}/USDT" for i in range(N_SYMBOLS)]
    with scratch_engine() as engine, prefect_test_harness(server_startup_timeout=120):
        frame = candle_frame(N_SYMBOLS, PER_SYMBOL, start_ms=start, seed=3)
        frame = frame.with_columns((start + pl.int_range(pl.len()).over("symbol") * step).alias("ts"))
        with engine.begin() as conn:
            upsert_candles(conn, frame, exchange="bench", timeframe=TIMEFRAME)
        register_block_types()
        url = engine.url.render_as_string(hide_password=False)
        TimescaleDatabase(url=url).save("bench", overwrite=True)
        MarketCache(redis_url="redis://127.0.0.1:6379/14").save("bench", overwrite=True)
        ExchangeAccount(exchange_id="replay").save("bench", overwrite=True)

        plain_s, plain = timed(
            lambda: evaluate_symbols(
                engine,
                None,
                exchange="bench",
                symbols=symbols,
                base_timeframe=TIMEFRAME,
                timeframe=TIMEFRAME,
                now_ms=now,
                settings=EvaluationSettings(),
                run_id="bench-plain",
            )
        )
        errors = [r.error for r in plain if r.error]
        per_task_runs = {}
        for per_task in (None, 63, 125):
            per_task_runs[per_task] = timed(
                functools.partial(
                    evaluate_signals,
                    exchange="bench",
                    symbols=symbols,
                    signal_timeframe=TIMEFRAME,
                    timeframe=TIMEFRAME,
                    block="bench",
                    symbols_per_task=per_task,
                )
            )
        flow_s, rows = per_task_runs[None]
        print(f"   {N_SYMBOLS} symbols x {PER_SYMBOL} {TIMEFRAME} candles")
        print(f"   domain calls without Prefect (read + evaluate + store): {plain_s:.1f} s ({len(errors)} errors)")
        print(
            f"   evaluate_signals flow (default batching: 8 tasks, cache warmed): {flow_s:.1f} s "
            f"for {len(rows)} results (target < 30 s)"
        )
        print(f"   Prefect overhead: {100 * (flow_s - plain_s) / plain_s:.0f}% (target < 50%)")
        for per_task, (seconds, _) in per_task_runs.items():
            if per_task is not None:
                tasks = -(-N_SYMBOLS // per_task)
                print(
                    f"   same flow, {per_task} symbols per task ({tasks} tasks): {seconds:.1f} s "
                    f"(overhead {100 * (seconds - plain_s) / plain_s:.0f}%)"
                )
        decisions: dict[str, int] = {}
        for row in rows:
            decisions[row["decision"]] = decisions.get(row["decision"], 0) + 1
        print(f"   decisions: {decisions}")
