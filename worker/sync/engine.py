"""One mapping run: a local→remote pass, then a remote→local pass (as the mapping's
direction says), each recorded as a ``sync_jobs`` row; and "Synchronize Modified Records":
every enabled mapping in dependency order, one failing mapping not stopping the others."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.errors import CrmsyncError, JobError
from worker.observers import PassObserver
from worker.sync import from_remote, joblog, mappings, to_remote
from worker.sync.clients import Clients
from worker.sync.context import PassContext
from worker.sync.local import LocalTable, Reflections
from worker.sync.lookups import Lookups
from worker.sync.model import Direction, Marks, TableMapping
from worker.sync.order import topological_order
from worker.sync.progress import PassProgress

log = logging.getLogger(__name__)

Progress = Callable[[str, Direction, Counter[str]], None]
VALID_FOR = 60.0  # seconds a mapping's successful check is trusted (same definition)
_LOCK_SPACE = 0x63727379  # advisory lock namespace for "a mapping is being synchronized"


@dataclass
class PassResult:
    direction: Direction
    job_id: int
    counts: Counter[str]
    error: str | None = None


@dataclass
class RunSummary:
    """What one mapping run did, per pass."""

    mapping: str
    passes: list[PassResult] = field(default_factory=list)
    error: str | None = None
    held_back: bool = False  # not run: a mapping it depends on failed
    exit_status: int | None = None  # of the error that ended the run (worker.errors)

    @property
    def counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for p in self.passes:
            total.update(p.counts)
        return total

    @property
    def changed(self) -> bool:
        """NAV's inactivity rule: inserted + modified + deleted + failed = 0 is 'nothing'."""
        c = self.counts
        return bool(c["inserted"] + c["modified"] + c["deleted"] + c["failed"]) \
            or self.error is not None

    def describe(self) -> str:
        parts = []
        for p in self.passes:
            arrow = "to CRM" if p.direction is Direction.TO_INTEGRATION else "from CRM"
            shown = ", ".join(f"{k} {v}" for k, v in sorted(p.counts.items()) if v) or "no records"
            parts.append(f"{arrow}: {shown}")
        text = f"{self.mapping}: " + "; ".join(parts) if parts else f"{self.mapping}: no pass"
        return text + (f" (failed: {self.error})" if self.error else "")


