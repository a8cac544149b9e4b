"""``crmsync audit``: coupled records whose two sides differ without a captured change (see
worker/sync/audit.py), printed as they are found; ``--fix`` puts them on the next run's
retry list. Exit status 1 when drift was found or a mapping could not be audited."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.commands.common import open_app
from worker.commands.output import clean, print_table
from worker.errors import EXIT_OK, EXIT_RECORDS_FAILED, ConfigurationError
from worker.sync.audit import MappingAudit, audit_run
from worker.sync.drift import RecordDrift

HEADER = ("mapping", "audited", "drifted", "fixed")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "audit", help="find coupled records whose sides differ without a captured change",
        description="Read both sides of the coupled records (GET requests only, in chunks) "
                    "and compare them with each other and with each coupling's snapshot: "
                    "report every record whose values differ without a captured change "
                    "(an ERP row written with triggers off, a CRM change that did not move "
                    "modifiedon) with business key, CRM id, the fields, both values and "
                    "the side that moved. Writes nothing, unless --fix.")
    p.add_argument("mappings", nargs="*", metavar="MAPPING", help="the mappings to audit")
    p.add_argument("--all", action="store_true", help="every enabled mapping")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: the drifted records and a summary per mapping")
    p.add_argument("--fix", action="store_true",
                   help="make the next run carry the drifted records: the side that moved "
                        "wins; both moved: the mapping's update-conflict rule")
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    if args.all == bool(args.mappings):
        raise ConfigurationError("audit: name mappings or use --all (not both)")
    sync = open_app().sync
    printer = _JsonPrinter() if args.json else _TextPrinter()
    try:
        results = audit_run(sync, None if args.all else list(args.mappings), fix=args.fix,
                            on_drift=printer.record)
    finally:
        sync.clients.close()
    printer.finish(results, fixed=args.fix)
    if any(r.error or r.drifted for r in results):
        return EXIT_RECORDS_FAILED
    return EXIT_OK


class _TextPrinter:
    def record(self, mapping: str, d: RecordDrift) -> None:
        who = d.business_key if d.business_key is not None else d.coupling.local_id
        print(clean(f"{mapping} {who} (CRM {d.coupling.remote_id}): moved: {d.moved}"))
        for f in d.fields:
            print(clean(f"  {f.field.label}: ERP {f.erp!r}, CRM {f.crm!r} (moved: {f.moved})"))

    def finish(self, results: list[MappingAudit], *, fixed: bool) -> None:
        print_table([HEADER, *((r.mapping, r.audited, r.drifted, r.fixed) for r in results)])
        for r in results:
            if r.error:
                print(clean(f"{r.mapping}: not audited: {r.error}"))
        if not fixed:
            print("audit: nothing has been written" + (
                "; crmsync audit --fix makes the next run carry the drifted records"
                if any(r.drifted for r in results) else ""))
        else:
            print(f"audit: {sum(r.fixed for r in results)} records put on the next run's "
                  "retry list")


class _JsonPrinter:
    """One JSON object written as the records are found (memory stays flat)."""

    def __init__(self) -> None:
        self.n = 0

    def record(self, mapping: str, d: RecordDrift) -> None:
        doc: dict[str, Any] = {"mapping": mapping, **d.as_json()}
        print(('{"records": [' if not self.n else ",") + "\n  "
              + json.dumps(doc, default=str), end="")
        self.n += 1

    def finish(self, results: list[MappingAudit], *, fixed: bool) -> None:
        mappings = json.dumps([r.as_json() for r in results], indent=2)
        print(('{"records": [' if not self.n else "") + f'\n], "mappings": {mappings}}}')
