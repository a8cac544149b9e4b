"""A pass's progress without a database: done / total, rate and ETA on a fake clock; the
log line about every 30 s; the status board; ``crmsync sync``'s view on a terminal and off
one."""

from __future__ import annotations

import io
import logging
from collections import Counter

import pytest

from worker.commands.sync import ProgressView
from worker.sync.model import Direction
from worker.sync.progress import (
    PassObservers,
    PassProgress,
    ProgressBoard,
    ProgressLog,
    done_of,
    duration,
)

TO, FROM = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_done_total_rate_and_eta() -> None:
    clock = Clock()
    p = PassProgress("CUSTOMER", TO, clock=clock)
    assert p.describe() == "CUSTOMER to CRM: 0 / ?"  # not known yet
    p.expect(20_000)
    assert p.describe() == "CUSTOMER to CRM: 0 / 20,000"
    clock.now += 10
    p.add(Counter(inserted=8000, unchanged=500, coupled=300))  # coupled comes on top
    assert (p.done, p.rate) == (8500, 850.0)
    assert p.eta == pytest.approx(13.53, abs=0.01)
    assert p.describe() == "CUSTOMER to CRM: 8,500 / 20,000, 850/s, ETA 0:14"
    clock.now += 13.5
    p.add(Counter(inserted=11_500))
    assert p.eta == 0
    assert p.summary() == ("CUSTOMER to CRM: 20,000 records in 0:24, 851/s "
                           "(coupled 300, inserted 19,500, unchanged 500)")


def test_the_running_rate_and_eta_follow_the_last_half_minute() -> None:
    # Measured on a 200k initial sync: the rate fell from 3,500/s to 800/s as the machine
    # got busy, and an ETA by the average since the start said 0:23 with 0:53 to go.
    clock = Clock()
    p = PassProgress("CUSTOMER", TO, clock=clock)
    p.expect(100_000)
    for _ in range(60):  # a minute at 1,000/s
        clock.now += 1
        p.add(Counter(inserted=1000))
    assert (p.current_rate, p.eta) == (1000.0, 40.0)
    for _ in range(30):  # then half a minute at 100/s
        clock.now += 1
        p.add(Counter(inserted=100))
    assert p.rate == 700.0  # the whole pass's, for its summary line
    assert p.current_rate == 100.0
    assert p.describe() == "CUSTOMER to CRM: 63,000 / 100,000, 100/s, ETA 6:10"
    clock.now += 30  # a stall: no chunk for half a minute
    assert p.current_rate == 50.0
    p.add(Counter(inserted=37_000))
    assert p.summary() == "CUSTOMER to CRM: 100,000 records in 2:00, 833/s (inserted 100,000)"


def test_a_capped_count_shows_as_a_lower_bound_and_gives_no_eta() -> None:
    clock = Clock()
    p = PassProgress("CUSTOMER", FROM, clock=clock)
    p.expect(5000, at_least=True)
    clock.now += 2
    p.add(Counter(inserted=1000))
    assert p.describe() == "CUSTOMER from CRM: 1,000 / 5,000+, 500/s"
    assert p.eta is None
    p.add(Counter(inserted=6000))  # past the service's count: unknown rather than 5,000+
    assert p.describe() == "CUSTOMER from CRM: 7,000 / ?, 3,500/s"


def test_records_read_count_as_done_though_nothing_came_of_them() -> None:
    clock = Clock()
    p = PassProgress("CUSTOMER", FROM, clock=clock)
    p.expect(1000)
    clock.now += 1
    p.add(Counter(read=500))  # echoes of crmsync's own writes: no outcome
    p.add(Counter(read=500, modified=2))
    assert p.describe() == "CUSTOMER from CRM: 1,000 / 1,000, 1,000/s, ETA 0:00"
    assert p.summary() == "CUSTOMER from CRM: 1,000 records in 0:01, 1,000/s (modified 2)"
    p.add(Counter(deleted=1500))  # deletions from change tracking were never read
    assert p.done == 1502


