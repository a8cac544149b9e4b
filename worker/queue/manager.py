"""The worker's side of the job queue tables (entries, log entries, workers): claim (in
claims.py), finish, release, rescue, reschedule after an edit, heartbeat. The longer
statements are in queries.py; an entry that cannot be read or scheduled is put in 'error'
alone (rows.py)."""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.errors import DatabaseUnavailable
from worker.queue import queries, rows, schedule
from worker.queue.claims import Claim, Claimed, Claimer
from worker.queue.models import EntryStatus, JobQueueEntry, RunStatus
from worker.queue.wake import wake

__all__ = ["Claim", "Claimed", "Outcome", "QueueManager", "Rescued"]

log = logging.getLogger(__name__)

# A run rescued this often (its workers died each time) is a poison job, not bad luck.
RESCUES_BEFORE_ERROR = 3


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as the handler reported it."""

    status: RunStatus
    message: str = ""
    changed: bool | None = None
    error: str | None = None
    traceback: str | None = None

    @classmethod
    def success(cls, message: str = "", changed: bool | None = None) -> Outcome:
        return cls(RunStatus.SUCCESS, message=message, changed=changed)

    def printable(self) -> Outcome:
        """PostgreSQL text cannot hold NUL: a handler's message with one is still stored."""
        def clean(text: str | None) -> str | None:
            return text.replace("\x00", "\\0") if text else text

        return replace(self, message=clean(self.message) or "", error=clean(self.error),
                       traceback=clean(self.traceback))

    @classmethod
    def failure(cls, exc: BaseException) -> Outcome:
        text = str(exc) or type(exc).__name__
        return cls(
            RunStatus.ERROR,
            error=text,
            traceback="".join(tb.format_exception(exc)),
        )


@dataclass(frozen=True)
class Rescued:
    entry_id: int
    worker_id: str | None
    log_id: int | None


