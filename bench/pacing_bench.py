"""Throughput and 429s of a connection that follows the service's hints (``x-ms-dop-hint``,
``x-ms-ratelimit-*-remaining``) against one with a fixed concurrency, under the emulator's
service protection limits (by default 100 requests per 2 s window, 3 at once, a hint of 2).

Both runs send the same reads by key from eight threads on one connection of concurrency 8.
The service holds both to its window, so the figure to read is the ratio of their rates
(paced / fixed, about 1.0 when following the hints costs nothing) beside each run's rate as
a share of the window's capacity (requests per window / window seconds). The test suite
checks the behaviour (fewer 429s, no failed read) in tests/remote/test_pacing.py; this
script prints the timing, which a test must not assert.

    .venv/bin/python bench/pacing_bench.py
    .venv/bin/python bench/pacing_bench.py --requests 1000 --window 5 --window-requests 200
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from worker.emulator import ServiceLimits, start_emulator
from worker.emulator.values import Changes
from worker.remote.client import ODataClient
from worker.remote.config import load_connection


def run(limits: ServiceLimits, follow: bool, requests: int) -> tuple[int, float, int]:
    """(429s answered, seconds taken, reads that failed) for ``requests`` reads by key."""
    server = start_emulator(port=0, limits=None)
    key = str(uuid.uuid4())
    server.store.create("accounts", Changes(values={"name": "paced"}, key=key))
    server.emulator.set_limits(limits)
    env = {"CRMSYNC_BENCH_URL": server.base_url, "CRMSYNC_BENCH_CONCURRENCY": "8",
           "CRMSYNC_BENCH_MAX_RETRIES": "30", "CRMSYNC_BENCH_RETRY_CAP": "2",
           "CRMSYNC_BENCH_RETRY_BASE": "0.05",
           "CRMSYNC_BENCH_FOLLOW_SERVICE_HINTS": str(follow).lower(),
           "CRMSYNC_BENCH_RATE_LIMIT_WINDOW": str(limits.window)}
    try:
        with ODataClient(load_connection("bench", env=env)) as client:
            accounts = client.entity_set("accounts", "accountid")
            began = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(lambda _: accounts.get(key) is not None,
                                         range(requests)))
            elapsed = time.monotonic() - began
        assert server.emulator.protection is not None
        return server.emulator.protection.refused, elapsed, outcomes.count(False)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=250, help="reads per run")
    parser.add_argument("--window", type=float, default=2.0, help="window seconds")
    parser.add_argument("--window-requests", type=int, default=100,
                        help="requests the service takes per window")
    parser.add_argument("--concurrent", type=int, default=3, help="requests at once")
    parser.add_argument("--dop-hint", type=int, default=2, help="x-ms-dop-hint sent")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the 429 warnings are counted, not shown
    limits = ServiceLimits(requests=args.window_requests, window=args.window,
                           concurrent=args.concurrent, dop_hint=args.dop_hint)
    capacity = args.window_requests / args.window
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"{args.requests} reads, the service takes {args.window_requests} per "
          f"{args.window:g} s ({capacity:.0f}/s), {args.concurrent} at once, hint "
          f"{args.dop_hint}")
    rates = {}
    for name, follow in (("fixed concurrency 8", False), ("following the hints", True)):
        refused, seconds, failed = run(limits, follow, args.requests)
        rates[name] = args.requests / seconds
        print(f"  {name:<20} {refused:>4} × 429  {failed:>3} failed  {seconds:6.2f} s  "
              f"{rates[name]:6.1f} req/s = {rates[name] / capacity:.2f} × the window")
    ratio = rates["following the hints"] / rates["fixed concurrency 8"]
    print(f"  paced / fixed throughput: {ratio:.2f}×")


if __name__ == "__main__":
    main()
