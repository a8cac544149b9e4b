"""The connection's concurrency follows x-ms-dop-hint and its pace the x-ms-ratelimit-*
headers: against the emulator's service protection limits, fewer 429s than a fixed
concurrency (the throughput of both: bench/pacing_bench.py); and the rules themselves,
without I/O."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.fixtures.emulator import start_emulator_for
from worker.emulator import ServiceLimits
from worker.emulator.values import Changes
from worker.remote.pacing import Hints, Pacer, concurrency, number

from .helpers import client_for


def test_concurrency_follows_the_hint_within_the_configured_maximum() -> None:
    assert concurrency(8, Hints(), 300) == 8
    assert concurrency(8, Hints(dop=2), 300) == 2
    assert concurrency(8, Hints(dop=48), 300) == 8  # never above what was configured
    assert concurrency(8, Hints(dop=0), 300) == 1
    low = Hints(dop=8, time_left=100.0, time_max=1200.0)
    assert concurrency(8, low, 300) == 4  # 1,200 s of server time per 300 s window
    assert number("1,199.46") == 1199.46 and number("5999") == 5999 and number("x") is None


def test_the_next_request_waits_for_the_oldest_to_leave_the_window() -> None:
    now = [100.0]
    pacer = Pacer(4, window=10.0, clock=lambda: now[0])
    assert pacer.limit == 1  # until the first reply says what the service wants
    for remaining in (9, 8, 7, 6, 5, 4):  # a window of 10 requests, none spent before
        with pacer as started:
            now[0] += 0.5
        pacer.observe({"x-ms-ratelimit-burst-remaining-xrm-requests": str(remaining),
                       "x-ms-dop-hint": "3"}, started)
    assert (pacer.limit, pacer.window_limit) == (3, 10)
    # 6 of 10 spent; a reserve of 1 + 3 (in flight): the next waits for the first to leave.
    assert pacer._wait() == 100.0 + 10.1 - now[0]
    now[0] = 110.3
    assert pacer._wait() is None
    fixed = Pacer(4, follow=False)
    fixed.observe({"x-ms-dop-hint": "3"}, 0.0)
    assert (fixed.limit, fixed.window_limit) == (4, 0)


def _run(limits: ServiceLimits, follow: bool, requests: int) -> tuple[int, int]:
    """(429s answered, reads that failed) for ``requests`` reads by key from eight threads
    on one connection of concurrency 8 (bench/pacing_bench.py prints the time they take)."""
    server = start_emulator_for(limits=None)
    key = str(uuid.uuid4())
    server.store.create("accounts", Changes(values={"name": "paced"}, key=key))
    server.emulator.set_limits(limits)
    try:
        with client_for(server, concurrency=8, max_retries=30, retry_cap=2,
                        follow_service_hints=str(follow).lower(),
                        rate_limit_window=limits.window) as client:
            accounts = client.entity_set("accounts", "accountid")
            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(lambda _: accounts.get(key) is not None,
                                         range(requests)))
        assert server.emulator.protection is not None
        return server.emulator.protection.refused, outcomes.count(False)
    finally:
        server.stop()


def test_following_the_hints_meets_fewer_429s() -> None:
    limits = ServiceLimits(requests=100, window=2.0, concurrent=3, dop_hint=2)
    fixed_429, fixed_failed = _run(limits, follow=False, requests=250)
    paced_429, paced_failed = _run(limits, follow=True, requests=250)
    assert fixed_failed == paced_failed == 0
    assert fixed_429 > 0
    assert paced_429 < fixed_429 and paced_429 <= 2
