"""The 'cleanup' job kind: deletes finished job queue log rows and sync jobs (with their
errors) older than ``parameters.days`` (default 30, NAV's one month). Sync jobs that a
skipped coupling still points at are kept: they explain the skip."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from worker.errors import JobError
from worker.jobs import RunContext, RunResult
from worker.queue.manager import QueueManager
from worker.sync import joblog

MAX_DAYS = 36500  # a century: any longer keeps everything, and date arithmetic stays finite


def cleanup(ctx: RunContext) -> RunResult:
    days = ctx.entry.parameters.get("days", 30)
    if (not isinstance(days, int | float) or isinstance(days, bool)
            or not 0 <= days <= MAX_DAYS):
        raise JobError(f"parameters.days: expected a number of days from 0 to {MAX_DAYS}, "
                       f"got {days!r}")
    with ctx.engine.begin() as conn:
        cutoff = conn.scalar(sa.text("SELECT now()")) - timedelta(days=days)
        sync_jobs = joblog.delete_older_than(conn, cutoff)
        log_entries = QueueManager(ctx.engine).delete_log_entries_before(conn, cutoff)
    return RunResult(message=f"deleted {log_entries} log entries and {sync_jobs} "
                             f"older than {days} days")
