"""evaluate_signals over 500 symbols whose candles are stored: wall time of the Prefect flow (batched tasks)
against the same domain calls without Prefect, in the same run. Target: < 30 s, overhead < 50%.

Candles are stored at the signal timeframe (15m, 1,000 per symbol) so the figure measures evaluation, not
1m -> 15m aggregation."""

from __future__ import annotations

import functools
import os
import tempfile
import time
from typing import Any

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

        def plain_call() -> list[Any]:
            return evaluate_symbols(
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

        plain_s, plain = timed(plain_call)
        errors = [r.error for r in plain if getattr(r, "error", None)]

        def flow_run(per_task: int | None) -> tuple[float, list[dict[str, Any]]]:
            return timed(
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

        flow_run(None)  # warm-up: the first flow run in a process pays one-off registration costs
        plain_s = min(plain_s, *(timed(plain_call)[0] for _ in range(2)))
        per_task_runs = {per_task: sorted(flow_run(per_task)[0] for _ in range(3)) for per_task in (None, 63, 32)}
        rows = flow_run(None)[1]
        flow_s = per_task_runs[None][1]  # median of 3
        print(f"   {N_SYMBOLS} symbols x {PER_SYMBOL} {TIMEFRAME} candles")
        print(f"   domain calls without Prefect (read + evaluate + store): {plain_s:.1f} s ({len(errors)} errors)")
        print(
            f"   evaluate_signals flow (default batching: 4 tasks, cache warmed), median of 3: {flow_s:.1f} s "
            f"for {len(rows)} results (target < 30 s)"
        )
        print(f"   Prefect overhead: {100 * (flow_s - plain_s) / plain_s:.0f}% (target < 50%)")
        for per_task, runs in per_task_runs.items():
            tasks = -(-N_SYMBOLS // per_task) if per_task else -(-N_SYMBOLS // -(-N_SYMBOLS // 4))
            print(
                f"   {per_task or 'default'} symbols per task ({tasks} tasks): best {runs[0]:.1f} s, "
                f"median {runs[1]:.1f} s of 3 (overhead best {100 * (runs[0] - plain_s) / plain_s:.0f}%, "
                f"median {100 * (runs[1] - plain_s) / plain_s:.0f}%)"
            )
        decisions: dict[str, int] = {}
        for row in rows:
            decisions[row["decision"]] = decisions.get(row["decision"], 0) + 1
        print(f"   decisions: {decisions}")
