"""The scheduling rules of a job queue entry, as pure functions (NAV semantics).

All instants are timezone-aware UTC datetimes; the entry's time zone is used only to decide
weekdays and the daily time window. Intervals that are whole days are added in wall-clock time
(a daily 08:00 run stays at 08:00 across DST); shorter intervals are absolute durations, so a
30-minute entry runs every 30 real minutes, also on the night the clocks change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.errors import JobError
from worker.queue.models import EntryStatus, JobQueueEntry, Schedule

MAX_BACKOFF = timedelta(hours=1)
MAX_ATTEMPTS = 100  # the database's bound on max_attempts (revision 0004)
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Decision:
    """What an entry becomes after a run (or after being found expired)."""

    status: EntryStatus
    next_run_at: datetime | None
    attempts: int
    last_error: str | None


def zone(schedule: Schedule) -> ZoneInfo:
    try:
        return ZoneInfo(schedule.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise JobError(f"time_zone: unknown time zone {schedule.time_zone!r}") from exc


def next_allowed(schedule: Schedule, at: datetime) -> datetime:
    """The earliest instant >= ``at`` on an allowed weekday and inside the time window."""
    tz = zone(schedule)
    first_day = at.astimezone(tz).date() - _DAY  # a window crossing midnight starts the day before
    for offset in range(0, 10):
        day = first_day + timedelta(days=offset)
        for start, end in _allowed_intervals(schedule, day, tz):
            if end > at:
                return max(start, at)
    raise JobError(f"run_on_weekdays: no allowed day in {sorted(schedule.run_on_weekdays)}")


def is_allowed(schedule: Schedule, at: datetime) -> bool:
    return next_allowed(schedule, at) == at


def _allowed_intervals(
    schedule: Schedule, day: date, tz: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """The UTC intervals of local ``day`` in which the entry may start, in order.

    A window crossing midnight (22:00-06:00) allows both the morning part and the evening
    part of every allowed weekday; the weekday is that of the local date of the run."""
    if day.isoweekday() not in schedule.run_on_weekdays:
        return
    start = schedule.starting_time or time(0)
    end = schedule.ending_time  # None: until midnight
    midnight, next_midnight = _at(day, time(0), tz), _at(day + _DAY, time(0), tz)
    if end is None or start < end:
        pieces = [(_at(day, start, tz), _at(day, end, tz) if end else next_midnight)]
    else:
        pieces = [(midnight, _at(day, end, tz)), (_at(day, start, tz), next_midnight)]
    for a, b in pieces:
        if b > a:
            yield a, b


def _at(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """Local wall time to UTC. A time that does not exist (spring-forward gap) maps to the
    instant the same distance after the gap; an ambiguous one to its first occurrence."""
    return datetime.combine(day, clock, tzinfo=tz).astimezone(UTC)


def _is_whole_days(interval: timedelta) -> bool:
    return interval >= _DAY and interval % _DAY == timedelta(0)


def _add(start: datetime, interval: timedelta, times: int, tz: ZoneInfo) -> datetime:
    if _is_whole_days(interval):
        local = start.astimezone(tz).replace(tzinfo=None) + interval * times
        return local.replace(tzinfo=tz).astimezone(UTC)
    return start + interval * times


def next_run_after(schedule: Schedule, scheduled_for: datetime, now: datetime) -> datetime | None:
    """The next run of a recurring entry whose last occurrence was ``scheduled_for``; None when
    there is none (not recurring, or expired).

    Slots stay on the grid ``scheduled_for + k * interval`` (no drift); slots missed while no
    worker ran coalesce into the first slot after ``now``."""
    if not schedule.recurring or schedule.run_interval is None:
        return None
    tz = zone(schedule)
    interval = schedule.run_interval
    if interval <= timedelta(0):
        raise JobError(f"run_interval: {interval} is not positive")
    with _overflow_names("run_interval", interval):
        candidate = _add(scheduled_for, interval, 1, tz)
        if candidate <= now:
            missed = (now - scheduled_for) // interval
            candidate = _add(scheduled_for, interval, missed + 1, tz)
            while candidate <= now:  # wall-clock days can be 23 h long
                missed += 1
                candidate = _add(scheduled_for, interval, missed + 1, tz)
    return _bounded(schedule, candidate)


def rescheduled(
    schedule: Schedule, last_scheduled_for: datetime | None, planned: datetime | None,
    now: datetime,
) -> datetime | None:
    """The next run after a user changed the schedule (or restarted the entry): one interval
    after the last run, or at once when that is past; an entry that never ran keeps its
    planned first run. Then into the weekdays, window, earliest start; None when expired."""
    if last_scheduled_for is None or not schedule.recurring or schedule.run_interval is None:
        candidate = max(planned or now, now)
    else:
        with _overflow_names("run_interval", schedule.run_interval):
            candidate = max(_add(last_scheduled_for, schedule.run_interval, 1,
                                 zone(schedule)), now)
    return _bounded(schedule, candidate)


@contextmanager
def _overflow_names(column: str, value: object) -> Iterator[None]:
    """Date arithmetic past year 9999 becomes a JobError naming the column at fault."""
    try:
        yield
    except (OverflowError, ValueError) as exc:
        if isinstance(value, timedelta) and value % _DAY == timedelta(0):
            value = f"{value.days} days"
        raise JobError(f"{column}: {value} takes the next run beyond the year 9999") from exc


def _bounded(schedule: Schedule, candidate: datetime) -> datetime | None:
    if schedule.earliest_start_at is not None and candidate < schedule.earliest_start_at:
        candidate = schedule.earliest_start_at
    candidate = next_allowed(schedule, candidate)
    if schedule.expires_at is not None and candidate >= schedule.expires_at:
        return None
    return candidate


def is_expired(schedule: Schedule, now: datetime) -> bool:
    return schedule.expires_at is not None and now >= schedule.expires_at


def backoff(attempts: int) -> timedelta:
    """Extra delay after the ``attempts``-th failure in a row: 1 s, 2 s, 4 s, ... up to 1 h."""
    if attempts <= 0:
        return timedelta(0)
    return min(timedelta(seconds=2 ** min(attempts - 1, 20)), MAX_BACKOFF)


def after_success(
    entry: JobQueueEntry, scheduled_for: datetime, now: datetime, changed: bool | None
) -> Decision:
    """A run finished. ``changed`` is False when a sync changed nothing (inactivity rule),
    None when the job kind does not report it."""
    following = next_run_after(entry.schedule, scheduled_for, now)
    if following is None:
        return Decision(EntryStatus.FINISHED, None, 0, None)
    if changed is False and entry.inactivity_timeout is not None:
        with _overflow_names("inactivity_timeout", entry.inactivity_timeout):
            wake = _bounded(entry.schedule, now + entry.inactivity_timeout)
        if wake is None:
            return Decision(EntryStatus.FINISHED, None, 0, None)
        return Decision(EntryStatus.ON_HOLD_INACTIVITY, max(wake, following), 0, None)
    return Decision(EntryStatus.READY, following, 0, None)


def after_failure(
    entry: JobQueueEntry, now: datetime, error: str, confirmed: int = 0
) -> Decision:
    """A run failed. Only runs in a row that confirmed nothing count as attempts (toward
    the backoff and max_attempts): a run that failed after the other side confirmed
    ``confirmed`` records made progress, so it ends the row of failures and its entry is
    due again after the rerun delay alone."""
    if confirmed > 0:
        with _overflow_names("rerun_delay", entry.retry.rerun_delay):
            retry_at = _bounded(entry.schedule, now + entry.retry.rerun_delay)
        if retry_at is None:
            return Decision(EntryStatus.FINISHED, None, 0, error)
        return Decision(EntryStatus.READY, retry_at, 0, error)
    attempts = min(entry.attempts + 1, entry.retry.max_attempts, MAX_ATTEMPTS)
    if attempts >= min(entry.retry.max_attempts, MAX_ATTEMPTS):
        return Decision(EntryStatus.ERROR, None, attempts, error)
    with _overflow_names("rerun_delay", entry.retry.rerun_delay):
        retry_at = _bounded(entry.schedule, now + entry.retry.rerun_delay + backoff(attempts))
    if retry_at is None:
        return Decision(EntryStatus.FINISHED, None, attempts, error)
    return Decision(EntryStatus.READY, retry_at, attempts, error)


def when_due(entry: JobQueueEntry, scheduled_for: datetime, now: datetime) -> Decision | None:
    """Checked at claim time: None when the entry may run now; otherwise what it becomes
    instead (expired → finished; outside its weekdays or window → moved into them)."""
    if is_expired(entry.schedule, now):
        return Decision(EntryStatus.FINISHED, None, entry.attempts, entry.last_error)
    allowed_at = next_allowed(entry.schedule, now)
    if allowed_at != now:
        moved = _bounded(entry.schedule, allowed_at)
        status = entry.status if moved is not None else EntryStatus.FINISHED
        if status is EntryStatus.WAITING:
            status = EntryStatus.READY
        return Decision(status, moved, entry.attempts, entry.last_error)
    return None
