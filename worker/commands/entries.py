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
from worker.commands.output import print_line, print_table
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

    add = actions.add_parser("add", help="add an entry")
    add.add_argument("--kind", required=True,
                     choices=("sync_mapping", "sync_all_modified", "cleanup"))
    add.add_argument("--mapping", help="mapping name (required for sync_mapping)")
    add.add_argument("--every", default="30 minutes",
                     help="run interval as PostgreSQL reads it: '30 minutes', '2 s' "
                          "(default 30 minutes)")
    add.add_argument("--once", action="store_true", help="not recurring: run once")
    add.add_argument("--category", help="category code: one running entry per category")
    add.add_argument("--priority", type=int, default=1000, help="lower runs first")
    add.add_argument("--description", default="")
    add.add_argument("--time-zone", default="UTC")
    add.add_argument("--window", help="daily start window HH:MM-HH:MM (may cross midnight)")
    add.add_argument("--weekdays", help="ISO weekdays, e.g. 1,2,3,4,5")
    add.add_argument("--inactivity-timeout", help="e.g. '12 hours'")
    add.add_argument("--parameters", default="{}", help="JSON object")
    add.set_defaults(func=_add)

    edit = actions.add_parser(
        "edit", help="change columns of entries; a schedule change recomputes the next run",
        description="Set columns of job queue entries (values as PostgreSQL reads them; "
                    "'none' clears a column that may be empty). A change of interval, "
                    "weekdays, window, time zone, earliest start or expiry recomputes the "
                    "next run from the last run at once.")
    edit.add_argument("entries", nargs="+", metavar="ENTRY", help="entry id or mapping name")
    for column in columns.USER_COLUMNS:
        clears = "; 'none' clears it" if column.nullable else ""
        edit.add_argument(f"--{column.name.replace('_', '-')}", dest=f"set_{column.name}",
                          metavar="VALUE", help=f"e.g. {column.example}{clears}")
    edit.add_argument("--weekdays", help="ISO weekdays, e.g. 1,2,3,4,5 (run_on_weekdays)")
    edit.add_argument("--window", help="daily window HH:MM-HH:MM; 'none' clears it")
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
        str(r["run_interval"] or ""), _stamp(r["next_run_at"]),
        f"{_stamp(r['last_run_at'])} {r['last_run_status'] or ''}".strip(),
        f"{r['attempts']}/{r['max_attempts']}", _why(r)[:60],
    ) for r in rows]
    print_table(table)
    return 0


def _add(args: argparse.Namespace) -> int:
    try:
        parameters = json.loads(args.parameters)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--parameters: not JSON: {exc}") from exc
    start = end = None
    if args.window:
        start, sep, end = args.window.partition("-")
        if not sep:
            raise ConfigurationError("--window: expected HH:MM-HH:MM")
    values: dict[str, Any] = {
        "description": args.description, "job_kind": args.kind, "mapping_name": args.mapping,
        "parameters": json.dumps(parameters), "recurring": str(not args.once).lower(),
        "run_interval": args.every, "category_code": args.category,
        "priority": str(args.priority), "time_zone": args.time_zone,
        "starting_time": start, "ending_time": end,
        "inactivity_timeout": args.inactivity_timeout,
        "run_on_weekdays": "{" + args.weekdays.strip("{} ") + "}" if args.weekdays else None,
    }
    values = {k: v for k, v in values.items() if v is not None}
    with translate_errors(), open_engine().begin() as conn:
        for name, value in values.items():
            column = columns.by_name(name)
            if column is not None:
                editing.check_value(conn, column, value)
        new_id = editing.add(conn, values)
    print(f"added job queue entry {new_id}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    values = _edited_values(args)
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


def _edited_values(args: argparse.Namespace) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for column in columns.USER_COLUMNS:
        raw = getattr(args, f"set_{column.name}")
        if raw is not None:
            values[column.name] = None if raw.strip().lower() == "none" else raw
    if args.weekdays is not None:
        values["run_on_weekdays"] = "{" + args.weekdays.strip("{} ") + "}"
    if args.window is not None:
        if args.window.strip().lower() == "none":
            values["starting_time"] = values["ending_time"] = None
        else:
            start, sep, end = args.window.partition("-")
            if not sep:
                raise ConfigurationError("--window: expected HH:MM-HH:MM or none")
            values["starting_time"], values["ending_time"] = start.strip(), end.strip()
    return values


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
                       f"{_stamp(row.next_run_at)}")
    return 0


def _why(row: dict[str, Any]) -> str:
    """Why a waiting entry waits, else its last error."""
    if row["status"] == "waiting" and row.get("waiting_reason"):
        return str(row["waiting_reason"])
    return str(row["last_error"] or "")


def _stamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
