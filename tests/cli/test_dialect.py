"""One dialect for the whole command line: ``entries add`` and ``entries edit`` take the
same options with the same values, every sub-command's ``--help`` has a description and an
example and every option a help text, times show date and zone, intervals read as people
write them, booleans as yes/no."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.cli.helpers import base_env, crmsync
from tests.cli.test_bad_input import COMMANDS
from worker.cli import build_parser
from worker.commands.output import interval, yes_no
from worker.sample.defaults import setup_defaults

STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [A-Z][A-Za-z0-9+-]*"


def leaf(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in command.split():
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def test_every_sub_command_has_a_description_an_example_and_help_for_every_option() -> None:
    problems = []
    for command in COMMANDS:
        parser = leaf(command)
        if not parser.description:
            problems.append(f"{command}: no description")
        if not re.search(rf"example:\n\s+crmsync .*\b{command.split()[-1]}\b",
                         parser.epilog or ""):
            problems.append(f"{command}: no example")
        problems += [f"{command}: {a.option_strings or a.dest} has no help"
                     for a in parser._actions if not a.help]
    assert not problems, "\n".join(problems)


def options(command: str) -> set[str]:
    return {s for a in leaf(command)._actions for s in a.option_strings} - {"-h", "--help"}


def test_entries_add_and_edit_speak_the_same_options() -> None:
    assert options("entries add") - {"--once"} == options("entries edit")
    for name in ("--kind", "--job-kind", "--every", "--run-interval", "--category",
                 "--category-code", "--weekdays", "--run-on-weekdays", "--window",
                 "--recurring", "--inactivity-timeout", "--time-zone"):
        assert name in options("entries edit"), name


def entry(engine: Engine, entry_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT run_interval, run_on_weekdays, recurring, category_code, starting_time, "
            "ending_time FROM crmsync.job_queue_entries WHERE id = :id"), {"id": entry_id}).one()


def test_add_and_edit_take_the_same_values(database_url: str, engine: Engine,
                                           tmp_path: Path) -> None:
    env = base_env(tmp_path, database_url)
    added = crmsync(["entries", "add", "--kind", "cleanup", "--every", "15 minutes",
                     "--weekdays", "1,2,3", "--category", "NIGHT", "--window", "22:00-06:00"],
                    env, tmp_path)
    assert added.returncode == 0, added.stderr
    entry_id = int(added.stdout.split()[-1])
    row = entry(engine, entry_id)
    assert (row.run_interval, row.run_on_weekdays, row.category_code) == (
        timedelta(minutes=15), [1, 2, 3], "NIGHT")
    edited = crmsync(["entries", "edit", str(entry_id), "--run-interval", "1 hour",
                      "--run-on-weekdays", "1,2,3,4,5", "--category-code", "DAY",
                      "--recurring", "no", "--window", "none"], env, tmp_path)
    assert edited.returncode == 0, edited.stderr
    row = entry(engine, entry_id)
    assert (row.run_interval, row.run_on_weekdays, row.category_code, row.recurring,
            row.starting_time) == (timedelta(hours=1), [1, 2, 3, 4, 5], "DAY", False, None)
    bad = crmsync(["entries", "edit", str(entry_id), "--recurring", "maybe"], env, tmp_path)
    assert bad.returncode == 2 and "--recurring: expected yes or no" in bad.stderr


def test_tables_show_dates_with_zone_intervals_in_words_and_yes_no(
        database_url: str, engine: Engine, tmp_path: Path) -> None:
    setup_defaults(engine)
    env = base_env(tmp_path, database_url)
    listed = crmsync(["entries", "list"], env, tmp_path).stdout
    assert "30 minutes" in listed and "0:30:00" not in listed
    assert re.search(STAMP, listed), listed
    status = crmsync(["status"], env, tmp_path).stdout
    assert re.search(rf"CUSTOMER\s+ready\s+-\s+-\s+\S+\s+{STAMP}", status), status
    mappings = crmsync(["mappings", "list"], env, tmp_path).stdout
    assert "True" not in mappings and "False" not in mappings
    assert re.search(r"CUSTOMER\s+yes\b", mappings), mappings


def test_intervals_read_as_people_write_them() -> None:
    assert interval(timedelta(minutes=30)) == "30 minutes"
    assert interval(timedelta(seconds=10)) == "10 seconds"
    assert interval(timedelta(hours=1, minutes=30)) == "1 hour 30 minutes"
    assert interval(timedelta(days=1)) == "1 day"
    assert interval(timedelta(0)) == "0 seconds"
    assert (yes_no(True), yes_no(False)) == ("yes", "no")
