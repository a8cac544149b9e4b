"""The scheduling rules as pure functions: intervals without drift, weekdays, windows that
cross midnight, time zones and DST, expiry, retries with backoff, inactivity."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import JobError
from worker.queue import schedule
from worker.queue.models import (
    EntryStatus,
    JobKind,
    JobQueueEntry,
    RetryPolicy,
    Schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def entry(**changes: object) -> JobQueueEntry:
    base = JobQueueEntry(
        id=1, description="", job_kind=JobKind.SYNC_MAPPING, mapping_name="CUSTOMER",
        parameters={}, status=EntryStatus.IN_PROCESS, schedule=Schedule(),
        retry=RetryPolicy(), attempts=0, inactivity_timeout=None, category_code=None,
        priority=1000, job_timeout=timedelta(hours=12), next_run_at=None,
    )
    return replace(base, **changes)


def test_next_run_is_last_scheduled_plus_interval_without_drift() -> None:
    s = Schedule(run_interval=timedelta(minutes=30))
    scheduled = utc(2026, 11, 25, 10, 0)
    # The run started late and took 7 minutes: the grid stays on :00 / :30.
    got = schedule.next_run_after(s, scheduled, utc(2026, 11, 25, 10, 7))
    assert got == utc(2026, 11, 25, 10, 30)


def test_missed_runs_coalesce_into_the_next_slot_after_now() -> None:
    s = Schedule(run_interval=timedelta(minutes=30))
    scheduled = utc(2026, 11, 25, 2, 0)
    # The workers were down from 02:00 to 09:10: one run now, then the next grid slot.
    got = schedule.next_run_after(s, scheduled, utc(2026, 11, 25, 9, 10))
    assert got == utc(2026, 11, 25, 9, 30)


def test_window_pushes_the_run_to_the_next_morning() -> None:
    s = Schedule(run_interval=timedelta(minutes=30), starting_time=time(8), ending_time=time(17))
    nxt = schedule.next_run_after(s, utc(2026, 11, 25, 16, 45), utc(2026, 11, 25, 16, 46))
    assert nxt == utc(2026, 11, 26, 8, 0)


def test_window_crossing_midnight() -> None:
    s = Schedule(starting_time=time(22), ending_time=time(6), time_zone="Europe/Berlin")
    # Wednesday 12:00 Berlin is outside; the window opens at 22:00 Berlin (21:00 UTC).
    assert schedule.next_allowed(s, utc(2026, 11, 25, 11, 0)) == utc(2026, 11, 25, 21, 0)
    # 03:00 Berlin is inside the window (the morning part).
    assert schedule.is_allowed(s, utc(2026, 11, 26, 2, 0))
    # 06:00 Berlin is the end, exclusive.
    assert not schedule.is_allowed(s, utc(2026, 11, 26, 5, 0))


def test_weekdays_skip_the_weekend_in_the_entrys_time_zone() -> None:
    s = Schedule(run_on_weekdays=frozenset({1, 2, 3, 4, 5}), time_zone="America/New_York")
    # Saturday 2026-11-28 03:00 UTC is still Friday 22:00 in New York: allowed.
    assert schedule.is_allowed(s, utc(2026, 11, 28, 3, 0))
    # Saturday noon New York: pushed to Monday 00:00 New York (05:00 UTC).
    assert schedule.next_allowed(s, utc(2026, 11, 28, 17, 0)) == utc(2026, 11, 30, 5, 0)


def test_daily_interval_keeps_the_wall_clock_across_dst() -> None:
    s = Schedule(run_interval=timedelta(days=1), time_zone="Europe/Berlin")
    before = datetime(2026, 10, 24, 8, 0, tzinfo=BERLIN).astimezone(UTC)  # CEST
    nxt = schedule.next_run_after(s, before, before + timedelta(minutes=1))
    assert nxt is not None
    assert nxt.astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 10, 25, 8, 0)
    assert nxt - before == timedelta(hours=25)


def test_short_interval_is_absolute_on_the_night_clocks_change() -> None:
    s = Schedule(run_interval=timedelta(minutes=30), time_zone="Europe/Berlin")
    # 00:45 UTC on 2026-10-25 is 02:45 CEST; 30 minutes later is 02:15 CET.
    scheduled = utc(2026, 10, 25, 0, 45)
    assert schedule.next_run_after(s, scheduled, scheduled) == utc(2026, 10, 25, 1, 15)


def test_window_start_inside_the_spring_forward_gap() -> None:
    s = Schedule(starting_time=time(2, 30), ending_time=time(4), time_zone="Europe/Berlin")
    # On 2026-03-29 02:30 Berlin does not exist; the window opens at 03:30 CEST = 01:30 UTC.
    got = schedule.next_allowed(s, utc(2026, 3, 28, 23, 0))
    assert got == utc(2026, 3, 29, 1, 30)


def test_earliest_start_and_expiry() -> None:
    s = Schedule(run_interval=timedelta(hours=1), earliest_start_at=utc(2026, 12, 1),
                 expires_at=utc(2026, 12, 2))
    assert schedule.next_run_after(s, utc(2026, 11, 25), utc(2026, 11, 25)) == utc(2026, 12, 1)
    assert schedule.next_run_after(s, utc(2026, 12, 1, 23), utc(2026, 12, 1, 23)) is None
    decision = schedule.when_due(entry(schedule=s), utc(2026, 12, 2), utc(2026, 12, 2, 0, 1))
    assert decision is not None and decision.status is EntryStatus.FINISHED


def test_failure_with_attempts_left_retries_after_delay_and_growing_backoff() -> None:
    e = entry(retry=RetryPolicy(max_attempts=3, rerun_delay=timedelta(seconds=30)))
    now = utc(2026, 11, 25, 12)
    first = schedule.after_failure(e, now, "boom")
    assert (first.status, first.attempts, first.last_error) == (EntryStatus.READY, 1, "boom")
    assert first.next_run_at == now + timedelta(seconds=31)
    second = schedule.after_failure(replace(e, attempts=1), now, "boom")
    assert second.next_run_at == now + timedelta(seconds=32)
    last = schedule.after_failure(replace(e, attempts=2), now, "boom")
    assert (last.status, last.next_run_at, last.attempts) == (EntryStatus.ERROR, None, 3)


def test_a_failed_run_that_confirmed_records_is_not_a_failure_in_a_row() -> None:
    """It ends the row of failures: attempts start again, no backoff, only the rerun
    delay, even when the attempts before it had nearly reached max_attempts."""
    e = entry(retry=RetryPolicy(max_attempts=3, rerun_delay=timedelta(seconds=30)),
              attempts=2)
    now = utc(2026, 11, 25, 12)
    progressed = schedule.after_failure(e, now, "boom", confirmed=160)
    assert (progressed.status, progressed.attempts, progressed.last_error) == (
        EntryStatus.READY, 0, "boom")
    assert progressed.next_run_at == now + timedelta(seconds=30)
    nothing = schedule.after_failure(replace(e, attempts=0), now, "boom", confirmed=0)
    assert (nothing.attempts, nothing.next_run_at) == (1, now + timedelta(seconds=31))


def test_success_resets_attempts() -> None:
    s = Schedule(run_interval=timedelta(minutes=5))
    decision = schedule.after_success(entry(schedule=s, attempts=4), utc(2026, 1, 1),
                                      utc(2026, 1, 1, 0, 1), changed=True)
    assert (decision.status, decision.attempts, decision.last_error) == (EntryStatus.READY, 0, None)


def test_a_sync_that_changed_nothing_goes_on_hold_for_the_inactivity_timeout() -> None:
    e = entry(schedule=Schedule(run_interval=timedelta(minutes=5)),
              inactivity_timeout=timedelta(hours=12))
    now = utc(2026, 11, 25, 12)
    idle = schedule.after_success(e, now, now, changed=False)
    assert idle.status is EntryStatus.ON_HOLD_INACTIVITY
    assert idle.next_run_at == now + timedelta(hours=12)
    busy = schedule.after_success(e, now, now, changed=True)
    assert busy.status is EntryStatus.READY and busy.next_run_at == now + timedelta(minutes=5)


def test_a_non_recurring_entry_finishes() -> None:
    e = entry(schedule=Schedule(recurring=False))
    decision = schedule.after_success(e, utc(2026, 1, 1), utc(2026, 1, 1), None)
    assert decision.status is EntryStatus.FINISHED


def test_backoff_grows_and_is_capped() -> None:
    assert [schedule.backoff(n).total_seconds() for n in range(1, 5)] == [1, 2, 4, 8]
    assert schedule.backoff(40) == timedelta(hours=1)


# -- properties ------------------------------------------------------------------------

ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                         "Asia/Kolkata", "America/Sao_Paulo"])
CLOCK = st.times().map(lambda t: t.replace(second=0, microsecond=0))
INSTANT = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC))
SCHEDULES = st.builds(
    Schedule,
    run_interval=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=3)),
    run_on_weekdays=st.frozensets(st.integers(1, 7), min_size=1),
    starting_time=st.none() | CLOCK,
    ending_time=st.none() | CLOCK,
    time_zone=ZONES,
).filter(lambda s: s.starting_time is None or s.starting_time != s.ending_time)


def _wall_allowed(s: Schedule, at: datetime) -> bool:
    """The rule stated on wall-clock time, independent of the implementation."""
    local = at.astimezone(ZoneInfo(s.time_zone))
    if local.isoweekday() not in s.run_on_weekdays:
        return False
    start, end, clock = s.starting_time or time(0), s.ending_time, local.time()
    if end is None:
        return clock >= start
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


@settings(max_examples=400, deadline=None)
@given(SCHEDULES, INSTANT)
def test_next_allowed_is_allowed_and_not_earlier(s: Schedule, at: datetime) -> None:
    got = schedule.next_allowed(s, at)
    assert got >= at
    assert got - at <= timedelta(days=8)
    assert schedule.is_allowed(s, got)
    # Away from the hour around a DST change, the result agrees with the wall-clock rule.
    tz = ZoneInfo(s.time_zone)
    if all((got + d).astimezone(tz).utcoffset() == got.astimezone(tz).utcoffset()
           for d in (timedelta(hours=-2), timedelta(hours=2))):
        assert _wall_allowed(s, got)


@settings(max_examples=300, deadline=None)
@given(SCHEDULES, INSTANT, st.floats(0, 1))
def test_no_allowed_instant_is_skipped(s: Schedule, at: datetime, fraction: float) -> None:
    got = schedule.next_allowed(s, at)
    between = at + (got - at) * fraction
    assert schedule.next_allowed(s, between) == got


@settings(max_examples=300, deadline=None)
@given(SCHEDULES, INSTANT, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)))
def test_next_run_is_in_the_future_and_allowed(s: Schedule, scheduled: datetime,
                                                late: timedelta) -> None:
    now = scheduled + late
    nxt = schedule.next_run_after(s, scheduled, now)
    assert nxt is not None
    assert nxt > now
    assert schedule.is_allowed(s, nxt)
    # Coalescing: at most one slot of the grid lies between now and the next run
    # (before the window/weekday adjustment), so downtime never produces a storm.
    assert s.run_interval is not None
    if s.run_interval < timedelta(days=1):
        grid = scheduled + ((now - scheduled) // s.run_interval + 1) * s.run_interval
        assert nxt >= grid


@settings(max_examples=300, deadline=None)
@given(SCHEDULES, INSTANT, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)))
def test_a_rescheduled_entry_runs_at_once_or_one_interval_after_its_last_run(
    s: Schedule, last: datetime, since: timedelta,
) -> None:
    now = last + since
    nxt = schedule.rescheduled(s, last, None, now)
    assert nxt is not None and nxt >= now
    assert schedule.is_allowed(s, nxt)
    assert s.run_interval is not None
    due = max(last + s.run_interval, now)
    if s.run_interval < timedelta(days=1):  # whole days are added in wall-clock time
        assert nxt == schedule.next_allowed(s, due)


def test_a_rescheduled_entry_that_never_ran_keeps_its_planned_first_run() -> None:
    s = Schedule(run_interval=timedelta(minutes=5))
    now = utc(2026, 11, 26, 9, 0)
    assert schedule.rescheduled(s, None, utc(2026, 11, 26, 12, 0), now) == utc(2026, 11, 26, 12)
    assert schedule.rescheduled(s, None, utc(2026, 11, 26, 8, 0), now) == now


def test_date_arithmetic_past_year_9999_names_the_column() -> None:
    late = entry(schedule=Schedule(run_interval=timedelta(days=3_000_000)))
    with pytest.raises(JobError) as caught:
        schedule.after_success(late, utc(2026, 11, 26, 9), utc(2026, 11, 26, 9), None)
    assert str(caught.value) == "run_interval: 3000000 days takes the next run beyond the year 9999"


# Every value revision 0004 lets into the table: the rules never raise on them.
BOUNDED_INSTANT = st.datetimes(min_value=datetime(1970, 1, 1),
                               max_value=datetime(2999, 12, 31, 23, 59)).map(
    lambda d: d.replace(tzinfo=UTC))
BOUNDED_INTERVAL = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=366))
BOUNDED_ENTRIES = st.builds(
    lambda s, start, expiry, inactivity, delay, max_attempts, attempts: entry(
        schedule=replace(s, earliest_start_at=start, expires_at=expiry),
        inactivity_timeout=inactivity, attempts=min(attempts, max_attempts),
        retry=RetryPolicy(max_attempts=max_attempts, rerun_delay=delay)),
    SCHEDULES.flatmap(lambda s: BOUNDED_INTERVAL.map(lambda i: replace(s, run_interval=i))),
    st.none() | BOUNDED_INSTANT, st.none() | BOUNDED_INSTANT, st.none() | BOUNDED_INTERVAL,
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=1)),
    st.integers(1, 100), st.integers(0, 100),
)


@settings(max_examples=300, deadline=None)
@given(BOUNDED_ENTRIES, BOUNDED_INSTANT, BOUNDED_INSTANT, st.none() | st.booleans())
def test_the_rules_never_raise_on_values_the_database_accepts(
    e: JobQueueEntry, scheduled: datetime, now: datetime, changed: bool | None,
) -> None:
    for decision in (schedule.after_success(e, scheduled, now, changed),
                     schedule.after_failure(e, now, "failed"),
                     schedule.after_failure(e, now, "failed", confirmed=1),
                     schedule.when_due(e, scheduled, now)):
        if decision is not None and decision.next_run_at is not None:
            assert decision.next_run_at.year <= 3001
        if decision is not None:
            assert 0 <= decision.attempts <= e.retry.max_attempts
    schedule.rescheduled(e.schedule, scheduled, now, now)
