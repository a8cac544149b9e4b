"""Claims: as many runs as a worker has free slots, in one transaction of two statements.

One statement (queries.CLAIMABLE) reads the candidates in priority order, each row locked
or skipped (SKIP LOCKED: workers never wait for each other's rows), with what holds it
back; Python applies the rules that need the pure scheduling functions (windows, weekdays,
expiry) and keeps the batch free of conflicts; one statement (queries.CLAIM_ROWS) writes
the log rows and marks the entries in_process.

Workers do not serialize their claims. Two that both see a category, a mapping or the sync
entries as free at the same moment are stopped by the database: the partial unique indexes
of one running entry per category and per mapping, the exclusion constraint of
sync_all_modified. The later batch is refused and claimed again from a fresh view, row by
row. Dependencies need no such guard: a child waits while its parent is due or running,
and a parent is always one or the other until its run is recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.queue import queries, rows, schedule
from worker.queue.models import EntryStatus, JobKind, JobQueueEntry


@dataclass(frozen=True)
class Claimed:
    """What one claim found: its runs, whether edited schedules wait to be recomputed,
    and when the next entry becomes due."""

    claims: list[Claim]
    edited: bool
    next_due: datetime | None


@dataclass(frozen=True)
class Claim:
    """A run this worker owns: the entry as claimed, its log row and its occurrence."""

    entry: JobQueueEntry
    log_id: int
    scheduled_for: datetime
    started_at: datetime


class Claimer:
    """Claims due entries for one worker at a time (any number of workers may claim)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, worker_id: str, lease: timedelta, slots: int) -> Claimed:
        """Claim up to ``slots`` runnable due entries, in priority order, in one transaction
        (a second when the first page of rows was used up by entries passed over). Entries
        found expired or outside their window are moved on; entries held back (a running
        entry of their category or mapping, a parent due, running or failed) are marked
        'waiting' with the reason. An entry that cannot be read, scheduled or claimed is put
        in 'error' with a message naming it; the others go on."""
        claims: list[Claim] = []
        careful, edited, next_due = False, False, None
        for _ in range(_PAGES):
            wanted = slots - len(claims)
            if wanted <= 0:
                break
            try:
                page = self._claim_page(worker_id, lease, wanted, careful)
            except _BatchRefused:
                careful = True  # written again row by row, each in a savepoint
                continue
            claims += page.claims
            edited, next_due = edited or page.edited, page.next_due
            if not page.full:
                break
        return Claimed(claims, edited, next_due)

    def _claim_page(
        self, worker_id: str, lease: timedelta, slots: int, careful: bool
    ) -> _Page:
        limit = slots * queries.CLAIM_ROWS_PER_SLOT
        with translate_errors(), self.engine.begin() as conn:
            settings = conn.execute(queries.CLAIM_SETTINGS).one()
            now: datetime = settings.now
            candidates = rows.readable_rows(
                conn, queries.CLAIMABLE, {"now": now, "limit": limit})
            batch = _Batch(slots)
            for row in candidates:
                if batch.full:
                    break
                try:
                    self._sort(conn, row, now, batch)
                except Exception as exc:
                    rows.reraise_if_unavailable(exc)
                    rows.mark_broken(conn, row["id"], "could not be claimed", exc)
            _mark_waiting(conn, batch.waiting)
            if careful:
                claims = self._write_one_by_one(conn, batch.chosen, worker_id, lease, now)
            else:
                claims = self._write(conn, batch.chosen, worker_id, lease, now)
            return _Page(claims, len(candidates) >= limit, settings.edited, settings.next_due)

    def _sort(self, conn: Connection, row: sa.RowMapping, now: datetime, batch: _Batch) -> None:
        """Where one candidate goes: moved on, held, chosen, or left for the next claim."""
        entry = JobQueueEntry.from_row(row)
        assert entry.next_run_at is not None
        moved = schedule.when_due(entry, entry.next_run_at, now)
        if moved is not None:
            with conn.begin_nested():
                rows.apply_decision(conn, entry.id, moved)
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
                rows.reraise_if_unavailable(exc)
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
                if rows.constraint_of(exc) in rows.ONE_RUNNING or _lock_timed_out(exc):
                    continue  # someone else runs its category or mapping: not its fault
                rows.reraise_if_unavailable(exc)
                rows.mark_broken(conn, entry.id, "could not be claimed", exc)
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
            rows.apply_decision(conn, entry.id, schedule.Decision(
                status, following, entry.attempts, entry.last_error))
        return claims


# A claim reads at most this many pages of candidates (each a transaction) per call.
_PAGES = 3


@dataclass(frozen=True)
class _Page:
    claims: list[Claim]
    full: bool  # every row read was used: more may wait behind them
    edited: bool
    next_due: datetime | None


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
        rows.reraise_if_unavailable(exc)
    for entry_id, reason in waiting.items():  # one row refused it: find which
        try:
            with conn.begin_nested():
                conn.execute(queries.MARK_WAITING, {"ids": [entry_id], "reasons": [reason]})
        except sa_exc.DBAPIError as exc:
            rows.reraise_if_unavailable(exc)
            rows.mark_broken(conn, entry_id, "could not be marked waiting", exc)


def _lock_timed_out(exc: BaseException) -> bool:
    """Another worker's claim held us up (lock timeout) or crossed ours (deadlock): the
    driver calls these operational errors, but the connection is fine."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in ("55P03", "40P01")