class SyncEngine:
    """Runs mappings against the database and their connections' clients."""

    def __init__(self, engine: Engine, clients: Clients | None = None,
                 observer: PassObserver | None = None) -> None:
        self.engine = engine
        self.clients = clients or Clients()
        self.observer = observer
        self.tables = Reflections()  # the runs' and their checks' reflected ERP tables
        self._validated: dict[str, tuple[str, float]] = {}  # mapping → (definition, when)

    def _observe(self, name: str, *args: Any) -> None:
        try:  # an observer (or none) may have no method for an event
            getattr(self.observer, name, lambda *_: None)(*args)
        except Exception:
            log.exception("pass observer failed")

    def run_mapping(
        self,
        name: str,
        *,
        log_entry_id: int | None = None,
        full: bool = False,
        check_cancelled: Callable[[], None] = lambda: None,
        on_progress: Progress | None = None,
    ) -> RunSummary:
        """Synchronize one mapping. Raises on a broken mapping or a connection failure
        (after writing the failure into the pass's sync job); record failures do not raise."""
        summary = RunSummary(name)
        ok = False
        try:
            with exclusive(self.engine, name):
                # Loaded under the run lock: no other run moves its marks meanwhile, and
                # neither pass changes what the other reads, so one load serves both.
                mapping, marks = mappings.load_with_marks(self.engine, name)
                if not mapping.enabled:
                    summary.error = "mapping is disabled"
                    return summary
                joblog.close_abandoned(self.engine, name)
                # Validation runs inside the first pass, so a mapping or connection that
                # fails it leaves a failed job with the message.
                validate: Callable[[], None] | None = partial(self._validate, mapping)
                written = 0
                for direction in passes(mapping.direction):
                    result = self._run_pass(mapping, marks, direction, log_entry_id, full,
                                            check_cancelled, on_progress, validate,
                                            written_before=written)
                    validate = None
                    summary.passes.append(result)
                    if direction is Direction.TO_INTEGRATION:
                        written = result.counts["inserted"] + result.counts["modified"]
            ok = True
        finally:
            self._observe("mapping_finished", name, ok)
        return summary

    def run_all(
        self,
        names: Sequence[str] | None = None,
        *,
        log_entry_id: int | None = None,
        full: bool = False,
        check_cancelled: Callable[[], None] = lambda: None,
        on_progress: Progress | None = None,
    ) -> list[RunSummary]:
        """The seed's "Synchronize Modified Records": mappings in dependency order."""
        deps = mappings.dependencies(self.engine)
        order = topological_order(deps)
        if names is not None:
            unknown = sorted(set(names) - set(deps))
            if unknown:
                raise mappings.MappingNotFound(
                    f"no enabled mapping named {', '.join(unknown)}")
            order = [n for n in order if n in set(names)]
        summaries = []
        for name in order:
            check_cancelled()
            waiting_for = joblog.failed_parents(self.engine, name)
            if waiting_for:
                message = (f"not run: {', '.join(waiting_for)} (which it depends on) failed in "
                           "its last run; it runs once that mapping succeeds")
                log.warning("mapping held back", extra={"mapping": name, "error": message})
                summaries.append(RunSummary(name, error=message, held_back=True))
                continue
            try:
                summaries.append(self.run_mapping(
                    name, log_entry_id=log_entry_id, full=full,
                    check_cancelled=check_cancelled, on_progress=on_progress))
            except CrmsyncError as exc:
                log.warning("mapping run failed", extra={"mapping": name, "error": str(exc)})
                summaries.append(RunSummary(name, error=str(exc),
                                            exit_status=exc.exit_status))
        return summaries

    def sync_record(self, name: str, local_id: str | None, remote_id: str | None, *,
                    take: Direction | None = None) -> RunSummary:
        """NAV's "Synchronize Now" for one record: its passes run now, skipped or not, as
        sync jobs. ``take``: the direction whose source wins every field (TO_INTEGRATION:
        the ERP's values go to the CRM; FROM_INTEGRATION: the CRM's come to the ERP) —
        this settles an update conflict in one step; without it, the mapping's rules."""
        mapping, marks = mappings.load_with_marks(self.engine, name)
        summary = RunSummary(name)
        from worker.sync.check import require_valid

        with exclusive(self.engine, name):
            require_valid(self.engine, self.clients, name, self.tables)
            chosen = [take] if take is not None else passes(mapping.direction)
            for direction in chosen:
                force = take is direction

                def work(px: PassContext, direction: Direction = direction,
                         force: bool = force) -> None:
                    if direction is Direction.TO_INTEGRATION:
                        if local_id is not None:
                            lengths = self.clients.max_lengths(px.mapping.connection_name,
                                                               px.mapping.entity_set)
                            to_remote.run_records(px, [local_id], force=force,
                                                  max_lengths=lengths)
                    elif remote_id is not None:
                        from_remote.run_records(px, [remote_id], force=force)

                summary.passes.append(self._run_pass(mapping, marks, direction, None, False,
                                                     lambda: None, None, work=work))
                mapping, marks = mappings.load_with_marks(self.engine, name)
        return summary

    # -- internals ---------------------------------------------------------------------
    def _validate(self, mapping: TableMapping) -> None:
        """``crmsync check``'s rules for the mapping, at most once per VALID_FOR seconds
        while its definition stays the same (a changed definition is checked at once; a
        changed ERP table or CRM metadata within VALID_FOR, as reflection is cached)."""
        from worker.sync.check import require_valid

        definition = repr(mapping)
        checked = self._validated.get(mapping.name)  # one get, one set: atomic, no lock
        if checked is not None and checked[0] == definition \
                and time.monotonic() - checked[1] < VALID_FOR:
            return
        require_valid(self.engine, self.clients, mapping.name, self.tables)
        self._validated[mapping.name] = (definition, time.monotonic())

    def _run_pass(self, mapping: TableMapping, marks: Marks, direction: Direction,
                  log_entry_id: int | None,
                  full: bool, check_cancelled: Callable[[], None],
                  on_progress: Progress | None,
                  validate: Callable[[], None] | None = None,
                  work: Callable[[PassContext], None] | None = None, *,
                  written_before: int = 0) -> PassResult:
        """One pass as a sync job; ``work`` replaces the whole pass (one record's sync)."""
        job_id = joblog.start(self.engine, mapping.name, direction, log_entry_id)
        try:
            if validate is not None:
                validate()
            px = self.context(mapping, direction, job_id, check_cancelled, on_progress,
                              marks)
            px.written_before = written_before
            px.progress = PassProgress(mapping.name, direction,
                                       on_change=partial(self._observe, "pass_progress"))
            if work is not None:
                work(px)
            elif direction is Direction.TO_INTEGRATION:
                lengths = self.clients.max_lengths(mapping.connection_name, mapping.entity_set)
                to_remote.run(px, full=full, max_lengths=lengths)
            else:
                from_remote.run(px, full=full)
            px.report_reads(pass_over=True)
        except Exception as exc:
            message = str(exc) or type(exc).__name__
            row = joblog.fail(self.engine, job_id, message)
            self._observe("pass_finished", mapping.name, direction,
                          Counter({k: row[k] for k in joblog.COUNTERS}), message)
            log.warning("sync pass failed", extra={"mapping": mapping.name,
                                                   "direction": direction.value,
                                                   "job": job_id, "error": message})
            raise
        row = joblog.finish(self.engine, job_id)
        counts = Counter({k: row[k] for k in joblog.COUNTERS if row[k]})
        self._observe("pass_finished", mapping.name, direction, counts, None)
        log.info("sync pass finished", extra={"mapping": mapping.name,
                                              "direction": direction.value, "job": job_id,
                                              **dict(counts)})
        return PassResult(direction, job_id, counts)

    def context(self, mapping: TableMapping, direction: Direction, job_id: int,
                 check_cancelled: Callable[[], None],
                 on_progress: Progress | None, marks: Marks | None = None) -> PassContext:
        client = self.clients.get(mapping.connection_name)
        local = LocalTable(self.engine, mapping.local_table, mapping.local_key, mapping.name,
                           self.tables)
        for f in mapping.fields:
            if f.local_column:
                local.column(f.local_column, f"field {f.label}: local_column")
        remote = client.entity_set(mapping.entity_set, mapping.remote_key,
                                   mapping.remote_modified_on)
        report = None if on_progress is None else partial(on_progress, mapping.name, direction)
        return PassContext(
            engine=self.engine, mapping=mapping, local=local, remote=remote, client=client,
            lookups=Lookups(self.engine, mapping, self.tables), direction=direction, job_id=job_id,
            check_cancelled=check_cancelled, on_progress=report, marks=marks or Marks())


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[None]:
    """One run of a mapping at a time across every process (worker or CLI)."""
    with engine.connect() as conn:
        got = conn.scalar(sa.text("SELECT pg_try_advisory_lock(:s, hashtext(:n))"),
                          {"s": _LOCK_SPACE, "n": name})
        conn.commit()
        if not got:
            raise JobError(f"mapping {name} is being synchronized by another process")
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:s, hashtext(:n))"),
                         {"s": _LOCK_SPACE, "n": name})
            conn.commit()


def passes(direction: Direction) -> list[Direction]:
    passes = []
    if direction in (Direction.TO_INTEGRATION, Direction.BIDIRECTIONAL):
        passes.append(Direction.TO_INTEGRATION)
    if direction in (Direction.FROM_INTEGRATION, Direction.BIDIRECTIONAL):
        passes.append(Direction.FROM_INTEGRATION)
    return passes
