"""Sync commands: ``sync``, ``jobs``, ``retry-skipped``, ``couple``, ``uncouple`` and
``check`` (``errors`` and ``mappings`` have modules of their own)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from worker.commands.common import open_app, open_engine
from worker.commands.output import clean, print_table, when
from worker.errors import EXIT_INTERNAL, EXIT_OK, EXIT_RECORDS_FAILED, ConfigurationError
from worker.sync import couplings as coupling_store
from worker.sync import joblog, records
from worker.sync import mappings as mapping_store
from worker.sync.engine import RunSummary
from worker.sync.model import Direction
from worker.sync.progress import Clock, PassProgress, done_of


def register(commands: argparse._SubParsersAction) -> None:
    _register_sync(commands)
    _register_records(commands)


def _register_sync(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sync", help="synchronize mappings now, in the foreground")
    p.add_argument("mappings", nargs="*", metavar="MAPPING",
                   help="mapping names, e.g. CUSTOMER (their dependencies first)")
    p.add_argument("--all", action="store_true",
                   help="every enabled mapping in dependency order (Synchronize Modified Records)")
    p.add_argument("--full", action="store_true",
                   help="clear the high-water marks: read every record again")
    p.add_argument("--unconditional", action="store_true",
                   help="with --full: also forget what was synced, so coupled records "
                        "count as changed")
    p.add_argument("--record", metavar="KEY",
                   help="synchronize one record of one mapping now, skipped or not; KEY is "
                        "its local key, its business key (e.g. a customer no.) or its CRM id")
    p.add_argument("--take", choices=("local", "remote"),
                   help="with --record: the ERP's (local) or the CRM's (remote) values win "
                        "every field; settles an update conflict in one step")
    p.add_argument("--plan", action="store_true",
                   help="show what the run would do (per mapping and direction, with up to "
                        "20 examples each) and write nothing: only GET requests reach the CRM")
    p.add_argument("--json", action="store_true", help="with --plan: as a JSON list")
    p.epilog = ("exit status: 0 everything synced; 1 records failed or a mapping was held "
                "back (a mapping it depends on failed); 2 configuration error; 3 database "
                "unreachable or not upgraded; 4 CRM connection failure")
    p.set_defaults(func=_sync)


def _register_records(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("jobs", help="recent synchronization jobs with their counts")
    p.add_argument("--mapping", help="only the jobs of this mapping, e.g. CUSTOMER")
    p.add_argument("--limit", type=int, default=30, help="at most this many (default 30)")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=_jobs)

    p = commands.add_parser("retry-skipped", help="let skipped records be synchronized again")
    p.add_argument("mapping", nargs="?", help="only this mapping (default: every mapping)")
    p.set_defaults(func=_retry_skipped)

    p = commands.add_parser(
        "couple", help="couple a record to a chosen CRM record, or records by matching values",
        description="crmsync couple MAPPING KEY REMOTE_ID couples one record (NAV's 'Couple "
                    "to...'); crmsync couple --match MAPPING couples by matching field values.")
    p.add_argument("target", nargs="*", metavar="MAPPING KEY REMOTE_ID",
                   help="couple the record with local KEY of MAPPING to the CRM record "
                        "REMOTE_ID")
    p.add_argument("--match", metavar="MAPPING",
                   help="couple every uncoupled record of MAPPING to the CRM record with the "
                        "same match values")
    p.add_argument("--create-missing", action="store_true",
                   help="with --match: create records without a match in the CRM")
    p.add_argument("--take", choices=("local", "remote"),
                   help="with KEY REMOTE_ID: synchronize the record at once, the ERP's "
                        "(local) or the CRM's (remote) values winning every field")
    p.set_defaults(func=_couple)

    p = commands.add_parser("uncouple", help="remove couplings of a mapping")
    p.add_argument("mapping", help="the mapping whose couplings go, e.g. CUSTOMER")
    p.add_argument("--local-id", action="append", help="only these local ids (repeatable)")
    p.set_defaults(func=_uncouple)

    p = commands.add_parser("check", help="validate every mapping against database and CRM")
    p.set_defaults(func=_check)


class ProgressView:
    """``crmsync sync``'s progress on stderr. On a terminal: the running pass redrawn in
    place (done / total, rate, ETA; at most ten times a second) and a line for each pass
    that ends; a log line written meanwhile (see :meth:`sharing`) goes above the running
    line, never onto it. Elsewhere (a pipe, a file, the journal): one summary line per pass
    and no control codes."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self._passes: dict[tuple[str, Direction], PassProgress] = {}
        self._drawn = float("-inf")
        self._line = ""  # the running line on the terminal now ("": none)
        self._lock = threading.RLock()  # two chunks of a pass may report at once

    def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
        with self._lock:
            self._passes[(progress.mapping, progress.direction)] = progress
            now = self.clock()
            if self.tty and (now - self._drawn >= 0.1 or not +counts):
                self._drawn = now
                self._line = clean(progress.describe())
                self._write("\r\x1b[K" + self._line)

    @contextmanager
    def sharing(self, logger: logging.Logger | None = None) -> Iterator[None]:
        """While in it, ``logger``'s (the root logger's) handlers that write to this
        terminal clear the running line before a record and draw it again after it."""
        logger = logger or logging.getLogger()
        kept = list(logger.handlers)
        if self.tty:
            logger.handlers[:] = [_AboveLine(h, self) if isinstance(h, logging.StreamHandler)
                                  and h.stream is self.stream else h for h in kept]
        try:
            yield
        finally:
            logger.handlers[:] = kept

    def write_above(self, handler: logging.Handler, record: logging.LogRecord) -> None:
        with self._lock:
            if self._line:
                self._write("\r\x1b[K")
            handler.handle(record)
            if self._line:
                self._write(self._line)

    def pass_finished(self, mapping: str, direction: Direction, counts: Counter[str],
                      error: str | None) -> None:
        with self._lock:
            progress = self._passes.pop((mapping, direction), None)
            if progress is None:  # it ended before its first chunk
                progress = PassProgress(mapping, direction, clock=self.clock)
                progress.add(counts)
            # The reason of a failed pass is printed once, with the run's summary below.
            self._line = ""
            self._write(("\r\x1b[K" if self.tty else "")
                        + clean(progress.summary("see below" if error else None)) + "\n")

    def mapping_finished(self, mapping: str, ok: bool) -> None: ...

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class _AboveLine(logging.Handler):
    """A handler of the terminal that :class:`ProgressView` draws on, writing above its
    running line."""

    def __init__(self, inner: logging.Handler, view: ProgressView) -> None:
        super().__init__(inner.level)
        self.inner, self.view = inner, view

    def handle(self, record: logging.LogRecord) -> bool:
        self.view.write_above(self.inner, record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() does it all
        self.view.write_above(self.inner, record)


def _sync(args: argparse.Namespace) -> int:
    if args.plan:
        from worker.commands.plan import plan

        return plan(args)
    if args.json:
        raise ConfigurationError("--json: only with --plan")
    if args.record is not None:
        return _sync_record(args)
    if args.take:
        raise ConfigurationError("--take: only with --record KEY")
    if not args.all and not args.mappings:
        raise ConfigurationError("sync: name mappings or use --all")
    view = ProgressView()
    app = open_app(pass_observers=[view])
    sync, engine = app.sync, app.engine
    names = None if args.all else list(args.mappings)
    targets = names or list(mapping_store.dependencies(engine))
    if args.full:
        mapping_store.clear_marks(engine, targets)
        if args.unconditional:
            coupling_store.clear_stamps(engine, targets)
    try:
        with view.sharing():
            summaries = sync.run_all(names)
    finally:
        sync.clients.close()
    _print_summaries(summaries)
    return sync_exit_status(summaries)


def sync_exit_status(summaries: list[RunSummary]) -> int:
    """0 all synced; the error's status (2 configuration, 3 database, 4 CRM connection)
    when a mapping run failed; 1 when records failed or a mapping was held back."""
    for s in summaries:
        if s.error and not s.held_back:
            return s.exit_status or EXIT_INTERNAL
    if any(s.held_back or s.counts["failed"] for s in summaries):
        return EXIT_RECORDS_FAILED
    return EXIT_OK


def _print_summaries(summaries: list[RunSummary]) -> None:
    header = ("mapping", "direction", "inserted", "modified", "deleted", "unchanged",
              "skipped", "failed", "coupled", "uncoupled")
    rows: list[tuple[str, ...]] = [header]
    for s in summaries:
        if s.error and not s.passes:
            rows.append((s.mapping, "HELD BACK" if s.held_back else "FAILED", *[""] * 8))
        for p in s.passes:
            rows.append((s.mapping, p.direction.value,
                         *(str(p.counts.get(k, 0)) for k in header[2:])))
    print_table(rows)
    for s in summaries:  # whole messages, never cut; the mapping named once
        if s.error:
            print(clean(f"{s.mapping}: {s.error.removeprefix(f'mapping {s.mapping}: ')}"))


JOB_COUNTS = ("inserted", "modified", "deleted", "unchanged", "skipped", "failed")


def job_pace(row: dict[str, Any], now: datetime) -> tuple[float, float | None]:
    """(seconds, records per second) of a job: until it finished, or until ``now`` while
    it runs; the rate counts every record the job has dealt with so far — its counters,
    which grow as each chunk commits (None before any, or in its first tenth of a
    second)."""
    end = row["finished_at"] or now
    seconds = max(0.0, (end - row["started_at"]).total_seconds())
    done = done_of(row)
    return seconds, (done / seconds if done and seconds >= 0.1 else None)


def _jobs(args: argparse.Namespace) -> int:
    rows = joblog.recent(open_engine(), mapping=args.mapping, limit=args.limit)
    now = datetime.now(UTC)
    for row in rows:
        seconds, rate = job_pace(row, now)
        row["elapsed_seconds"] = round(seconds, 1)
        row["records_per_second"] = round(rate, 1) if rate is not None else None
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
        return 0
    header = ("job", "mapping", "direction", "started", "seconds", "rec/s", "status", "ins",
              "mod", "del", "unch", "skip", "fail", "coup", "message")
    table = [header]
    for r in reversed(rows):
        rate = r["records_per_second"]
        table.append((str(r["id"]), r["mapping_name"], r["direction"], when(r["started_at"]),
                      f"{r['elapsed_seconds']:.1f}", f"{rate:.0f}" if rate is not None else "",
                      r["status"], *(str(r[k]) for k in (*JOB_COUNTS, "coupled")),
                      r["message"] or ""))
    print_table(table)
    return 0


def _retry_skipped(args: argparse.Namespace) -> int:
    n = coupling_store.retry_skipped(open_engine(), args.mapping)
    print(f"{n} skipped records will be synchronized again")
    return 0


TAKE = {"local": Direction.TO_INTEGRATION, "remote": Direction.FROM_INTEGRATION}


def _sync_record(args: argparse.Namespace) -> int:
    if args.all or len(args.mappings) != 1 or args.full:
        raise ConfigurationError("--record: name exactly one mapping (no --all, no --full)")
    sync = open_app().sync
    try:
        ref = records.find(sync.engine, args.mappings[0], args.record)
        coupling_store.retry_skipped(sync.engine, args.mappings[0], ref.local_id)
        summary = sync.sync_record(args.mappings[0], ref.local_id, ref.remote_id,
                                   take=TAKE.get(args.take or ""))
    finally:
        sync.clients.close()
    _print_summaries([summary])
    return sync_exit_status([summary])


def _couple(args: argparse.Namespace) -> int:
    from worker.sync.matching import couple_by_match

    if args.target:
        return _couple_one(args)
    if not args.match:
        raise ConfigurationError("couple: give MAPPING KEY REMOTE_ID, or --match MAPPING")

    sync = open_app().sync
    result = couple_by_match(sync, args.match, create_missing=args.create_missing)
    print(f"coupled {len(result.coupled)}, ambiguous {len(result.ambiguous)}, "
          f"without match {len(result.unmatched)}"
          + (f", created {result.created.get('inserted', 0)}" if args.create_missing else ""))
    for local_id, candidates in result.ambiguous:
        print(clean(f"  ambiguous: {local_id} matches {', '.join(candidates)}"))
    return 0


def _couple_one(args: argparse.Namespace) -> int:
    if len(args.target) != 3 or args.match or args.create_missing:
        raise ConfigurationError("couple: give exactly MAPPING KEY REMOTE_ID (or --match "
                                 "MAPPING alone)")
    name, key, remote_id = args.target
    sync = open_app().sync
    try:
        ref = records.couple(sync.engine, sync.clients, name, key, remote_id)
        print(clean(f"{name}: {key} coupled to {remote_id}"))
        if args.take is None:
            return EXIT_OK
        summary = sync.sync_record(name, ref.local_id, ref.remote_id, take=TAKE[args.take])
    finally:
        sync.clients.close()
    _print_summaries([summary])
    return sync_exit_status([summary])


def _uncouple(args: argparse.Namespace) -> int:
    n = coupling_store.uncouple(open_engine(), args.mapping, args.local_id)
    print(f"{n} couplings removed")
    return 0


def _check(args: argparse.Namespace) -> int:
    from worker.sync.check import check_all

    sync = open_app().sync
    problems = check_all(sync.engine, sync.clients)
    for p in problems:
        print(clean(p))
    if not problems:
        print("every enabled mapping is valid")
    for note in mapping_store.creating_nothing(sync.engine):
        print(clean(note))
    return 1 if problems else 0
