"""What one pass (one direction of one mapping run) works with, and the helpers both
directions share: chunking, counting, per-record failures."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.remote.batch import OperationResult
from worker.remote.client import EntitySet, ODataClient
from worker.sync import couplings as coupling_store
from worker.sync import joblog
from worker.sync.local import LocalTable
from worker.sync.lookups import Lookups
from worker.sync.model import Coupling, Direction, Marks, TableMapping
from worker.sync.progress import READ, PassProgress
from worker.sync.transfer import FieldValue, new_snapshot

CHUNK = 500
ANALYZE_AFTER = 1000  # couplings a pass adds before it refreshes their statistics
T = TypeVar("T")


class RecordFailed(Exception):
    """One record cannot be synchronized; the pass logs it and goes on. ``transient``:
    the cause may pass by itself (a referenced record not coupled *yet*, the service
    refusing for a while), so the record is retried by every pass and never skipped."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class PassContext:
    engine: Engine
    mapping: TableMapping
    local: LocalTable
    remote: EntitySet
    client: ODataClient
    lookups: Lookups
    direction: Direction
    job_id: int
    check_cancelled: Callable[[], None]
    on_progress: Callable[[Counter[str]], None] | None = None
    marks: Marks = field(default_factory=Marks)  # as the run found them
    progress: PassProgress | None = None  # told of each chunk once it committed
    counts: Counter[str] = field(default_factory=Counter)
    # Counters and errors not written yet, per thread. The local→remote pass finishes two
    # chunks at once on threads of their own (worker.sync.pipeline): each chunk's
    # transaction writes what its own thread counted, plus what the pass's thread counted
    # while deciding (records that need no write of their own), never the other chunk's
    # counts, so the job log never counts work a crash would undo.
    _pending: dict[int, Counter[str]] = field(default_factory=dict)
    _errors: dict[int, list[joblog.RecordError]] = field(default_factory=dict)
    _pass_thread: int = field(default_factory=threading.get_ident)
    # Local keys of the records that failed in this pass: a fresh pass that follows a
    # resumed one in the same run leaves them for the next run's retry instead of failing
    # them twice (which would skip them).
    failed_keys: set[str] = field(default_factory=set)
    # Records the run's local→remote pass wrote to the CRM just before this remote→local
    # pass: their echoes come back in its read (worker.sync.from_remote reads thin then).
    written_before: int = 0
    # The local→remote pass decides one chunk while the previous one is recorded on
    # another thread: counters and errors are taken under this lock.
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Couplings this pass added when it last had their statistics refreshed.
    _analyzed_at: int = 0

    @property
    def where(self) -> sa.ColumnElement[bool]:
        return self.local.filter_clause(self.mapping.local_filter)

    def count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._pending.setdefault(threading.get_ident(), Counter())[counter] += n

    def read(self, records: int) -> None:
        """A chunk looked at this many records (its progress; not a job log counter)."""
        self.count(READ, records)

    def fail(self, conn: Connection, coupling: Coupling | None, message: str, *,
             local_id: str | None = None, remote_id: str | None = None,
             detail: str | None = None, transient: bool = False,
             record: dict[str, Any] | None = None) -> None:
        """Log one record's failure; the same error twice in a row skips the coupling,
        unless the failure is ``transient`` (see :class:`RecordFailed`)."""
        if coupling is not None:
            coupling_store.record_failure(conn, coupling, self.direction, self.job_id, message,
                                          may_skip=not transient)
            local_id, remote_id = coupling.local_id, coupling.remote_id
        me = threading.get_ident()
        with self._lock:
            self._pending.setdefault(me, Counter())["failed"] += 1
            if local_id is not None:
                self.failed_keys.add(local_id)
            self._errors.setdefault(me, []).append(joblog.RecordError(
                local_id, remote_id, message, detail, remote_record=record))

    def _threads(self) -> set[int]:
        """Whose counts a transaction on this thread writes: its own and the pass's."""
        return {threading.get_ident(), self._pass_thread}

    def has_pending(self) -> bool:
        """Whether counters or errors wait to be written (records only read do not: a
        chunk of echoes costs no transaction)."""
        with self._lock:
            return any(self._errors.get(t) or any(
                v for k, v in self._pending.get(t, Counter()).items() if k != READ)
                for t in self._threads())

    def flush(self, conn: Connection) -> Counter[str]:
        """Write the chunk's counters and errors in the transaction that wrote its records;
        returns the counters written."""
        pending: Counter[str] = Counter()
        errors: list[joblog.RecordError] = []
        with self._lock:
            for t in self._threads():
                pending.update(self._pending.pop(t, Counter()))
                errors += self._errors.pop(t, [])
        joblog.add(conn, self.job_id, pending, errors)
        with self._lock:
            self.counts.update(pending)
        return pending

    @contextmanager
    def chunk_transaction(self) -> Iterator[Connection]:
        """The transaction that commits a chunk: its counters and errors are written last
        in it, and reported (progress, metrics) only after it committed, so nothing shows
        work that a crash would undo."""
        with self.engine.begin() as conn:
            yield conn
            written = self.flush(conn)
        self._report(written)

    def expect(self, more: int | None, at_least: bool = False) -> None:
        """The pass has ``more`` records to go (its progress total; None: not known);
        ``at_least``: the figure is a lower bound (a count the service capped)."""
        if self.progress is not None:
            self.progress.expect(more, at_least=at_least)

    def report_reads(self, *, pass_over: bool = False) -> None:
        """Report the reads not written with a chunk: this thread's (and the pass's) when
        a chunk with nothing to write ends; everyone's when the pass is over."""
        with self._lock:
            threads = set(self._pending) if pass_over else self._threads()
            read = sum(self._pending[t].pop(READ, 0) for t in threads if t in self._pending)
        self._report(Counter({READ: read}))

    def _report(self, counts: Counter[str]) -> None:
        """Tell the pass's progress and ``on_progress`` what was committed."""
        if not +counts:
            return
        if self.progress is not None:
            self.progress.add(counts)
        if self.on_progress is not None:
            self.on_progress(counts)

    def keep_statistics(self) -> None:
        """Between chunks: once the couplings this pass added reach a thousand, then each
        time they grew fourfold, the planner is told of them (``couplings.analyze``), so
        probing a chunk's couplings by key stays a probe while an initial sync fills them
        (statistics a quarter of the truth still plan it so)."""
        with self._lock:
            added = self.counts["inserted"] + self.counts["coupled"]
        if added >= max(ANALYZE_AFTER, 4 * self._analyzed_at) \
                and coupling_store.analyze(self.engine):
            self._analyzed_at = added

    def remote_select(self) -> list[str]:
        names = {self.mapping.remote_key, self.mapping.remote_modified_on}
        names.update(f.remote_read_name for f in self.mapping.fields if f.remote_read_name)
        return sorted(names)


