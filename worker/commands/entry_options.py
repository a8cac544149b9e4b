"""The options of ``entries add`` and ``entries edit``: one option per column users set,
under the column's own name (``--run-interval``) and, for the common ones, a short name
(``--every``), with the same values in both commands — intervals as PostgreSQL reads them
(``30 minutes``), weekdays as ``1,2,3,4,5``, booleans as ``yes``/``no``, a daily window as
``06:00-20:00``."""

from __future__ import annotations

import argparse

from worker.errors import ConfigurationError
from worker.queue import columns

# Short names for the columns set most often; the column's own name works as well.
SHORT_NAMES = {"job_kind": "--kind", "mapping_name": "--mapping", "run_interval": "--every",
               "category_code": "--category", "run_on_weekdays": "--weekdays"}

HELP = {
    "description": "free text shown in lists",
    "job_kind": "sync_mapping, sync_all_modified, cleanup or audit",
    "mapping_name": "the mapping a sync_mapping entry synchronizes",
    "parameters": "JSON object handed to the job, e.g. '{\"full\": true}'",
    "recurring": "yes: runs every interval; no: runs once",
    "run_interval": "how often it runs, e.g. '30 minutes', '2 hours'",
    "run_on_weekdays": "ISO weekdays it may run on, 1 (Monday) to 7, e.g. 1,2,3,4,5",
    "starting_time": "start of its daily window, e.g. 06:00 (see also --window)",
    "ending_time": "end of its daily window, e.g. 20:00",
    "time_zone": "IANA time zone of weekdays and window, e.g. Europe/Berlin",
    "earliest_start_at": "not before this time, e.g. '2026-12-01 08:00+01'",
    "expires_at": "not after this time, e.g. '2027-01-01 00:00+01'",
    "next_run_at": "its next run, e.g. '2026-12-01 08:00+01'",
    "max_attempts": "failed runs in a row before status error, e.g. 10",
    "rerun_delay": "wait after a failed run, e.g. '30 seconds'",
    "inactivity_timeout": "on hold this long after a run that changed nothing, e.g. '12 hours'",
    "category_code": "one running entry per category, e.g. CRM-CUST",
    "priority": "lower runs first when several are due, e.g. 1000",
    "job_timeout": "a run longer than this fails, e.g. '12 hours'",
}
YES = ("yes", "y", "true", "on", "1")
NO = ("no", "n", "false", "off", "0")


def add_column_options(parser: argparse.ArgumentParser, *, editing: bool) -> None:
    """One option per user column (and --window); with ``editing``, 'none' clears."""
    for column in columns.USER_COLUMNS:
        names = [f"--{column.name.replace('_', '-')}"]
        if column.name in SHORT_NAMES:
            names.append(SHORT_NAMES[column.name])
        clears = "; 'none' clears it" if editing and column.nullable else ""
        parser.add_argument(*names, dest=f"set_{column.name}", metavar="VALUE",
                            help=f"{HELP.get(column.name, column.name)}{clears}")
    clears = "; 'none' clears it" if editing else ""
    parser.add_argument("--window", metavar="HH:MM-HH:MM",
                        help=f"daily start window, may cross midnight, e.g. 22:00-06:00{clears}")


def column_values(args: argparse.Namespace) -> dict[str, str | None]:
    """The columns given, as PostgreSQL reads them (None: clear the column)."""
    values: dict[str, str | None] = {}
    for column in columns.USER_COLUMNS:
        raw = getattr(args, f"set_{column.name}")
        if raw is not None:
            values[column.name] = None if raw.strip().lower() == "none" \
                else _value(column.name, raw)
    if args.window is not None:
        values.update(_window(args.window))
    return values


def _value(name: str, raw: str) -> str:
    if name == "run_on_weekdays":
        return "{" + raw.strip().strip("{}").strip() + "}"
    if name == "recurring":
        word = raw.strip().lower()
        if word not in YES + NO:
            raise ConfigurationError(f"--recurring: expected yes or no, got {raw!r}")
        return "true" if word in YES else "false"
    return raw


def _window(raw: str) -> dict[str, str | None]:
    if raw.strip().lower() == "none":
        return {"starting_time": None, "ending_time": None}
    start, sep, end = raw.partition("-")
    if not sep:
        raise ConfigurationError(f"--window: expected HH:MM-HH:MM or none, got {raw!r}")
    return {"starting_time": start.strip(), "ending_time": end.strip()}
