"""``crmsync status``: job queue entries with their last run and counts, and the workers
with their heartbeat age; ``--json`` for scripts."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.commands.common import open_engine
from worker.commands.output import print_table, when
from worker.db.engine import translate_errors

_ENTRIES = sa.text(
    """
    SELECT e.id, e.job_kind, e.mapping_name, e.status, e.run_interval, e.next_run_at,
           e.attempts, e.max_attempts, e.last_error, e.category_code, e.locked_by,
           e.waiting_reason,
           l.started_at AS last_run_at, l.status AS last_outcome,
           COALESCE(j.inserted, 0) AS inserted, COALESCE(j.modified, 0) AS modified,
           COALESCE(j.deleted, 0) AS deleted, COALESCE(j.unchanged, 0) AS unchanged,
           COALESCE(j.skipped, 0) AS skipped, COALESCE(j.failed, 0) AS failed
      FROM crmsync.job_queue_entries e
      LEFT JOIN LATERAL (
           SELECT id, started_at, status FROM crmsync.job_queue_log_entries
            WHERE entry_id = e.id ORDER BY started_at DESC LIMIT 1) l ON true
      LEFT JOIN LATERAL (
           SELECT sum(inserted) AS inserted, sum(modified) AS modified,
                  sum(deleted) AS deleted, sum(unchanged) AS unchanged,
                  sum(skipped) AS skipped, sum(failed) AS failed
             FROM crmsync.sync_jobs WHERE job_queue_log_entry_id = l.id) j ON true
     ORDER BY e.priority, e.id
    """)

_WORKERS = sa.text(
    "SELECT id, hostname, pid, version, concurrency, started_at, "
    "extract(epoch FROM now() - heartbeat_at) AS heartbeat_age "
    "FROM crmsync.workers ORDER BY started_at")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("status", help="job queue entries, last runs and workers")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_status)


def read_status(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with translate_errors(), engine.connect() as conn:
        entries = [dict(r) for r in conn.execute(_ENTRIES).mappings()]
        workers = [dict(r) for r in conn.execute(_WORKERS).mappings()]
    return {"entries": entries, "workers": workers}


def entry_rows(entries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("id", "entry", "status", "last run", "outcome",
                                    "ins/mod/del/unch/skip/fail", "next run", "attempts",
                                    "last error")]
    for e in entries:
        counts = "/".join(str(e[k]) for k in ("inserted", "modified", "deleted", "unchanged",
                                              "skipped", "failed"))
        rows.append((str(e["id"]), e["mapping_name"] or e["job_kind"], e["status"],
                     when(e["last_run_at"]), e["last_outcome"] or "-", counts,
                     when(e["next_run_at"]), f"{e['attempts']}/{e['max_attempts']}",
                     ((e["status"] == "waiting" and e["waiting_reason"])
                      or e["last_error"] or "")[:50]))
    return rows


def _status(args: argparse.Namespace) -> int:
    status = read_status(open_engine())
    if args.json:
        print(json.dumps(status, default=_json_default, indent=2))
        return 0
    print_table(entry_rows(status["entries"]))
    print()
    workers: list[tuple[str, ...]] = [("worker", "version", "concurrency", "heartbeat age")]
    workers += [(w["id"], w["version"], str(w["concurrency"]), f"{w['heartbeat_age']:.1f} s")
                for w in status["workers"]]
    if len(workers) == 1:
        print("no worker is running")
    else:
        print_table(workers)
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
