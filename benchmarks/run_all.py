"""Run every mailkit-edu benchmark and print a summary.

Usage::

    .venv/bin/python benchmarks/run_all.py            # all of them (about 5 minutes)
    .venv/bin/python benchmarks/run_all.py latency    # only those whose name matches

Each benchmark prints its figures, its same-run baseline and a PASS/FAIL line against
its floor. The figures are informational: this script exits 0 whatever they are, and 1
only if a benchmark crashed (an exception, a lost message, a deadline missed).
Everything listens on and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_imap  # noqa: E402
import bench_inbox  # noqa: E402
import bench_latency  # noqa: E402
import bench_pop3  # noqa: E402
import bench_startup  # noqa: E402
import bench_throughput  # noqa: E402
import bench_transcript  # noqa: E402
import bench_widgets  # noqa: E402
from _common import Result  # noqa: E402

BENCHMARKS = {
    "startup": bench_startup,
    "latency": bench_latency,
    "throughput": bench_throughput,
    "transcript": bench_transcript,
    "pop3": bench_pop3,
    "imap": bench_imap,
    "widgets": bench_widgets,
    "inbox": bench_inbox,
}


def main(argv: list[str]) -> int:
    chosen = [name for name in BENCHMARKS if not argv or any(a in name for a in argv)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"mailkit-edu benchmarks: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load:.2f}, {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    started = time.perf_counter()
    results: list[tuple[str, Result | None, float]] = []
    for name in chosen:
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name].run()
        except Exception:
            traceback.print_exc()
            result = None
        results.append((name, result, time.perf_counter() - t0))

    print()
    print(f"=== Summary ({time.perf_counter() - started:.0f} s) ===")
    for name, result, seconds in results:
        if result is None:
            print(f"  CRASH  {name:<11} ({seconds:.0f} s)")
        else:
            print(f"  {result.verdict:<5}  {name:<11} {result.summary}  [{result.floor}]")
    print("  (Figures are informational; floors are checked against same-run baselines.)")
    return 1 if any(result is None for _, result, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
