"""``crmsync sync --plan``: print what a run would do (see worker/sync/plan.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.commands.common import open_app
from worker.commands.output import clean, print_table
from worker.errors import EXIT_OK, EXIT_RECORDS_FAILED, ConfigurationError
from worker.sync.plan import PassPlan, plan_run

HEADER = ("mapping", "direction", "inserted", "modified", "deleted", "unchanged", "skipped",
          "failed", "coupled", "conflicts")


def plan(args: argparse.Namespace) -> int:
    if args.record is not None or args.take or args.unconditional:
        raise ConfigurationError("--plan: not with --record, --take or --unconditional")
    if not args.all and not args.mappings:
        raise ConfigurationError("sync --plan: name mappings or use --all")
    sync = open_app().sync
    try:
        plans = plan_run(sync, None if args.all else list(args.mappings), full=args.full)
    finally:
        sync.clients.close()
    if args.json:
        print(json.dumps([p.as_json() for p in plans], indent=2, default=str))
    else:
        _print(plans)
    return plan_exit_status(plans)


def plan_exit_status(plans: list[PassPlan]) -> int:
    """As ``sync``: 1 when records would fail or a mapping cannot run."""
    if any(p.error or p.counts["failed"] for p in plans):
        return EXIT_RECORDS_FAILED
    return EXIT_OK


def _print(plans: list[PassPlan]) -> None:
    rows: list[tuple[str, ...]] = [HEADER]
    for p in plans:
        if p.error:
            rows.append((p.mapping, p.direction.value, *[""] * 7, ""))
            continue
        rows.append((p.mapping, p.direction.value,
                     *(str(p.counts[k]) for k in HEADER[2:-1]), str(p.conflicts)))
    print("plan: nothing has been written; the run would do this")
    print_table(rows)
    for p in plans:
        arrow = "→ CRM" if p.direction.value == "to_integration" else "← CRM"
        if p.error:
            print(clean(f"{p.mapping} {arrow}: would not run: {p.error}"))
            continue
        for counter, examples in p.examples.items():
            if counter == "unchanged":
                continue
            print(clean(f"{p.mapping} {arrow} {counter} ({p.counts[counter]}):"))
            for example in examples:
                print(clean("  " + _describe(example)))


def _describe(example: dict[str, Any]) -> str:
    who = example.get("business_key") or example.get("local_id") or example.get("crm_id")
    parts = [str(who)]
    if example.get("crm_id") and example.get("crm_id") != who:
        parts.append(f"(CRM {example['crm_id']})")
    for label, (old, new) in (example.get("fields") or {}).items():
        parts.append(f"{label}: {old!r} → {new!r}")
    if example.get("message"):
        parts.append(str(example["message"]))
    return " ".join(parts)
