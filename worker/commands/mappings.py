"""``crmsync mappings``: list, enable and disable mappings, and keep them as a file —
``export`` writes mappings, field mappings, dependencies (and job queue entries) as one TOML
document, ``apply`` validates a document and applies it in one transaction
(docs/mappings.md describes the format)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.commands.common import open_engine
from worker.commands.output import clean, print_table, yes_no
from worker.errors import EXIT_USAGE, ConfigurationError
from worker.sync import capture, document_apply
from worker.sync import mappings as mapping_store
from worker.sync.documents import DocumentInvalid


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("mappings", help="list, enable, disable, export or apply mappings")
    actions = p.add_subparsers(dest="mappings_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="the mappings").set_defaults(func=_list_mappings)
    for name, enabled in (("enable", True), ("disable", False)):
        sub = actions.add_parser(name, help=f"{name} mappings and their change-capture triggers")
        sub.add_argument("names", nargs="+", metavar="NAME",
                         help="mapping names, e.g. ITEM-PRODUCT")
        sub.set_defaults(func=_set_enabled, enabled=enabled)

    sub = actions.add_parser(
        "export", help="write mappings as a TOML mapping document (stdout or --output)")
    sub.add_argument("names", nargs="*", metavar="NAME", help="only these mappings")
    sub.add_argument("--entries", action="store_true",
                     help="with the mappings' job queue entries (their schedules)")
    sub.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    sub.set_defaults(func=_export)

    sub = actions.add_parser(
        "apply", help="validate a mapping document and apply it in one transaction")
    sub.add_argument("file", metavar="FILE", help="the TOML mapping document ('-': stdin)")
    sub.add_argument("--dry-run", action="store_true",
                     help="validate and show what would change; write nothing")
    sub.add_argument("--prune", action="store_true",
                     help="remove mappings that are not in the document (with their "
                          "couplings and entries)")
    sub.set_defaults(func=_apply)


def _export(args: argparse.Namespace) -> int:
    text = document_apply.export(open_engine(), args.names, entries=args.entries)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        count = sum(line.startswith("[mappings.") for line in text.splitlines())
        print(f"wrote {count} mappings to {clean(args.output)}")
    else:
        sys.stdout.write(text)
    return 0


def _apply(args: argparse.Namespace) -> int:
    text = _read(args.file)
    try:
        outcome = document_apply.apply(open_engine(), text, dry_run=args.dry_run,
                                       prune=args.prune)
    except DocumentInvalid as exc:
        for path, message in exc.problems:
            print(clean(f"crmsync: error: {args.file}: {path}: {message}"), file=sys.stderr)
        print(f"crmsync: error: {args.file}: {len(exc.problems)} problem(s); nothing applied",
              file=sys.stderr)
        return EXIT_USAGE
    for line in outcome.plan.lines():
        print(clean(line))
    for note in outcome.notes:
        print(clean(note))
    if outcome.plan.empty:
        print("no changes")
    elif outcome.applied:
        print(f"applied {len(outcome.plan.changes)} changes")
    else:
        print(f"dry run: {len(outcome.plan.changes)} changes, nothing written")
    return 0


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"mappings apply: {name}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"mappings apply: {name}: not UTF-8 text ({exc.reason})") \
            from exc


def _list_mappings(args: argparse.Namespace) -> int:
    engine = open_engine()
    rows = mapping_store.summaries(engine)
    table = [("mapping", "enabled", "local", "remote", "direction", "only coupled", "triggers",
              "depends on", "couplings")]
    table += [(r["name"], yes_no(r["enabled"]), r["local_table"] or "", r["entity_set"] or "",
               r["direction"], yes_no(r["sync_only_coupled"]), yes_no(r["triggers_installed"]),
               r["depends_on"] or "", str(r["couplings"])) for r in rows]
    print_table(table)
    return 0


def _set_enabled(args: argparse.Namespace) -> int:
    engine = open_engine()
    for name in args.names:
        mapping = mapping_store.load(engine, name)
        print(clean(f"{name}: {'enabled' if args.enabled else 'disabled'}, "
                    f"{capture.set_enabled(engine, mapping, args.enabled)}"))
    return 0