def unchanged_snapshot(px: PassContext, coupling: Coupling, values: list[FieldValue],
                       left: set[str]) -> dict[str, Any] | None:
    """The snapshot to store for a record this pass found unchanged; None when the stored
    one is still right (so a run with nothing changed writes nothing)."""
    snapshot = new_snapshot(coupling.synced_values, values, pass_direction=px.direction,
                            written=set(), left=left)
    if snapshot != coupling.synced_values or coupling.last_result(px.direction) != "success" \
            or coupling.pending_values is not None:
        return snapshot
    return None


def write_failure(result: OperationResult) -> str:
    """The message of a write the service refused."""
    message = str(result.error) if result.error else f"HTTP {result.status}"
    if result.status == 428:
        message += (" (the service requires If-Match with the record's ETag, and its reads "
                    "gave none: does the entity set return @odata.etag?)")
    return message


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def unique(items: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(items))


def new_id() -> str:
    """A random (version 4) GUID as text: what ``str(uuid.uuid4())`` gives, without
    building a UUID object per record."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# The RFC 4122 variant bits (10xx) of a GUID's 17th hex digit.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def remote_version(record: dict[str, Any] | None, etag: str | None) -> str | None:
    if etag:
        return etag
    if record:
        for name in ("@odata.etag", "versionnumber"):
            if record.get(name) is not None:
                return str(record[name])
    return None
