"""Every query on the job queue tables (entries, log entries, workers) lives here.

Claims are serialized cluster-wide by one transaction-scoped advisory lock: a claim is a few
milliseconds, and serializing them makes the category and dependency rules exact (two workers
can never both see a category as free). The partial unique indexes of the schema are the
second line of defence."""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.queue import schedule
from worker.queue.models import EntryStatus, JobQueueEntry, RunStatus

log = logging.getLogger(__name__)

CLAIM_LOCK_KEY = 0x63726D73  # "crms": the advisory lock that serializes claims
_DUE = ("ready", "waiting", "on_hold_inactivity")


@dataclass(frozen=True)
class Claim:
    """A run this worker owns: the entry as claimed, its log row and its occurrence."""

    entry: JobQueueEntry
    log_id: int
    scheduled_for: datetime
    started_at: datetime


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


_CANDIDATES = sa.text(
    """
    SELECT e.*,
           (e.category_code IS NOT NULL AND EXISTS (
               SELECT 1 FROM crmsync.job_queue_entries r
                WHERE r.status = 'in_process' AND r.category_code = e.category_code
           )) AS category_busy,
           EXISTS (
               SELECT 1 FROM crmsync.job_queue_entries r
                WHERE r.status = 'in_process' AND r.id <> e.id
                  AND (r.mapping_name = e.mapping_name
                       OR (r.job_kind = 'sync_all_modified'
                           AND e.job_kind IN ('sync_mapping', 'sync_all_modified'))
                       OR (e.job_kind = 'sync_all_modified' AND r.job_kind = 'sync_mapping'))
           ) AS mapping_busy,
           (e.job_kind = 'sync_mapping' AND EXISTS (
               SELECT 1
                 FROM crmsync.integration_table_mapping_dependencies d
                 JOIN crmsync.job_queue_entries p
                   ON p.mapping_name = d.depends_on AND p.job_kind = 'sync_mapping'
                WHERE d.mapping_name = e.mapping_name
                  AND (p.status = 'in_process'
                       OR (p.status IN ('ready', 'waiting', 'on_hold_inactivity')
                           AND p.next_run_at <= :now))
           )) AS dependency_busy
      FROM crmsync.job_queue_entries e
     WHERE e.status IN ('ready', 'waiting', 'on_hold_inactivity')
       AND e.next_run_at <= :now
     ORDER BY e.priority, e.id
     LIMIT 500
       FOR UPDATE OF e SKIP LOCKED
    """
)

_INSERT_LOG = sa.text(
    """
    INSERT INTO crmsync.job_queue_log_entries
           (entry_id, job_kind, mapping_name, description, category_code, worker_id,
            scheduled_for, started_at)
    VALUES (:entry_id, :job_kind, :mapping_name, :description, :category_code, :worker_id,
            :scheduled_for, :now)
    ON CONFLICT (entry_id, scheduled_for) WHERE status <> 'abandoned' DO NOTHING
    RETURNING id
    """
)

_MARK_CLAIMED = sa.text(
    """
    UPDATE crmsync.job_queue_entries
       SET status = 'in_process', locked_by = :worker_id, lease_expires_at = :now + :lease,
           running_since = :now, scheduled_for = :scheduled_for, current_log_id = :log_id
     WHERE id = :id
    """
)

_APPLY_DECISION = sa.text(
    """
    UPDATE crmsync.job_queue_entries
       SET status = :status, next_run_at = :next_run_at, attempts = :attempts,
           last_error = :last_error, locked_by = NULL, lease_expires_at = NULL,
           running_since = NULL, scheduled_for = NULL, current_log_id = NULL
     WHERE id = :id
    """
)

_FINISH_LOG = sa.text(
    """
    UPDATE crmsync.job_queue_log_entries
       SET status = :status, finished_at = :now, message = :message,
           error_message = :error, error_traceback = :traceback
     WHERE id = :log_id AND status = 'in_process'
    """
)