def test_a_second_lot_adds_to_what_is_done() -> None:
    p = PassProgress("CUSTOMER", TO, clock=Clock())
    p.expect(100)
    p.add(Counter(modified=100))
    p.expect(40)  # a fresh pass after a resumed one
    assert p.known_total == 140
    p.expect(None)
    assert p.known_total is None and p.eta is None


def test_unknown_total_and_no_rate_before_the_first_record() -> None:
    clock = Clock()
    p = PassProgress("CURRENCY", TO, clock=clock)
    clock.now += 5
    assert (p.rate, p.eta, p.total_text()) == (None, None, None)
    assert p.summary() == "CURRENCY to CRM: 0 records in 0:05"
    assert p.summary("the CRM did not answer") == (
        "CURRENCY to CRM: 0 records in 0:05; failed: the CRM did not answer")


def test_done_of_a_job_row_and_durations() -> None:
    assert done_of({"inserted": 3, "failed": None, "coupled": 9, "skipped": 1}) == 4
    assert [duration(s) for s in (0, 9.6, 125, 3725)] == ["0:00", "0:10", "2:05", "1:02:05"]


def test_a_log_line_about_every_30_seconds(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = ProgressLog(clock=clock)
    p = PassProgress("CUSTOMER", TO, clock=clock, on_change=logger.pass_progress)
    caplog.set_level(logging.INFO, logger="worker.sync.progress")
    p.expect(20_000)
    for _ in range(40):  # 40 chunks of 500, 2 s apart
        clock.now += 2
        p.add(Counter(inserted=500))
    lines = [r for r in caplog.records if r.getMessage() == "sync pass progress"]
    assert [r.__dict__["done"] for r in lines] == [7500, 15000]
    first = lines[0].__dict__
    assert (first["mapping"], first["direction"], first["total"], first["rate"]) == (
        "CUSTOMER", "to_integration", "20,000", 250.0)
    logger.pass_finished("CUSTOMER", TO, Counter(), None)  # a new pass starts afresh


def test_the_board_says_what_runs_and_tells_at_most_every_few_seconds() -> None:
    clock = Clock()
    board = ProgressBoard(every=2.0, clock=clock)
    told: list[str] = []
    board.on_change = lambda: told.append(board.text())
    customer = PassProgress("CUSTOMER", TO, clock=clock, on_change=board.pass_progress)
    customer.expect(20_000)
    clock.now += 10
    customer.add(Counter(inserted=8500))
    contacts = PassProgress("CONTACTS", FROM, clock=clock, on_change=board.pass_progress)
    contacts.add(Counter(modified=5))  # a pass that starts: told at once
    contacts.add(Counter(modified=5))  # within 2 s of the last: not told
    assert told == ["CUSTOMER to CRM: 0 / 20,000", "CUSTOMER to CRM: 8,500 / 20,000, 850/s",
                    "CUSTOMER to CRM: 8,500 / 20,000, 850/s; CONTACTS from CRM: 5 / ?"]
    assert board.text() == ("CUSTOMER to CRM: 8,500 / 20,000, 850/s; "
                            "CONTACTS from CRM: 10 / ?")
    board.pass_finished("CUSTOMER", TO, Counter(), None)
    assert told[-1] == "CONTACTS from CRM: 10 / ?"


def test_observers_each_hear_and_one_that_fails_stops_nobody(
        caplog: pytest.LogCaptureFixture) -> None:
    heard: list[str] = []

    class Broken:
        def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
            raise RuntimeError("boom")

    class Listening:
        def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
            heard.append(progress.describe())

    observers = PassObservers([Broken(), Listening()])
    PassProgress("CUSTOMER", TO, clock=Clock(), on_change=observers.pass_progress).expect(3)
    observers.mapping_finished("CUSTOMER", True)  # nobody has it: nothing happens
    assert heard == ["CUSTOMER to CRM: 0 / 3"]
    assert "pass observer failed" in caplog.text


def test_off_a_terminal_one_plain_line_per_pass() -> None:
    clock, out = Clock(), io.StringIO()
    view = ProgressView(out, tty=False, clock=clock)
    p = PassProgress("CUSTOMER", TO, clock=clock, on_change=view.pass_progress)
    p.expect(1000)
    for _ in range(2):
        clock.now += 1
        p.add(Counter(inserted=500))
    view.pass_finished("CUSTOMER", TO, Counter(inserted=1000), None)
    view.pass_finished("CURRENCY", TO, Counter(), None)  # ended before any chunk
    assert out.getvalue() == ("CUSTOMER to CRM: 1,000 records in 0:02, 500/s (inserted 1,000)\n"
                              "CURRENCY to CRM: 0 records in 0:00\n")


def test_on_a_terminal_the_running_pass_is_redrawn_in_place() -> None:
    clock, out = Clock(), io.StringIO()
    view = ProgressView(out, tty=True, clock=clock)
    p = PassProgress("CUSTOMER\x1b[2J", TO, clock=clock, on_change=view.pass_progress)
    p.expect(1000)
    clock.now += 1
    p.add(Counter(inserted=500))
    clock.now += 0.05
    p.add(Counter(inserted=100))  # within a tenth of a second: not drawn
    clock.now += 1
    view.pass_finished(p.mapping, TO, p.counts, None)
    frames = out.getvalue().split("\r\x1b[K")
    assert frames == ["", "CUSTOMER\\x1b[2J to CRM: 0 / 1,000",
                      "CUSTOMER\\x1b[2J to CRM: 500 / 1,000, 500/s, ETA 0:01",
                      "CUSTOMER\\x1b[2J to CRM: 600 records of 1,000 in 0:02, 293/s "
                      "(inserted 600)\n"]


def test_on_a_terminal_a_log_line_goes_above_the_running_line() -> None:
    # A warning during a pass (a throttled request, a retry) was written onto the line
    # being redrawn: "CUSTOMER to CRM: 500 / 1,000, 500/s, ETA 0:0110:49:21 WARNING …".
    clock, out = Clock(), io.StringIO()
    view = ProgressView(out, tty=True, clock=clock)
    logger = logging.getLogger("tests.progress.view")
    logger.propagate = False
    handler = logging.StreamHandler(out)
    logger.handlers[:] = [handler]
    try:
        with view.sharing(logger):
            p = PassProgress("CUSTOMER", TO, clock=clock, on_change=view.pass_progress)
            p.expect(1000)
            clock.now += 1
            p.add(Counter(inserted=500))
            logger.warning("remote service throttling")
            view.pass_finished("CUSTOMER", TO, p.counts, None)
            logger.warning("after the pass")
        assert logger.handlers == [handler]  # as it was
    finally:
        logger.handlers.clear()
    assert out.getvalue() == (
        "\r\x1b[KCUSTOMER to CRM: 0 / 1,000"
        "\r\x1b[KCUSTOMER to CRM: 500 / 1,000, 500/s, ETA 0:01"
        "\r\x1b[Kremote service throttling\nCUSTOMER to CRM: 500 / 1,000, 500/s, ETA 0:01"
        "\r\x1b[KCUSTOMER to CRM: 500 records of 1,000 in 0:01, 500/s (inserted 500)\n"
        "after the pass\n")


def test_off_a_terminal_the_log_handlers_are_left_alone() -> None:
    view = ProgressView(io.StringIO(), tty=False)
    logger = logging.getLogger("tests.progress.pipe")
    handler = logging.StreamHandler(view.stream)
    logger.handlers[:] = [handler]
    try:
        with view.sharing(logger):
            assert logger.handlers == [handler]
    finally:
        logger.handlers.clear()