class QueueManager:
    """The job queue's database seam: claim, finish, release, rescue, heartbeat."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._claimer = Claimer(engine)

    # -- claiming -----------------------------------------------------------------------
    def claim(self, worker_id: str, lease: timedelta, slots: int) -> list[Claim]:
        """Claim up to ``slots`` runnable due entries (see claims.Claimer.claim); entries
        whose schedule was edited are not claimed before reschedule() recomputed them."""
        return self._claimer.claim(worker_id, lease, slots).claims

    def claim_due(self, worker_id: str, lease: timedelta, slots: int) -> Claimed:
        """A worker's dispatch: schedules a user edited are recomputed (when the claim saw
        any), then up to ``slots`` runs claimed; with the next due time for its timer."""
        found = self._claimer.claim(worker_id, lease, slots)
        if not found.edited:
            return found
        self.reschedule()
        more = self._claimer.claim(worker_id, lease, slots - len(found.claims))
        due = [d for d in (found.next_due, more.next_due) if d is not None]
        return Claimed(found.claims + more.claims, False, min(due) if due else None)

    def claim_next(self, worker_id: str, lease: timedelta) -> Claim | None:
        """Claim the first runnable due entry, or return None."""
        claims = self.claim(worker_id, lease, 1)
        return claims[0] if claims else None

    def pull_forward(self, tables: Sequence[str], delay: timedelta) -> int:
        """A mapped local table changed: its sync entries run within ``delay``
        (``wake.wake``'s rule)."""
        with translate_errors(), self.engine.begin() as conn:
            return len(wake(conn, delay, tables=tables))

    def nothing_to_do(self) -> tuple[bool, datetime | None]:
        """One cheap statement for a wake-up with no news: (True, earliest due time) when
        no entry is due and no schedule was edited; (False, None) otherwise."""
        with translate_errors(), self.engine.connect() as conn:
            # Two index probes (the due index, the edited schedules' index), not a scan.
            row = conn.execute(sa.text(
                "SELECT (SELECT min(next_run_at) FROM crmsync.job_queue_entries "
                "         WHERE status IN ('ready', 'waiting', 'on_hold_inactivity')), "
                "       EXISTS (SELECT 1 FROM crmsync.job_queue_entries "
                "                WHERE schedule_changed), clock_timestamp()")).one()
        due, flagged, now = row
        if flagged or (due is not None and due <= now):
            return False, None
        return True, due

    # -- finishing ----------------------------------------------------------------------
    def finish(self, claim: Claim, worker_id: str, outcome: Outcome) -> bool:
        """Record a run's outcome and schedule the entry's next run. Returns False when the
        lease was lost meanwhile (another worker rescued the entry); the log row is then
        left as the rescuer wrote it. When the next run cannot be computed or stored, the
        run is still recorded and the entry goes to 'error' with a message naming it."""
        outcome = outcome.printable()
        try:
            with translate_errors(), self.engine.begin() as conn:
                return self._finish(conn, [(claim, outcome)], worker_id)[0]
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            column = None
            if isinstance(exc.__cause__, sa_exc.DataError):  # a value the driver cannot load
                with translate_errors(), self.engine.connect() as conn:
                    column = rows.unreadable_column(conn, claim.entry.id)
            message = rows.describe(claim.entry.id, "could not be rescheduled", exc, column)
            if outcome.error:
                message += f" (the run failed: {outcome.error})"
            with translate_errors(), self.engine.begin() as conn:
                conn.execute(queries.FINISH_LOG, {
                    "log_id": claim.log_id, "status": outcome.status.value,
                    "now": rows.db_now(conn),
                    "message": outcome.message or None, "error": message, "traceback": None})
                conn.execute(queries.PUT_IN_ERROR_IF_OWNED, {
                    "id": claim.entry.id, "w": worker_id, "log": claim.log_id,
                    "message": message})
            log.error("run recorded, entry put in error",
                      extra={"entry": claim.entry.id, "error": message})
            return True

    def finish_many(self, finished: Sequence[tuple[Claim, Outcome]], worker_id: str) -> None:
        """Record several outcomes in one transaction of two statements, each run's log row
        with its entry's next run. When the batch cannot be written, each run is recorded
        alone (finish): a row that cannot be scheduled stops only its own run."""
        if len(finished) > 1:
            try:
                with translate_errors(), self.engine.begin() as conn:
                    self._finish(conn, [(c, o.printable()) for c, o in finished], worker_id)
                return
            except DatabaseUnavailable:
                raise
            except Exception:
                log.info("outcomes recorded one by one", extra={"runs": len(finished)})
        for claim, outcome in finished:
            self.finish(claim, worker_id, outcome)

    def _finish(
        self, conn: Connection, finished: Sequence[tuple[Claim, Outcome]], worker_id: str
    ) -> list[bool]:
        owned = {row["id"]: row for row in conn.execute(queries.OWNED_RUNS, {
            "ids": [c.entry.id for c, _ in finished], "w": worker_id,
            "logs": [c.log_id for c, _ in finished]}).mappings()}
        now = next(iter(owned.values()))["finishing_at"] if owned else rows.db_now(conn)
        recorded: list[tuple[Claim, Outcome, schedule.Decision]] = []
        for claim, outcome in finished:
            row = owned.get(claim.entry.id)
            if row is None or row["current_log_id"] != claim.log_id:
                self._lease_lost(conn, claim, outcome, now)
            else:
                recorded.append((claim, outcome, _decide(row, claim, outcome, now)))
        if recorded:
            conn.execute(queries.RECORD_RUNS, _record_params(recorded, now))
        done = {c.log_id for c, _, _ in recorded}
        return [c.log_id in done for c, _ in finished]

    @staticmethod
    def _lease_lost(conn: Connection, claim: Claim, outcome: Outcome, now: datetime) -> None:
        """Another worker rescued the entry: the log row is left as the rescuer wrote it."""
        finished = conn.execute(queries.FINISH_LOG, {
            "log_id": claim.log_id, "status": outcome.status.value, "now": now,
            "message": outcome.message or None, "error": outcome.error,
            "traceback": outcome.traceback}).rowcount
        if not finished:
            log.warning("run outcome arrived after the lease was lost",
                        extra={"entry": claim.entry.id, "log_id": claim.log_id})

    def release(self, claim: Claim, worker_id: str, reason: str) -> None:
        """Give an unfinished run back (worker shutdown): the log row says 'abandoned' and
        the same occurrence is due again at once, for any worker."""
        with translate_errors(), self.engine.begin() as conn:
            now = conn.scalar(sa.text("SELECT clock_timestamp()"))
            conn.execute(queries.FINISH_LOG, {
                "log_id": claim.log_id, "status": RunStatus.ABANDONED.value, "now": now,
                "message": None, "error": reason, "traceback": None,
            })
            conn.execute(sa.text(
                """
                UPDATE crmsync.job_queue_entries
                   SET status = CASE WHEN status = 'in_process' THEN 'ready' ELSE status END,
                       next_run_at = CASE WHEN status = 'in_process' THEN scheduled_for
                                          ELSE next_run_at END,
                       locked_by = NULL, lease_expires_at = NULL, running_since = NULL,
                       scheduled_for = NULL, current_log_id = NULL
                 WHERE id = :id AND locked_by = :w AND current_log_id = :log
                """), {"id": claim.entry.id, "w": worker_id, "log": claim.log_id})

    # -- liveness -----------------------------------------------------------------------
    def heartbeat(
        self, worker_id: str, info: dict[str, Any], lease: timedelta, log_ids: Sequence[int]
    ) -> None:
        """Prove this worker is alive and extend the leases of the runs it still holds."""
        with translate_errors(), self.engine.begin() as conn:
            conn.execute(sa.text(
                """
                INSERT INTO crmsync.workers (id, hostname, pid, version, concurrency)
                VALUES (:id, :hostname, :pid, :version, :concurrency)
                ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
                """), {"id": worker_id, **info})
            if log_ids:
                # Rows locked in id order, as finish_many locks them: never a deadlock.
                conn.execute(sa.text(
                    "UPDATE crmsync.job_queue_entries SET lease_expires_at = now() + :lease "
                    "WHERE id IN (SELECT id FROM crmsync.job_queue_entries "
                    "             WHERE locked_by = :w AND current_log_id = ANY(:logs) "
                    "             ORDER BY id FOR UPDATE)"),
                    {"lease": lease, "w": worker_id, "logs": list(log_ids)})

    def ping(self) -> bool:
        """Whether the database answers now."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def unregister(self, worker_id: str) -> None:
        with translate_errors(), self.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM crmsync.workers WHERE id = :id"), {"id": worker_id})

    def rescue_abandoned(self, forget_workers_after: timedelta) -> list[Rescued]:
        """Runs whose lease expired, or whose worker is not registered, belong to a dead
        worker: their log rows become 'abandoned' and the entry is due again at once for the
        same occurrence. It is the worker that failed, not the job: no attempt is counted;
        only an occurrence rescued RESCUES_BEFORE_ERROR times puts the entry in 'error'.
        Workers silent for ``forget_workers_after`` are removed from the registry."""
        rescued: list[Rescued] = []
        with translate_errors(), self.engine.begin() as conn:
            now = rows.db_now(conn)
            for row in conn.execute(queries.ORPHANED_RUNS, {"now": now}).all():
                self._rescue_one(conn, row, now)
                rescued.append(Rescued(row.id, row.locked_by, row.current_log_id))
            conn.execute(sa.text(
                "DELETE FROM crmsync.workers WHERE heartbeat_at < :now - :after"),
                {"now": now, "after": forget_workers_after})
        return rescued

    @staticmethod
    def _rescue_one(conn: Connection, row: sa.Row[Any], now: datetime) -> None:
        reason = f"abandoned: worker {row.locked_by} stopped renewing its lease"
        conn.execute(queries.FINISH_LOG, {
            "log_id": row.current_log_id, "status": RunStatus.ABANDONED.value,
            "now": now, "message": None, "error": reason, "traceback": None,
        })
        rescues = conn.scalar(queries.RESCUES_OF_OCCURRENCE, {
            "id": row.id, "scheduled_for": row.scheduled_for}) if row.scheduled_for else 0
        if row.status == EntryStatus.IN_PROCESS.value and rescues >= RESCUES_BEFORE_ERROR:
            conn.execute(queries.PUT_IN_ERROR, {"id": row.id, "message": (
                f"entry #{row.id}: its run was abandoned {rescues} times (each worker running "
                "it died or stopped renewing its lease); restart the entry when the cause is "
                "fixed")})
        else:
            conn.execute(queries.GIVE_BACK, {"id": row.id, "reason": reason})

    # -- schedule edits -----------------------------------------------------------------
    def reschedule(self, ids: Sequence[int] | None = None) -> int:
        """Recompute next_run_at of the entries whose schedule a user changed (flagged by
        the table's trigger), by the rules, from their last run. Running entries keep the
        flag: their outcome is scheduled by the new rules anyway. Returns how many."""
        with translate_errors(), self.engine.begin() as conn:
            now = rows.db_now(conn)
            params = {"ids": list(ids) if ids is not None else None}
            done = 0
            for row in rows.readable_rows(conn, queries.FLAGGED, params):
                try:
                    with conn.begin_nested():
                        self._reschedule_one(conn, row, now)
                        done += 1
                except Exception as exc:
                    rows.reraise_if_unavailable(exc)
                    rows.mark_broken(conn, row["id"], "could not be rescheduled", exc)
            return done

    def _reschedule_one(self, conn: Connection, row: sa.RowMapping, now: datetime) -> None:
        entry = JobQueueEntry.from_row(row)
        status, following = entry.status, entry.next_run_at
        if status in (EntryStatus.READY, EntryStatus.WAITING, EntryStatus.ON_HOLD_INACTIVITY):
            following = schedule.rescheduled(
                entry.schedule, row["last_scheduled_for"], entry.next_run_at, now)
            if following is None:
                status = EntryStatus.FINISHED
        conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET status = :status, next_run_at = :next, "
            "schedule_changed = false WHERE id = :id"),
            {"id": entry.id, "status": status.value, "next": following})

    # -- reading and housekeeping ------------------------------------------------------
    def list_entries(self) -> list[dict[str, Any]]:
        with translate_errors(), self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(
                """
                SELECT e.*, l.status AS last_run_status, l.started_at AS last_run_at,
                       l.finished_at AS last_run_finished_at
                  FROM crmsync.job_queue_entries e
                  LEFT JOIN LATERAL (
                       SELECT status, started_at, finished_at
                         FROM crmsync.job_queue_log_entries
                        WHERE entry_id = e.id ORDER BY started_at DESC LIMIT 1) l ON true
                 ORDER BY e.priority, e.id
                """)).mappings()]

    def delete_log_entries_before(self, conn: Connection, cutoff: datetime) -> int:
        return conn.execute(sa.text(
            "DELETE FROM crmsync.job_queue_log_entries "
            "WHERE finished_at IS NOT NULL AND finished_at < :cutoff"),
            {"cutoff": cutoff}).rowcount


def _decide(row: sa.RowMapping, claim: Claim, outcome: Outcome, now: datetime
            ) -> schedule.Decision:
    """The entry's next run after this outcome, by the scheduling rules."""
    current = JobQueueEntry.from_row(row)
    if current.status is not EntryStatus.IN_PROCESS:
        # A user changed the status (e.g. on_hold) while the run went on: keep it.
        return schedule.Decision(
            current.status, current.next_run_at, current.attempts, outcome.error)
    if outcome.status is RunStatus.SUCCESS:
        return schedule.after_success(current, claim.scheduled_for, now, outcome.changed)
    confirmed = row["confirmed"] if outcome.status is RunStatus.ERROR else 0
    return schedule.after_failure(current, now, outcome.error or "failed", confirmed)


def _record_params(
    recorded: Sequence[tuple[Claim, Outcome, schedule.Decision]], now: datetime
) -> dict[str, Any]:
    return {
        "now": now, "ids": [c.entry.id for c, _, _ in recorded],
        "logs": [c.log_id for c, _, _ in recorded],
        "run_statuses": [o.status.value for _, o, _ in recorded],
        "messages": [o.message or None for _, o, _ in recorded],
        "errors": [o.error for _, o, _ in recorded],
        "tracebacks": [o.traceback for _, o, _ in recorded],
        "statuses": [d.status.value for _, _, d in recorded],
        "next_runs": [d.next_run_at for _, _, d in recorded],
        "attempts": [d.attempts for _, _, d in recorded],
        "last_errors": [d.last_error for _, _, d in recorded],
    }