class QueueManager:
    """The job queue's database seam: claim, finish, release, rescue, heartbeat."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- claiming -----------------------------------------------------------------------
    def claim_next(self, worker_id: str, lease: timedelta) -> Claim | None:
        """Claim the first runnable due entry, or return None. Entries found expired or
        outside their window are moved on; entries held back by a running entry of their
        category, mapping or a parent mapping are marked 'waiting'."""
        with translate_errors(), self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK_KEY})
            now: datetime = conn.scalar(sa.text("SELECT clock_timestamp()"))
            rows = conn.execute(_CANDIDATES, {"now": now}).mappings().all()
            claimed_categories: set[str] = set()
            for row in rows:
                entry = JobQueueEntry.from_row(row)
                assert entry.next_run_at is not None
                try:
                    moved = schedule.when_due(entry, entry.next_run_at, now)
                except Exception as exc:  # e.g. a time zone Python does not know
                    self._apply(conn, entry.id, schedule.Decision(
                        EntryStatus.ERROR, None, entry.attempts, str(exc)))
                    continue
                if moved is not None:
                    self._apply(conn, entry.id, moved)
                    continue
                busy = row["category_busy"] or row["mapping_busy"] or row["dependency_busy"]
                if busy or entry.category_code in claimed_categories:
                    if entry.status is not EntryStatus.WAITING:
                        conn.execute(
                            sa.text("UPDATE crmsync.job_queue_entries SET status = 'waiting' "
                                    "WHERE id = :id"),
                            {"id": entry.id},
                        )
                    continue
                claim = self._claim(conn, entry, worker_id, lease, now)
                if claim is not None:
                    return claim
            return None

    def _claim(
        self, conn: Connection, entry: JobQueueEntry, worker_id: str, lease: timedelta,
        now: datetime,
    ) -> Claim | None:
        scheduled_for = entry.next_run_at
        assert scheduled_for is not None
        log_id = conn.scalar(_INSERT_LOG, {
            "entry_id": entry.id, "job_kind": entry.job_kind.value,
            "mapping_name": entry.mapping_name, "description": entry.description,
            "category_code": entry.category_code, "worker_id": worker_id,
            "scheduled_for": scheduled_for, "now": now,
        })
        if log_id is None:
            # This occurrence already ran (a user set next_run_at back to it): move on.
            following = schedule.next_run_after(entry.schedule, scheduled_for, now)
            status = EntryStatus.READY if following else EntryStatus.FINISHED
            self._apply(conn, entry.id, schedule.Decision(
                status, following, entry.attempts, entry.last_error))
            return None
        conn.execute(_MARK_CLAIMED, {
            "worker_id": worker_id, "now": now, "lease": lease,
            "scheduled_for": scheduled_for, "log_id": log_id, "id": entry.id,
        })
        return Claim(entry=entry, log_id=log_id, scheduled_for=scheduled_for, started_at=now)

    @staticmethod
    def _apply(conn: Connection, entry_id: int, decision: schedule.Decision) -> None:
        conn.execute(_APPLY_DECISION, {
            "id": entry_id, "status": decision.status.value,
            "next_run_at": decision.next_run_at, "attempts": decision.attempts,
            "last_error": decision.last_error,
        })

    def pull_forward(self, tables: Sequence[str], delay: timedelta) -> int:
        """A mapped local table changed: its sync entries run within ``delay`` (also out of
        'on_hold_inactivity'), unless they are due sooner anyway."""
        with translate_errors(), self.engine.begin() as conn:
            return conn.execute(sa.text(
                """
                UPDATE crmsync.job_queue_entries e
                   SET next_run_at = LEAST(e.next_run_at, now() + :delay),
                       status = CASE WHEN e.status = 'on_hold_inactivity' THEN 'ready'
                                     ELSE e.status END
                  FROM crmsync.integration_table_mappings m
                 WHERE e.job_kind = 'sync_mapping' AND e.mapping_name = m.name
                   AND m.local_table = ANY(:tables) AND m.enabled
                   AND e.status IN ('ready', 'waiting', 'on_hold_inactivity')
                   AND (e.next_run_at IS NULL OR e.next_run_at > now() + :delay)
                """), {"tables": list(tables), "delay": delay}).rowcount

    def next_due_at(self) -> datetime | None:
        """When the earliest waiting entry becomes due (for the local wake-up timer)."""
        with translate_errors(), self.engine.connect() as conn:
            return conn.scalar(sa.text(
                "SELECT min(next_run_at) FROM crmsync.job_queue_entries "
                "WHERE status IN ('ready', 'waiting', 'on_hold_inactivity')"))

    # -- finishing ----------------------------------------------------------------------
    def finish(self, claim: Claim, worker_id: str, outcome: Outcome) -> bool:
        """Record a run's outcome and schedule the entry's next run. Returns False when the
        lease was lost meanwhile (another worker rescued the entry); the log row is then
        left as the rescuer wrote it."""
        with translate_errors(), self.engine.begin() as conn:
            now: datetime = conn.scalar(sa.text("SELECT clock_timestamp()"))
            row = conn.execute(
                sa.text("SELECT * FROM crmsync.job_queue_entries "
                        "WHERE id = :id AND locked_by = :w AND current_log_id = :log FOR UPDATE"),
                {"id": claim.entry.id, "w": worker_id, "log": claim.log_id},
            ).mappings().first()
            finished = conn.execute(_FINISH_LOG, {
                "log_id": claim.log_id, "status": outcome.status.value, "now": now,
                "message": outcome.message or None, "error": outcome.error,
                "traceback": outcome.traceback,
            }).rowcount
            if row is None:
                if not finished:
                    log.warning("run outcome arrived after the lease was lost",
                                extra={"entry": claim.entry.id, "log_id": claim.log_id})
                return False
            current = JobQueueEntry.from_row(row)
            if current.status is not EntryStatus.IN_PROCESS:
                # A user changed the status (e.g. on_hold) while the run went on: keep it.
                decision = schedule.Decision(
                    current.status, current.next_run_at, current.attempts, outcome.error)
            elif outcome.status is RunStatus.SUCCESS:
                decision = schedule.after_success(
                    current, claim.scheduled_for, now, outcome.changed)
            else:
                decision = schedule.after_failure(current, now, outcome.error or "failed")
            self._apply(conn, current.id, decision)
            return True

    def release(self, claim: Claim, worker_id: str, reason: str) -> None:
        """Give an unfinished run back (worker shutdown): the log row says 'abandoned' and
        the same occurrence is due again at once, for any worker."""
        with translate_errors(), self.engine.begin() as conn:
            now = conn.scalar(sa.text("SELECT clock_timestamp()"))
            conn.execute(_FINISH_LOG, {
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
                conn.execute(sa.text(
                    "UPDATE crmsync.job_queue_entries SET lease_expires_at = now() + :lease "
                    "WHERE locked_by = :w AND current_log_id = ANY(:logs)"),
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
        """Runs whose lease expired belong to a dead worker: their log rows become
        'abandoned', the entry counts a failed attempt and is rescheduled by the usual
        rules. Workers silent for ``forget_workers_after`` are removed from the registry."""
        rescued: list[Rescued] = []
        with translate_errors(), self.engine.begin() as conn:
            now: datetime = conn.scalar(sa.text("SELECT clock_timestamp()"))
            rows = conn.execute(sa.text(
                "SELECT * FROM crmsync.job_queue_entries "
                "WHERE locked_by IS NOT NULL AND lease_expires_at < :now "
                "FOR UPDATE SKIP LOCKED"), {"now": now}).mappings().all()
            for row in rows:
                entry = JobQueueEntry.from_row(row)
                reason = f"abandoned: worker {entry.locked_by} stopped renewing its lease"
                conn.execute(_FINISH_LOG, {
                    "log_id": entry.current_log_id, "status": RunStatus.ABANDONED.value,
                    "now": now, "message": None, "error": reason, "traceback": None,
                })
                if entry.status is EntryStatus.IN_PROCESS:
                    decision = schedule.after_failure(entry, now, reason)
                else:
                    decision = schedule.Decision(
                        entry.status, entry.next_run_at, entry.attempts, entry.last_error)
                self._apply(conn, entry.id, decision)
                rescued.append(Rescued(entry.id, entry.locked_by, entry.current_log_id))
            conn.execute(sa.text(
                "DELETE FROM crmsync.workers WHERE heartbeat_at < :now - :after"),
                {"now": now, "after": forget_workers_after})
        return rescued

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
