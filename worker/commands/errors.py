"""``crmsync errors``: the record errors of synchronization jobs (NAV's Integration
Synchronization Errors), each with the record's business key (customer no …), its ids and
the whole message, wrapped to the terminal and never cut."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from typing import Any

from worker.commands.common import open_engine
from worker.commands.output import clean, when
from worker.errors import ConfigurationError
from worker.sync import joblog
from worker.sync import mappings as mapping_store

_ARROW = {"to_integration": "-> CRM", "from_integration": "<- CRM"}


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "errors", help="recent record errors of synchronization jobs, with business keys",
        description="Record errors of synchronization jobs, newest last: the record's "
                    "business key (the mapping's business_key_column), local and remote id, "
                    "and the whole message.")
    p.add_argument("mapping", nargs="?", help="only this mapping")
    p.add_argument("--record", metavar="KEY",
                   help="only this record: its business key, local id or remote id")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="a JSON array instead of text")
    p.set_defaults(func=_errors)


def _errors(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigurationError(f"errors: --limit {args.limit} must be at least 1")
    engine = open_engine()
    if args.mapping is not None:
        mapping_store.require_exists(engine, args.mapping)
    rows = joblog.errors(engine, mapping=args.mapping, record=args.record, limit=args.limit)
    if args.json:
        print(json.dumps([_as_json(r) for r in reversed(rows)], indent=2))
        return 0
    if not rows:
        print("no errors" + (f" of mapping {clean(args.mapping)}" if args.mapping else "")
              + (f" for record {clean(args.record)}" if args.record else ""))
        return 0
    wrap = max(40, shutil.get_terminal_size((100, 24)).columns - 4)
    for r in reversed(rows):
        print(_heading(r))
        ids = ", ".join(f"{side} {r[f'{side}_id']}" for side in ("local", "remote")
                        if r[f"{side}_id"])
        if ids:
            print(clean(f"    ids: {ids}"))
        _wrapped(r["message"], wrap)
        if r["detail"]:
            _wrapped(f"detail: {r['detail']}", wrap)
    return 0


def _wrapped(text: str, width: int) -> None:
    """``text`` on as many indented lines as it needs; nothing is cut."""
    for line in textwrap.wrap(clean(text), width, break_long_words=True,
                              break_on_hyphens=False) or [""]:
        print(f"    {line}")


def _heading(r: dict[str, Any]) -> str:
    record = r["business_key"] or r["local_id"] or r["remote_id"] or "?"
    return clean(f"{when(r['created_at'])}  {r['mapping_name']} "
                 f"{_ARROW.get(r['direction'], r['direction'])}  record {record}  "
                 f"job {r['job_id']}")


def _as_json(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "job_id": r["job_id"], "mapping": r["mapping_name"],
            "direction": r["direction"], "created_at": r["created_at"].isoformat(),
            "business_key": r["business_key"], "local_id": r["local_id"],
            "remote_id": r["remote_id"], "message": r["message"], "detail": r["detail"]}
