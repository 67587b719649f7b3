"""`make bench`: every benchmark prints figures and ratios measured in the same run (never pass/fail).

`python -m bench` runs them all; `python -m bench ingest gaps` runs the named ones.
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = ["validation", "ingest", "indicators", "cache", "gaps", "backfill", "signals", "backtest"]


def main(argv: list[str]) -> int:
    chosen = argv or BENCHMARKS
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
        return 2
    for name in chosen:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"== {name}: not available yet")
                continue
            raise
        print(f"\n== {name}")
        started = time.perf_counter()
        module.main()
        print(f"   ({name} took {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
