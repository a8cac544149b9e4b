"""The retry policy (pure) and the throttle gate shared by a connection's threads."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.remote.retry import RetryPolicy, ThrottleGate


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, base=0.5, cap=4.0, jitter=0.0)
    assert [policy.delay(n, rand=lambda: 0.9) for n in range(1, 10)] == [
        0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.delay(1) is not None
    assert policy.delay(2) is not None
    assert policy.delay(3) is None
    assert RetryPolicy(max_attempts=1).delay(1) is None


def test_retry_after_replaces_the_backoff() -> None:
    policy = RetryPolicy(max_attempts=5, base=10.0, jitter=1.0)
    assert policy.delay(1, 2.0) == 2.0
    assert policy.delay(4, 0.0) == 0.0


def test_too_long_retry_after_gives_up() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(1, 61.0) is None
    assert policy.delay(1, 60.0) == 60.0


def test_jitter_is_the_random_fraction() -> None:
    policy = RetryPolicy(base=1.0, cap=100.0, jitter=0.5)
    assert policy.delay(3, rand=lambda: 0.0) == 2.0
    assert policy.delay(3, rand=lambda: 1.0) == 4.0


@given(attempt=st.integers(1, 60), rand=st.floats(0.0, 1.0, exclude_max=True),
       base=st.floats(0.0, 10.0), cap=st.floats(0.0, 120.0), jitter=st.floats(0.0, 1.0))
def test_delays_stay_within_zero_and_the_cap(attempt: int, rand: float, base: float,
                                              cap: float, jitter: float) -> None:
    policy = RetryPolicy(max_attempts=100, base=base, cap=cap, jitter=jitter)
    delay = policy.delay(attempt, rand=lambda: rand)
    assert delay is not None
    assert 0.0 <= delay <= cap + 1e-9


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"base": -1.0}, {"jitter": 1.5}])
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_gate_open_by_default() -> None:
    clock = FakeClock()
    gate = ThrottleGate(clock, clock.sleep)
    assert gate.wait() == 0.0
    assert clock.sleeps == []


def test_gate_blocks_until_the_instant_and_never_moves_earlier() -> None:
    clock = FakeClock()
    gate = ThrottleGate(clock, clock.sleep)
    gate.close_for(5.0)
    gate.close_for(2.0)  # an earlier reopening does not shorten the pause
    assert gate.remaining() == 5.0
    assert gate.wait() == 5.0
    assert gate.remaining() == 0.0


def test_gate_rechecks_after_sleeping() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:
            gate.close_for(3.0)  # another thread got a 429 meanwhile

    gate = ThrottleGate(clock, sleep)
    gate.close_for(1.0)
    assert gate.wait() == 4.0
    assert clock.sleeps == [1.0, 3.0]


def test_gate_holds_every_thread() -> None:
    gate = ThrottleGate()
    gate.close_for(0.3)
    passed: list[float] = []
    start = time.monotonic()

    def worker() -> None:
        gate.wait()
        passed.append(time.monotonic() - start)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == 5
    assert min(passed) >= 0.29
