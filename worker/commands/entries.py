"""``crmsync entries``: list, add and change job queue entries without writing SQL.

The table itself is the interface; this command only writes the same rows a user could
write with psql, and the database checks them the same way."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worker.commands.common import open_engine
from worker.commands.output import print_table
from worker.db.engine import translate_errors
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

    for name, status, text in (
        ("hold", "on_hold", "put entries on hold"),
        ("restart", "ready", "set entries back to ready (resets attempts)"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("ids", nargs="+", type=int)
        sub.set_defaults(func=_set_status, status=status)

    now = actions.add_parser("run-now", help="make entries due at once")
    now.add_argument("ids", nargs="+", type=int)
    now.set_defaults(func=_run_now)


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
        f"{r['attempts']}/{r['max_attempts']}", (r["last_error"] or "")[:60],
    ) for r in rows]
    print_table(table)
    return 0


def _add(args: argparse.Namespace) -> int:
    try:
        parameters = json.loads(args.parameters)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"crmsync entries add: --parameters is not JSON: {exc}") from exc
    start = end = None
    if args.window:
        try:
            start, end = args.window.split("-")
        except ValueError as exc:
            raise SystemExit("crmsync entries add: --window must be HH:MM-HH:MM") from exc
    values: dict[str, Any] = {
        "description": args.description, "job_kind": args.kind, "mapping_name": args.mapping,
        "parameters": json.dumps(parameters), "recurring": not args.once,
        "run_interval": args.every, "category_code": args.category, "priority": args.priority,
        "time_zone": args.time_zone, "starting_time": start, "ending_time": end,
        "inactivity_timeout": args.inactivity_timeout,
        "weekdays": [int(d) for d in args.weekdays.split(",")] if args.weekdays else None,
    }
    with translate_errors(), open_engine().begin() as conn:
        new_id = conn.scalar(sa.text(
            """
            INSERT INTO crmsync.job_queue_entries
                   (description, job_kind, mapping_name, parameters, recurring, run_interval,
                    category_code, priority, time_zone, starting_time, ending_time,
                    inactivity_timeout, run_on_weekdays)
            VALUES (:description, :job_kind, :mapping_name, CAST(:parameters AS jsonb),
                    :recurring, CAST(:run_interval AS interval), :category_code, :priority,
                    :time_zone, CAST(:starting_time AS time), CAST(:ending_time AS time),
                    CAST(:inactivity_timeout AS interval),
                    COALESCE(CAST(:weekdays AS smallint[]), '{1,2,3,4,5,6,7}'))
            RETURNING id
            """), values)
    print(f"added job queue entry {new_id}")
    return 0


def _set_status(args: argparse.Namespace) -> int:
    with translate_errors(), open_engine().begin() as conn:
        changed = conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET status = :status "
            "WHERE id = ANY(:ids) AND status <> 'in_process'"),
            {"status": args.status, "ids": args.ids}).rowcount
    print(f"{changed} of {len(args.ids)} entries set to {args.status} "
          "(running ones are left alone)")
    return 0 if changed == len(args.ids) else 1


def _run_now(args: argparse.Namespace) -> int:
    with translate_errors(), open_engine().begin() as conn:
        changed = conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET next_run_at = now(), "
            "status = CASE WHEN status = 'on_hold_inactivity' THEN 'ready' ELSE status END "
            "WHERE id = ANY(:ids)"), {"ids": args.ids}).rowcount
    print(f"{changed} entries due now")
    return 0


def _stamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
