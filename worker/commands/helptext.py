"""What every sub-command's ``--help`` says beyond its options: a description (when the
command's module gives none) and an example, in one table so that they read alike."""

from __future__ import annotations

# command -> (description, or "" to keep the module's own; an example)
HELP: dict[str, tuple[str, str]] = {
    "db upgrade": ("Apply the schema revisions of schema crmsync up to REVISION (default: "
                   "the newest). Idempotent: a no-op when the schema is current.",
                   "crmsync db upgrade"),
    "db current": ("Print the applied and the expected schema revision; exit status 3 when "
                   "they differ.", "crmsync db current"),
    "run": ("Run the worker (for systemd): claim due job queue entries, run them and record "
            "their outcomes until SIGTERM; serves /metrics, /healthz and /readyz.",
            "crmsync --env-file /etc/crmsync/crmsync.env run --concurrency 4"),
    "entries list": ("List the job queue entries with status, run interval, next run, last "
                     "run and attempts.", "crmsync entries list --json"),
    "entries add": ("", "crmsync entries add --kind sync_mapping --mapping CUSTOMER "
                        "--every '15 minutes' --weekdays 1,2,3,4,5 --window 06:00-20:00"),
    "entries edit": ("", "crmsync entries edit CUSTOMER --every '1 hour' --window none"),
    "entries remove": ("Delete entries (a running one is left alone: hold it first); their "
                       "run log stays.", "crmsync entries remove 7"),
    "entries hold": ("Put entries on hold: they do not run until restarted.",
                     "crmsync entries hold CUSTOMER CONTACTS"),
    "entries restart": ("Set entries back to ready with fresh attempts; the next run follows "
                        "their schedule.", "crmsync entries restart 4"),
    "entries run-now": ("Make entries due at once; a running worker starts them within "
                        "seconds.", "crmsync entries run-now CUSTOMER"),
    "emulator": ("", "crmsync emulator --port 8080 --sample-users 5"),
    "sync": ("Synchronize mappings now, in the foreground and in dependency order, or one "
             "record of one mapping; exit status 1 when records failed.",
             "crmsync sync CUSTOMER CONTACTS; crmsync sync CUSTOMER --record C00012 "
             "--take local"),
    "jobs": ("The recent synchronization jobs (NAV's Integration Synchronization Jobs) with "
             "their inserted / modified / deleted / unchanged / skipped / failed counts.",
             "crmsync jobs --mapping CUSTOMER --limit 10"),
    "retry-skipped": ("Let the records skipped after repeated failures be synchronized again "
                      "at the next run.", "crmsync retry-skipped CUSTOMER"),
    "couple": ("", "crmsync couple CUSTOMER C00012 9f3c1e2a-…; crmsync couple --match "
                   "CUSTOMER --create-missing"),
    "uncouple": ("Remove the couplings of a mapping (all, or of the given local ids); the "
                 "records stay on both sides.", "crmsync uncouple CUSTOMER --local-id C00012"),
    "check": ("Check every enabled mapping against the database and the CRM's $metadata; "
              "each problem names mapping and field.", "crmsync check"),
    "mappings list": ("List the mappings: enabled, tables, direction, triggers, dependencies "
                      "and couplings.", "crmsync mappings list"),
    "mappings enable": ("Enable mappings and install their change-capture triggers.",
                        "crmsync mappings enable ITEM-PRODUCT"),
    "mappings disable": ("Disable mappings and drop their change-capture triggers.",
                         "crmsync mappings disable ITEM-PRODUCT"),
    "mappings export": ("Write mappings, field mappings and dependencies (and entries) as one "
                        "TOML document.", "crmsync mappings export CUSTOMER --entries -o "
                                          "customer.toml"),
    "mappings apply": ("Validate a TOML mapping document with check's rules and apply it in "
                       "one transaction.", "crmsync mappings apply customer.toml --dry-run"),
    "errors": ("", "crmsync errors CUSTOMER --record C00012"),
    "audit": ("", "crmsync audit CUSTOMER --json; crmsync audit --all --fix"),
    "records": ("", "crmsync records CUSTOMER --state failed; crmsync records CONTACTS --json"),
    "status": ("The job queue entries with their last run, outcome, counts and next run, and "
               "the registered workers.", "crmsync status"),
    "demo": ("Everything on one machine: the embedded PostgreSQL, a local CRM test server, "
             "the sample ERP data, the seven default mappings and a worker, with edits on "
             "both sides flowing while you watch (Ctrl-C stops it).",
             "crmsync demo --duration 60 --customers 50"),
    "sample-data": ("Create the documented sample ERP schema erp and fill it.",
                    "crmsync sample-data --customers 200"),
    "setup-defaults": ("Create the seven default mappings and their job queue entries; what "
                       "exists is kept unless --overwrite.",
                       "crmsync setup-defaults --interval '15 minutes'"),
}


def describe(command: str, description: str | None, epilog: str | None) -> tuple[str, str]:
    """The description and epilog of ``command``'s --help: the table's, the example first."""
    text, example = HELP.get(command, ("", ""))
    example_lines = "\n".join(f"  {e.strip()}" for e in example.split(";")) if example else ""
    epilog = "\n".join(filter(None, (f"example:\n{example_lines}" if example else "", epilog)))
    return description or text, epilog
