"""The worker's side of the job queue tables (entries, log entries, workers): claim,
finish, release, rescue, reschedule after an edit, heartbeat. The longer statements are in
queries.py; an entry that cannot be read or scheduled is put in 'error' alone (the helpers
at the end).

A claim takes as many runs as the worker has free slots in one transaction: one statement
reads the candidates (locked with SKIP LOCKED, so workers never wait for each other's rows),
one writes the claims. Workers do not serialize their claims: two that both see a category,
a mapping or the sync entries as free at the same moment are stopped by the database (the
partial unique indexes of one running entry per category and per mapping, the exclusion
constraint of sync_all_modified), the later one's batch is refused and claimed again from a
fresh view. Dependencies need no such guard: a child waits while its parent is due or
running, and a parent is always one or the other until its run is recorded."""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import describe_db_error, translate_errors
from worker.errors import CrmsyncError, DatabaseUnavailable
from worker.queue import queries, schedule
from worker.queue.models import EntryStatus, JobKind, JobQueueEntry, RunStatus

log = logging.getLogger(__name__)

# A run rescued this often (its workers died each time) is a poison job, not bad luck.
RESCUES_BEFORE_ERROR = 3


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

    # -- claiming -----------------------------------------------------------------------
    def claim(self, worker_id: str, lease: timedelta, slots: int) -> list[Claim]:
        """Claim up to ``slots`` runnable due entries, in priority order, in one transaction
        (a second when the first page of rows was used up by entries passed over). Entries
        found expired or outside their window are moved on; entries held back (a running
        entry of their category or mapping, a parent due, running or failed) are marked
        'waiting' with the reason. An entry that cannot be read, scheduled or claimed is put
        in 'error' with a message naming it; the others go on."""
        claims: list[Claim] = []
        careful = False
        for _ in range(_PAGES):
            wanted = slots - len(claims)
            if wanted <= 0:
                break
            try:
                got, full = self._claim_page(worker_id, lease, wanted, careful)
            except _BatchRefused:
                careful = True  # written again row by row, each in a savepoint
                continue
            claims += got
            if not full:
                break
        return claims

    def claim_next(self, worker_id: str, lease: timedelta) -> Claim | None:
        """Claim the first runnable due entry, or return None."""
        claims = self.claim(worker_id, lease, 1)
        return claims[0] if claims else None

    def _claim_page(
        self, worker_id: str, lease: timedelta, slots: int, careful: bool
    ) -> tuple[list[Claim], bool]:
        limit = slots * queries.CLAIM_ROWS_PER_SLOT
        with translate_errors(), self.engine.begin() as conn:
            now: datetime = conn.execute(queries.CLAIM_SETTINGS).one().now
            rows = _readable_rows(conn, queries.CLAIMABLE, {"now": now, "limit": limit})
            batch = _Batch(slots)
            for row in rows:
                if batch.full:
                    break
                try:
                    self._sort(conn, row, now, batch)
                except Exception as exc:
                    _reraise_if_unavailable(exc)
                    _mark_broken(conn, row["id"], "could not be claimed", exc)
            _mark_waiting(conn, batch.waiting)
            if careful:
                claims = self._write_one_by_one(conn, batch.chosen, worker_id, lease, now)
            else:
                claims = self._write(conn, batch.chosen, worker_id, lease, now)
            return claims, len(rows) >= limit

    def _sort(self, conn: Connection, row: sa.RowMapping, now: datetime, batch: _Batch) -> None:
        """Where one candidate goes: moved on, held, chosen, or left for the next claim."""
        entry = JobQueueEntry.from_row(row)
        assert entry.next_run_at is not None
        moved = schedule.when_due(entry, entry.next_run_at, now)
        if moved is not None:
            with conn.begin_nested():
                self._apply(conn, entry.id, moved)
        elif row["hold"] is not None:
            batch.waiting[entry.id] = row["hold"]
        else:
            batch.offer(entry)

    def _write(
        self, conn: Connection, chosen: Sequence[JobQueueEntry], worker_id: str,
        lease: timedelta, now: datetime,
    ) -> list[Claim]:
        """All claims of a batch in one statement. When the database refuses it (another
        worker claimed the same category or mapping a moment earlier, or a row is broken),
        the whole transaction is given up: the next page sees the other worker's claims
        and writes row by row."""
        if not chosen:
            return []
        try:
            written = conn.execute(queries.CLAIM_ROWS, _claim_params(chosen, worker_id, lease))
        except sa_exc.DBAPIError as exc:
            if not _lock_timed_out(exc):
                _reraise_if_unavailable(exc)
            raise _BatchRefused from exc
        return self._claims_of(conn, chosen, written.all(), now)

    def _write_one_by_one(
        self, conn: Connection, chosen: Sequence[JobQueueEntry], worker_id: str,
        lease: timedelta, now: datetime,
    ) -> list[Claim]:
        claims: list[Claim] = []
        for entry in chosen:
            try:
                with conn.begin_nested():
                    written = conn.execute(
                        queries.CLAIM_ROWS, _claim_params([entry], worker_id, lease)).all()
                    claims += self._claims_of(conn, [entry], written, now)
            except Exception as exc:
                if _constraint_of(exc) in _ONE_RUNNING or _lock_timed_out(exc):
                    continue  # someone else runs its category or mapping: not its fault
                _reraise_if_unavailable(exc)
                _mark_broken(conn, entry.id, "could not be claimed", exc)
        return claims

    def _claims_of(
        self, conn: Connection, chosen: Sequence[JobQueueEntry], written: Sequence[Any],
        now: datetime,
    ) -> list[Claim]:
        logged = {row.entry_id: row for row in written}
        claims: list[Claim] = []
        for entry in chosen:
            assert entry.next_run_at is not None
            row = logged.get(entry.id)
            if row is not None:
                claims.append(Claim(entry=entry, log_id=row.log_id,
                                    scheduled_for=entry.next_run_at, started_at=row.started_at))
                continue
            # This occurrence already ran (a user set next_run_at back to it): move on.
            following = schedule.next_run_after(entry.schedule, entry.next_run_at, now)
            status = EntryStatus.READY if following else EntryStatus.FINISHED
            self._apply(conn, entry.id, schedule.Decision(
                status, following, entry.attempts, entry.last_error))
        return claims

    @staticmethod
    def _apply(conn: Connection, entry_id: int, decision: schedule.Decision) -> None:
        conn.execute(queries.APPLY_DECISION, {
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

    def nothing_to_do(self) -> tuple[bool, datetime | None]:
        """One cheap statement for a wake-up with no news: (True, earliest due time) when
        no entry is due and no schedule was edited; (False, None) otherwise."""
        with translate_errors(), self.engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT min(next_run_at) FILTER (WHERE status IN "
                "       ('ready', 'waiting', 'on_hold_inactivity')), "
                "       bool_or(schedule_changed), clock_timestamp() "
                "FROM crmsync.job_queue_entries")).one()
        due, flagged, now = row
        if flagged or (due is not None and due <= now):
            return False, None
        return True, due

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
        left as the rescuer wrote it. When the next run cannot be computed or stored, the
        run is still recorded and the entry goes to 'error' with a message naming it."""
        outcome = outcome.printable()
        try:
            with translate_errors(), self.engine.begin() as conn:
                return self._finish(conn, claim, worker_id, outcome)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            column = None
            if isinstance(exc.__cause__, sa_exc.DataError):  # a value the driver cannot load
                with translate_errors(), self.engine.connect() as conn:
                    column = _unreadable_column(conn, claim.entry.id)
            message = _describe(claim.entry.id, "could not be rescheduled", exc, column)
            if outcome.error:
                message += f" (the run failed: {outcome.error})"
            with translate_errors(), self.engine.begin() as conn:
                conn.execute(queries.FINISH_LOG, {
                    "log_id": claim.log_id, "status": outcome.status.value, "now": _now(conn),
                    "message": outcome.message or None, "error": message, "traceback": None})
                conn.execute(queries.PUT_IN_ERROR_IF_OWNED, {
                    "id": claim.entry.id, "w": worker_id, "log": claim.log_id,
                    "message": message})
            log.error("run recorded, entry put in error",
                      extra={"entry": claim.entry.id, "error": message})
            return True

    def _finish(
        self, conn: Connection, claim: Claim, worker_id: str, outcome: Outcome
    ) -> bool:
        row = conn.execute(queries.OWNED_RUN, {
            "id": claim.entry.id, "w": worker_id, "log": claim.log_id}).mappings().first()
        now = row["finishing_at"] if row is not None else _now(conn)
        finished = conn.execute(queries.FINISH_LOG, {
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
            confirmed = row["confirmed"] if outcome.status is RunStatus.ERROR else 0
            decision = schedule.after_failure(current, now, outcome.error or "failed",
                                              confirmed)
        self._apply(conn, current.id, decision)
        return True

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
        """Runs whose lease expired, or whose worker is not registered, belong to a dead
        worker: their log rows become 'abandoned' and the entry is due again at once for the
        same occurrence. It is the worker that failed, not the job: no attempt is counted;
        only an occurrence rescued RESCUES_BEFORE_ERROR times puts the entry in 'error'.
        Workers silent for ``forget_workers_after`` are removed from the registry."""
        rescued: list[Rescued] = []
        with translate_errors(), self.engine.begin() as conn:
            now = _now(conn)
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
            now = _now(conn)
            params = {"ids": list(ids) if ids is not None else None}
            done = 0
            for row in _readable_rows(conn, queries.FLAGGED, params):
                try:
                    with conn.begin_nested():
                        self._reschedule_one(conn, row, now)
                        done += 1
                except Exception as exc:
                    _reraise_if_unavailable(exc)
                    _mark_broken(conn, row["id"], "could not be rescheduled", exc)
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


# -- helpers: one bad row stops nobody else ---------------------------------------------
def _now(conn: Connection) -> datetime:
    now: datetime = conn.scalar(sa.text("SELECT clock_timestamp()"))
    return now


def _readable_rows(
    conn: Connection, query: sa.TextClause, params: Mapping[str, Any]
) -> list[sa.RowMapping]:
    """The rows of a query on job_queue_entries (which takes ``:only``, an id or NULL). When
    a row holds a value the driver cannot load, every row is loaded alone and the unreadable
    ones are put in 'error' with the column named, so they stop nobody else."""
    try:
        with conn.begin_nested():
            return list(conn.execute(query, {**params, "only": None}).mappings().all())
    except sa_exc.DBAPIError as exc:
        _reraise_if_unavailable(exc)
    rows: list[sa.RowMapping] = []
    for entry_id in conn.scalars(sa.text(
            "SELECT id FROM crmsync.job_queue_entries ORDER BY priority, id")).all():
        try:
            with conn.begin_nested():
                rows += conn.execute(query, {**params, "only": entry_id}).mappings().all()
        except sa_exc.DBAPIError as exc:
            _reraise_if_unavailable(exc)
            column = _unreadable_column(conn, entry_id)
            _mark_broken(conn, entry_id, "cannot be read", exc, column)
    return rows


def _unreadable_column(conn: Connection, entry_id: int) -> str | None:
    columns = conn.scalars(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'crmsync' "
        "AND table_name = 'job_queue_entries' ORDER BY ordinal_position")).all()
    for column in columns:
        try:
            with conn.begin_nested():
                conn.execute(sa.text(
                    f'SELECT "{column}" FROM crmsync.job_queue_entries WHERE id = :id'),
                    {"id": entry_id}).all()
        except sa_exc.DBAPIError:
            return str(column)
    return None


def _mark_broken(
    conn: Connection, entry_id: int, what: str, exc: BaseException, column: str | None = None
) -> None:
    """Put one entry in 'error' with a message naming it (and the column when known)."""
    message = _describe(entry_id, what, exc, column)
    log.error("job queue entry put in error", extra={"entry": entry_id, "error": message})
    try:
        with conn.begin_nested():
            conn.execute(queries.PUT_IN_ERROR, {"id": entry_id, "message": message})
    except sa_exc.DBAPIError as again:
        _reraise_if_unavailable(again)
        log.error("could not put entry in error", extra={"entry": entry_id})


def _describe(entry_id: int, what: str, exc: BaseException, column: str | None = None) -> str:
    """'entry #7 could not be claimed: run_interval: ...' from any exception."""
    if isinstance(exc, sa_exc.DBAPIError):
        detail = describe_db_error(exc)
    elif isinstance(exc, CrmsyncError):
        detail = str(exc)
    else:
        detail = f"{type(exc).__name__}: {exc}"
    prefix = f"column {column}: " if column else ""
    return f"entry #{entry_id} {what}: {prefix}{detail}".replace("\x00", "\\0")


_ONE_RUNNING = ("job_queue_entries_one_running_per_category",
                "job_queue_entries_one_running_per_mapping",
                "job_queue_entries_sync_all_modified_runs_alone")
# A claim reads at most this many pages of candidates (each a transaction) per call.
_PAGES = 3


class _BatchRefused(Exception):
    """The database refused a batch of claims; the caller writes them again one by one."""


class _Batch:
    """The entries one claim takes: in priority order, never two of one category or one
    mapping, and sync_all_modified never beside a sync entry (the rules of running
    entries, applied within the batch as the database applies them across workers)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.chosen: list[JobQueueEntry] = []
        self.waiting: dict[int, str] = {}
        self._categories: set[str] = set()
        self._mappings: set[str] = set()
        self._kinds: set[JobKind] = set()

    @property
    def full(self) -> bool:
        return len(self.chosen) >= self.slots

    def offer(self, entry: JobQueueEntry) -> None:
        """Take ``entry`` unless it conflicts with one taken; a conflicting one stays due
        and is held (or claimed) by the next claim."""
        sync = {JobKind.SYNC_MAPPING, JobKind.SYNC_ALL_MODIFIED}
        if entry.category_code is not None and entry.category_code in self._categories:
            return
        if entry.mapping_name is not None and entry.mapping_name in self._mappings:
            return
        if entry.job_kind is JobKind.SYNC_ALL_MODIFIED and self._kinds & sync:
            return
        if entry.job_kind in sync and JobKind.SYNC_ALL_MODIFIED in self._kinds:
            return
        self.chosen.append(entry)
        self._kinds.add(entry.job_kind)
        if entry.category_code is not None:
            self._categories.add(entry.category_code)
        if entry.mapping_name is not None:
            self._mappings.add(entry.mapping_name)


def _claim_params(
    chosen: Sequence[JobQueueEntry], worker_id: str, lease: timedelta
) -> dict[str, Any]:
    return {"ids": [e.id for e in chosen], "scheduled": [e.next_run_at for e in chosen],
            "worker_id": worker_id, "lease": lease}


def _mark_waiting(conn: Connection, waiting: Mapping[int, str]) -> None:
    """Held entries show why (status, entries list): one statement for all of them."""
    if not waiting:
        return
    try:
        with conn.begin_nested():
            conn.execute(queries.MARK_WAITING,
                         {"ids": list(waiting), "reasons": list(waiting.values())})
        return
    except sa_exc.DBAPIError as exc:
        _reraise_if_unavailable(exc)
    for entry_id, reason in waiting.items():  # one row refused it: find which
        try:
            with conn.begin_nested():
                conn.execute(queries.MARK_WAITING, {"ids": [entry_id], "reasons": [reason]})
        except sa_exc.DBAPIError as exc:
            _reraise_if_unavailable(exc)
            _mark_broken(conn, entry_id, "could not be marked waiting", exc)


def _lock_timed_out(exc: BaseException) -> bool:
    """Another worker's claim held us up (lock timeout) or crossed ours (deadlock): the
    driver calls these operational errors, but the connection is fine."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in ("55P03", "40P01")


def _constraint_of(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(getattr(orig, "diag", None), "constraint_name", None)


def _reraise_if_unavailable(exc: BaseException) -> None:
    """A lost connection is not the entry's fault: let the caller retry later."""
    lost = isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)
    if lost:
        raise exc
