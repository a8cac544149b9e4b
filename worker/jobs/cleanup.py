"""The 'cleanup' job kind: deletes finished log rows older than ``parameters.days`` (30)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from worker.errors import JobError
from worker.jobs import RunContext, RunResult
from worker.queue.manager import QueueManager

# Other modules (the sync engine's job log) add their own deleters here.
EXTRA_CLEANERS: list = []


def cleanup(ctx: RunContext) -> RunResult:
    days = ctx.entry.parameters.get("days", 30)
    if not isinstance(days, int | float) or isinstance(days, bool) or days < 0:
        raise JobError(f"parameters.days: expected a number of days >= 0, got {days!r}")
    with ctx.engine.begin() as conn:
        cutoff = conn.scalar(sa.text("SELECT now()")) - timedelta(days=days)
        deleted = QueueManager(ctx.engine).delete_log_entries_before(conn, cutoff)
        extra = [cleaner(conn, cutoff) for cleaner in EXTRA_CLEANERS]
    parts = [f"{deleted} log entries"] + [str(e) for e in extra]
    return RunResult(message=f"deleted {', '.join(parts)} older than {days} days")
