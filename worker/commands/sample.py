"""``crmsync sample-data`` (schema ``erp`` with deterministic sample rows) and
``crmsync setup-defaults`` (the seven default mappings with their job queue entries)."""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import sqlalchemy as sa

from worker.commands.common import open_engine
from worker.commands.output import print_table
from worker.db.engine import translate_errors
from worker.errors import ConfigurationError
from worker.sample import data, defaults
from worker.sample.erp_schema import erp_schema_exists


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "sample-data", help="create the sample ERP schema erp and load sample rows (idempotent)")
    p.add_argument("--customers", type=int, default=data.DEFAULT_CUSTOMERS, metavar="N",
                   help=f"customers to create, ~2 contacts each (default {data.DEFAULT_CUSTOMERS})")
    p.add_argument("--salespeople", type=int, default=data.DEFAULT_SALESPEOPLE, metavar="K",
                   help="salespeople: the emulator's first K sample users "
                        f"(default {data.DEFAULT_SALESPEOPLE})")
    p.set_defaults(func=_sample_data)

    p = commands.add_parser(
        "setup-defaults",
        help="create the seven default mappings (the mapping document shipped as "
             "worker/sample/defaults.toml) and their job queue entries where missing")
    p.add_argument("--interval", default="30 minutes",
                   help="run interval of the entries as PostgreSQL reads it (default 30 minutes)")
    p.add_argument("--connection", default="crm", help="connection name (default crm)")
    p.add_argument("--overwrite", action="store_true",
                   help="restore changed default mappings, field mappings and schedules")
    p.set_defaults(func=_setup_defaults)


def _sample_data(args: argparse.Namespace) -> int:
    if not 0 <= args.customers <= 1_000_000:
        raise ConfigurationError(f"--customers: expected 0-1000000, got {args.customers}")
    if args.salespeople < 1:
        raise ConfigurationError("--salespeople must be at least 1")
    engine = open_engine()
    started = time.monotonic()
    summary = data.load_sample_data(engine, customers=args.customers,
                                    salespeople=args.salespeople)
    took = time.monotonic() - started
    rows: list[tuple[str, ...]] = [("table", "inserted", "total")]
    rows += [(t.table, str(t.inserted), str(t.total)) for t in summary.tables]
    print_table(rows)
    inserted = sum(t.inserted for t in summary.tables)
    print(f"{inserted} rows inserted in {took:.1f} s"
          + ("" if inserted else " (the sample data was already there)"))
    return 0


def _setup_defaults(args: argparse.Namespace) -> int:
    engine = open_engine()
    with translate_errors(), engine.connect() as conn:
        interval = conn.scalar(sa.text("SELECT CAST(:v AS interval)"), {"v": args.interval})
    if not isinstance(interval, timedelta) or interval <= timedelta(0):
        raise ConfigurationError(f"--interval {args.interval!r} must be a positive interval")
    summary = defaults.setup_defaults(engine, interval=interval, connection=args.connection,
                                      overwrite=args.overwrite)
    for line in describe(summary):
        print(line)
    if not erp_schema_exists(engine):
        print("note: the mapped tables of schema erp do not exist yet; "
              "create them with crmsync sample-data")
    return 0


def describe(summary: defaults.DefaultsSummary) -> list[str]:
    """The summary as lines for a terminal."""
    lines = []
    if summary.mappings_created:
        lines.append(f"mappings created: {', '.join(summary.mappings_created)}")
    if summary.mappings_restored:
        lines.append(f"mappings restored: {', '.join(summary.mappings_restored)}")
    if summary.mappings_skipped:
        lines.append(f"left alone (the name is used by a mapping of other tables): "
                     f"{', '.join(summary.mappings_skipped)}")
    if summary.dependencies_created:
        lines.append(f"dependencies created: {summary.dependencies_created}")
    if summary.field_mappings_created or summary.field_mappings_restored:
        lines.append(f"field mappings created: {summary.field_mappings_created}, "
                     f"restored: {summary.field_mappings_restored}")
    if summary.entries_created:
        lines.append(f"job queue entries created: {', '.join(summary.entries_created)}")
    if summary.entries_restored:
        lines.append(f"job queue entries restored: {summary.entries_restored}")
    if not summary.changed:
        lines.append("the default mappings and their job queue entries are all there; "
                     "nothing changed")
    return lines
