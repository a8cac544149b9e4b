"""``crmsync records MAPPING``: every record of a mapping that crmsync knows, with its
state (Heroku Connect's ``_hc_lastop`` / ``_hc_err``, BC's "Coupled to Dataverse" and the
record's synchronization errors), read from the view ``crmsync.record_status``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.commands.common import open_engine
from worker.commands.output import print_table, when, yes_no
from worker.sync import mappings as mapping_store
from worker.sync import record_status

HEADER = ("business key", "local id", "CRM id", "state", "skipped", "last synced",
          "last error at", "last error")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "records", help="every record of a mapping with its CRM state",
        description="Every record of a mapping that crmsync knows — coupled, failed, "
                    "skipped, in flight, waiting for a parent — business key first, from "
                    "the view crmsync.record_status.")
    p.add_argument("mapping", help="the mapping (crmsync mappings list shows them)")
    p.add_argument("--state", choices=record_status.STATES,
                   help="only records in this state (pending: a write in flight, or a "
                        "lookup waiting for its parent to be coupled)")
    p.add_argument("--json", action="store_true",
                   help="a JSON array of objects named as the view's columns")
    p.set_defaults(func=_records)


def _records(args: argparse.Namespace) -> int:
    engine = open_engine()
    mapping_store.require_exists(engine, args.mapping)
    rows = record_status.records(engine, args.mapping, state=args.state)
    if args.json:
        _print_json(rows)
        return 0
    table: list[tuple[Any, ...]] = [HEADER]
    table.extend((r["business_key"] or "-", r["local_id"] or "-", r["remote_id"] or "-",
                  r["state"], yes_no(r["skipped"]), when(r["last_synced_at"]),
                  when(r["last_error_at"]), _one_line(r["last_error"]))
                 for r in rows)
    if len(table) == 1:
        print(f"no records of mapping {args.mapping}"
              + (f" in state {args.state}" if args.state else ""))
        return 0
    print_table(table)
    return 0


def _print_json(rows: Any) -> None:
    """A JSON array written as it is read (a mapping may have very many records)."""
    print("[", end="")
    for n, r in enumerate(rows):
        doc = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in r.items()}
        print(("," if n else "") + "\n  " + json.dumps(doc), end="")
    print("\n]")


def _one_line(message: str | None) -> str:
    return "" if message is None else " ".join(message.split())
