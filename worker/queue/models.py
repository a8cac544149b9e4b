"""Job queue rows as frozen dataclasses (their statuses and kinds are the ground floor's,
``worker.vocabulary``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

# The job queue's vocabularies are the ground floor's; named here too, beside its rows.
from worker.vocabulary import EntryStatus as EntryStatus
from worker.vocabulary import JobKind as JobKind
from worker.vocabulary import RunStatus as RunStatus


@dataclass(frozen=True)
class Schedule:
    """The scheduling fields of an entry: everything the pure next-run rules need."""

    recurring: bool = True
    run_interval: timedelta | None = timedelta(minutes=30)
    run_on_weekdays: frozenset[int] = frozenset(range(1, 8))
    starting_time: time | None = None
    ending_time: time | None = None
    time_zone: str = "UTC"
    earliest_start_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """NAV's "Maximum No. of Attempts to Run" and "Rerun Delay"."""

    max_attempts: int = 10
    rerun_delay: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class JobQueueEntry:
    """One row of ``crmsync.job_queue_entries``."""

    id: int
    description: str
    job_kind: JobKind
    mapping_name: str | None
    parameters: Mapping[str, Any]
    status: EntryStatus
    schedule: Schedule
    retry: RetryPolicy
    attempts: int
    inactivity_timeout: timedelta | None
    category_code: str | None
    priority: int
    job_timeout: timedelta
    next_run_at: datetime | None
    last_error: str | None = None
    locked_by: str | None = None
    lease_expires_at: datetime | None = None
    scheduled_for: datetime | None = None
    current_log_id: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobQueueEntry:
        return cls(
            id=row["id"],
            description=row["description"],
            job_kind=JobKind(row["job_kind"]),
            mapping_name=row["mapping_name"],
            parameters=row["parameters"] or {},
            status=EntryStatus(row["status"]),
            schedule=Schedule(
                recurring=row["recurring"],
                run_interval=row["run_interval"],
                run_on_weekdays=frozenset(row["run_on_weekdays"]),
                starting_time=row["starting_time"],
                ending_time=row["ending_time"],
                time_zone=row["time_zone"],
                earliest_start_at=row["earliest_start_at"],
                expires_at=row["expires_at"],
            ),
            retry=RetryPolicy(max_attempts=row["max_attempts"], rerun_delay=row["rerun_delay"]),
            attempts=row["attempts"],
            inactivity_timeout=row["inactivity_timeout"],
            category_code=row["category_code"],
            priority=row["priority"],
            job_timeout=row["job_timeout"],
            next_run_at=row["next_run_at"],
            last_error=row["last_error"],
            locked_by=row["locked_by"],
            lease_expires_at=row["lease_expires_at"],
            scheduled_for=row["scheduled_for"],
            current_log_id=row["current_log_id"],
        )

    @property
    def label(self) -> str:
        """How logs and messages name this entry."""
        target = f" {self.mapping_name}" if self.mapping_name else ""
        return f"#{self.id} {self.job_kind}{target}"
