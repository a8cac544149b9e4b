"""``crmsync entries``: list, add and change job queue entries without writing SQL.

The table itself is the interface; this command only writes the same rows a user could
write with psql, and the database checks them the same way."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from worker.commands.common import open_engine
from worker.commands.entry_options import add_column_options, column_values
from worker.commands.output import interval, print_line, print_table, when
from worker.db.engine import translate_errors
from worker.errors import ConfigurationError
from worker.queue import columns, editing
from worker.queue.manager import QueueManager


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("entries", help="list, add and change job queue entries")
    actions = parser.add_subparsers(dest="entries_command", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="the entries with status, last run and next run")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)

    add = actions.add_parser(
        "add", help="add an entry",
        description="Add a job queue entry. Every column has an option, named as in "
                    "`entries edit`; what is not given takes the table's default (every 30 "
                    "minutes, every weekday, priority 1000, 10 attempts).")
    add_column_options(add, editing=False)
    add.add_argument("--once", action="store_true", help="not recurring: run once "
                                                         "(as --recurring no)")
    add.set_defaults(func=_add)

    edit = actions.add_parser(
        "edit", help="change columns of entries; a schedule change recomputes the next run",
        description="Set columns of job queue entries, with the options and values of "
                    "`entries add`; 'none' clears a column that may be empty. A change of "
                    "interval, weekdays, window, time zone, earliest start or expiry "
                    "recomputes the next run from the last run at once.")
    edit.add_argument("entries", nargs="+", metavar="ENTRY",
                      help="entry id or mapping name, e.g. 4 or CUSTOMER")
    add_column_options(edit, editing=True)
    edit.set_defaults(func=_edit)

    for name, func, text in (
        ("remove", _remove, "delete entries (not running ones); their run log stays"),
        ("hold", _hold, "put entries on hold"),
        ("restart", _restart, "back to ready with fresh attempts, next run by the rules"),
        ("run-now", _run_now, "make entries due at once"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("entries", nargs="+", metavar="ENTRY", help="entry id or mapping name")
        sub.set_defaults(func=func)


def _list(args: argparse.Namespace) -> int:
    rows = QueueManager(open_engine()).list_entries()
    if args.json:
        print(json.dumps(rows, default=_json_default, indent=2))
        return 0
    header = ("id", "kind", "mapping", "status", "every", "next run", "last run", "attempts",
              "last error")
    table = [header] + [(
        str(r["id"]), r["job_kind"], r["mapping_name"] or "", r["status"],
        interval(r["run_interval"]) if r["run_interval"] else "once", when(r["next_run_at"]),
        f"{when(r['last_run_at'])} {r['last_run_status'] or ''}".strip(),
        f"{r['attempts']}/{r['max_attempts']}", _why(r)[:60],
    ) for r in rows]
    print_table(table)
    return 0


def _add(args: argparse.Namespace) -> int:
    values = {k: v for k, v in column_values(args).items() if v is not None}
    if args.once:
        values["recurring"] = "false"
    if "job_kind" not in values:
        raise ConfigurationError("entries add: --kind (--job-kind) is required: sync_mapping, "
                                 "sync_all_modified, cleanup or audit")
    with translate_errors(), open_engine().begin() as conn:
        for name, value in values.items():
            column = columns.by_name(name)
            if column is not None:
                editing.check_value(conn, column, value)
        new_id = editing.add(conn, values)
    print(f"added job queue entry {new_id}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    values = column_values(args)
    if not values:
        raise ConfigurationError("entries edit: nothing to change (see --help for the columns)")
    engine = open_engine()
    with translate_errors(), engine.begin() as conn:
        refs = editing.resolve(conn, args.entries)
        for name, value in values.items():
            column = columns.by_name(name)
            assert column is not None
            if value is None and not column.nullable:
                raise ConfigurationError(f"{name}: cannot be cleared")
            editing.check_value(conn, column, value)
        for ref in refs:
            editing.update(conn, ref.id, values)
    return _report(engine, [r.id for r in refs], "changed")


def _remove(args: argparse.Namespace) -> int:
    with translate_errors(), open_engine().begin() as conn:
        refs = editing.resolve(conn, args.entries)
        removed = set(editing.remove(conn, [r.id for r in refs]))
    for ref in refs:
        state = "removed" if ref.id in removed else "is running: left alone (hold it first)"
        print_line(f"entry {ref.id} ({ref.label}) {state}")
    return 0 if len(removed) == len(refs) else 1


def _hold(args: argparse.Namespace) -> int:
    return _change(args, editing.hold, "on hold")


def _restart(args: argparse.Namespace) -> int:
    return _change(args, editing.restart, "restarted")


def _run_now(args: argparse.Namespace) -> int:
    return _change(args, editing.run_now, "due now")


def _change(args: argparse.Namespace, action: Callable[[Connection, list[int]], list[int]],
            done: str) -> int:
    engine = open_engine()
    with translate_errors(), engine.begin() as conn:
        refs = editing.resolve(conn, args.entries)
        changed = action(conn, [r.id for r in refs])
    status = _report(engine, changed, done)
    for ref in refs:
        if ref.id not in changed:
            print_line(f"entry {ref.id} ({ref.label}) is running: left alone")
            status = 1
    return status


def _report(engine: Engine, ids: list[int], done: str) -> int:
    """Recompute the flagged schedules now (a worker would within a second) and print each
    entry's next run."""
    QueueManager(engine).reschedule(ids)
    with translate_errors(), engine.connect() as conn:
        for row in editing.next_runs(conn, ids):
            print_line(f"entry {row.id} ({row.label}) {done}: {row.status}, next run "
                       f"{when(row.next_run_at)}")
    return 0


def _why(row: dict[str, Any]) -> str:
    """Why a waiting entry waits, else its last error."""
    if row["status"] == "waiting" and row.get("waiting_reason"):
        return str(row["waiting_reason"])
    return str(row["last_error"] or "")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
