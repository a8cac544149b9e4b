"""Every sub-command of the installed ``crmsync``, run in a subprocess against a database that
does not answer, one that does not exist and one that is not upgraded, and with each bad
process setting or configuration file: one line ``crmsync: error: <object>: <what>`` on
stderr, no traceback, and the documented exit status."""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.cli.helpers import base_env, closed_port, crmsync, error_line
from tests.fixtures.database import admin_connection, url_for
from worker.cli import build_parser
from worker.errors import EXIT_DATABASE, EXIT_USAGE

DEFAULTS_DOCUMENT = ROOT / "worker" / "sample" / "defaults.toml"

# Arguments that make each command's own arguments valid, so what fails is the database or
# the setting under test. A new command with required arguments must be added here.
ARGUMENTS: dict[str, list[str]] = {
    "entries add": ["--kind", "cleanup"],
    "entries hold": ["1"],
    "entries restart": ["1"],
    "entries run-now": ["1"],
    "entries edit": ["1", "--priority", "5"],
    "entries remove": ["1"],
    "sync": ["--all"],
    "couple": ["--match", "CUSTOMER"],
    "uncouple": ["CUSTOMER"],
    "mappings enable": ["CURRENCY"],
    "mappings disable": ["CURRENCY"],
    "mappings apply": [str(DEFAULTS_DOCUMENT)],
    "records": ["CUSTOMER"],
    "audit": ["--all"],
    "demo": ["--duration", "1", "--crm-port", "0", "--metrics-address", ""],
}
NO_DATABASE = {"emulator"}  # serves HTTP only
OWN_DATABASE = {"demo"}  # creates its own database on the server it is given


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix
        return
    for name, sub in subs[0].choices.items():
        yield from leaf_commands(sub, f"{prefix} {name}".strip())


COMMANDS = list(leaf_commands(build_parser()))
DATABASE_COMMANDS = [c for c in COMMANDS if c not in NO_DATABASE]


def test_every_command_with_required_arguments_is_covered() -> None:
    parser = build_parser()
    for command in COMMANDS:
        if command in ARGUMENTS or command in NO_DATABASE:
            continue
        try:
            parser.parse_args(command.split())
        except SystemExit:
            pytest.fail(f"crmsync {command} needs arguments: add it to ARGUMENTS")


@pytest.fixture(scope="module", name="closed_port")
def closed_port_fixture() -> int:
    return closed_port()


def run_each(commands: list[str], env: dict[str, str], cwd: Path,
             check: Callable[[str, subprocess.CompletedProcess], None]) -> None:
    """Run every command (a few at a time: most of their time is Python's start-up) and
    check each; report every command that failed its check, not only the first."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = {c: pool.submit(crmsync, [*c.split(), *ARGUMENTS.get(c, [])], env, cwd)
                for c in commands}
    failures = []
    for command, run in runs.items():
        try:
            check(command, run.result())
        except AssertionError as exc:
            failures.append(f"crmsync {command}: {exc}")
    assert not failures, "\n".join(failures)


def test_every_command_with_a_database_that_does_not_answer(closed_port: int,
                                                            tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port}/crmsync"

    def check(command: str, done: subprocess.CompletedProcess) -> None:
        line = error_line(done, EXIT_DATABASE)
        assert f"database postgresql+psycopg://postgres@127.0.0.1:{closed_port}/crmsync" in line
        assert "connection refused" in line and "CRMSYNC_DATABASE_URL" in line

    run_each(DATABASE_COMMANDS, base_env(tmp_path, url), tmp_path, check)


def test_every_command_with_a_database_that_does_not_exist(admin_url: str,
                                                           tmp_path: Path) -> None:
    url = url_for(admin_url, "crmsync_no_such_database")

    def check(command: str, done: subprocess.CompletedProcess) -> None:
        line = error_line(done, EXIT_DATABASE)
        assert 'database "crmsync_no_such_database" does not exist' in line
        assert "createdb" in line

    run_each(DATABASE_COMMANDS, base_env(tmp_path, url), tmp_path, check)


@pytest.fixture
def not_upgraded_url(admin_url: str) -> Iterator[str]:
    name = f"crmsync_cli_empty_{os.getpid()}"
    with admin_connection(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url_for(admin_url, name)
    with admin_connection(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_command_with_a_database_not_upgraded(not_upgraded_url: str,
                                                    tmp_path: Path) -> None:
    def check(command: str, done: subprocess.CompletedProcess) -> None:
        if command == "db current":  # it reports the revisions, and says they differ
            assert "applied: (none)" in done.stdout and done.returncode == EXIT_DATABASE
            return
        line = error_line(done, EXIT_DATABASE)
        assert "the crmsync schema is empty" in line and "crmsync db upgrade" in line

    commands = [c for c in DATABASE_COMMANDS if c not in OWN_DATABASE and c != "db upgrade"]
    run_each(commands, base_env(tmp_path, not_upgraded_url), tmp_path, check)


# ------------------------------------------------------------------ bad settings

TOML_FILES: dict[str, bytes] = {
    "connections-not-a-table": b"connections = 5\n",
    "not-utf8": b'[connections.crm]\nurl = "http://crm\xff\xfe.example"\n',
    "unknown-section": b'[connection.crm]\nurl = "http://crm.example/api"\n',
    "syntax": b"[connections.crm\nurl = 1\n",
    "unknown-key": b'[connections.crm]\nurl = "http://crm.example/api"\npagesize = 5\n',
    "zero-count": b'[connections.crm]\nurl = "http://crm.example/api"\npage_size = 0\n',
    "negative-duration": b'[connections.crm]\nurl = "http://crm.example/api"\n'
                         b"connect_timeout = -1\n",
    "connection-not-a-table": b'[connections]\ncrm = "http://crm.example/api"\n',
}

# (environment, flags, text the error line must contain)
BAD_SETTINGS: list[tuple[dict[str, str], list[str], str]] = [
    ({"CRMSYNC_CONCURRENCY": "abc"}, [], "CRMSYNC_CONCURRENCY: expected a whole number"),
    ({"CRMSYNC_CONCURRENCY": "0"}, [], "CRMSYNC_CONCURRENCY: expected a whole number 1-256"),
    ({"CRMSYNC_LEASE_SECONDS": "-5"}, [], "CRMSYNC_LEASE_SECONDS: expected a number of sec"),
    ({"CRMSYNC_LEASE_SECONDS": "soon"}, [], "CRMSYNC_LEASE_SECONDS"),
    ({"CRMSYNC_POLL_INTERVAL": "-1"}, [], "CRMSYNC_POLL_INTERVAL: expected a number of sec"),
    ({"CRMSYNC_POLL_INTERVAL": "fast"}, [], "CRMSYNC_POLL_INTERVAL"),
    ({"CRMSYNC_SHUTDOWN_TIMEOUT": "-30"}, [], "CRMSYNC_SHUTDOWN_TIMEOUT"),
    ({"CRMSYNC_CHANGE_DELAY": "0"}, [], "CRMSYNC_CHANGE_DELAY"),
    ({"CRMSYNC_LOG_LEVEL": "LOUD"}, [], "CRMSYNC_LOG_LEVEL: expected one of DEBUG"),
    ({"CRMSYNC_LOG_FORMAT": "xml"}, [], "CRMSYNC_LOG_FORMAT: expected auto, json or text"),
    ({"CRMSYNC_METRICS_ADDRESS": "127.0.0.1:99999"}, [], "CRMSYNC_METRICS_ADDRESS"),
    ({"CRMSYNC_DATABASE_URL": "mysql://u@h/db"}, [], "CRMSYNC_DATABASE_URL: expected a Postg"),
    ({"CRMSYNC_CONFIG": "/nonexistent/crmsync.toml"}, [], "does not exist"),
    ({}, ["--log-level", "LOUD"], "--log-level: expected one of"),
    ({}, ["--log-format", "xml"], "--log-format"),
    *[({"CRMSYNC_CONFIG": f"@{name}"}, [], "") for name in TOML_FILES],
]
TOML_NEEDLES = {
    "connections-not-a-table": "connections must be a table",
    "not-utf8": "not UTF-8",
    "unknown-section": "unknown section or key 'connection'",
    "syntax": "line 1",
    "unknown-key": "unknown setting 'pagesize'",
    "zero-count": "page_size: expected an integer 1-5000, got 0",
    "negative-duration": "connect_timeout: expected a number of seconds",
    "connection-not-a-table": "expected a table",
}


@pytest.mark.parametrize("case", range(len(BAD_SETTINGS)))
def test_bad_setting_is_one_line_for_any_command(case: int, closed_port: int,
                                                 tmp_path: Path) -> None:
    """Process settings and the configuration file are checked before any command runs;
    each case runs another command (they all go through the same check)."""
    env_changes, flags, needle = BAD_SETTINGS[case]
    command = COMMANDS[case % len(COMMANDS)]
    env = base_env(tmp_path, f"postgresql://postgres@127.0.0.1:{closed_port}/crmsync")
    for name, value in env_changes.items():
        if value.startswith("@"):
            path = tmp_path / "crmsync.toml"
            path.write_bytes(TOML_FILES[value[1:]])
            needle = TOML_NEEDLES[value[1:]]
            value = str(path)
        env[name] = value
    done = crmsync([*flags, *command.split(), *ARGUMENTS.get(command, [])], env, tmp_path)
    line = error_line(done, EXIT_USAGE)
    assert needle in line, line


@pytest.mark.parametrize(("flag", "value"), [
    ("--concurrency", "-1"), ("--lease-seconds", "0"), ("--poll-interval", "-2"),
    ("--shutdown-timeout", "-1"), ("--change-delay", "x"), ("--metrics-address", "h:99999"),
])
def test_bad_worker_flags(flag: str, value: str, closed_port: int, tmp_path: Path) -> None:
    env = base_env(tmp_path, f"postgresql://postgres@127.0.0.1:{closed_port}/crmsync")
    line = error_line(crmsync(["run", f"{flag}={value}"], env, tmp_path), EXIT_USAGE)
    assert line.startswith(f"crmsync: error: {flag}: expected"), line


@pytest.mark.parametrize(("args", "needle"), [
    (["emulator", "--port", "99999"], "argument --port: expected a whole number 0-65535"),
    (["demo", "--crm-port", "-1"], "argument --crm-port: expected a whole number 0-65535"),
    (["demo", "--interval", "0"], "argument --interval: expected a number of seconds"),
    (["demo", "--duration", "-5"], "argument --duration: expected a number of seconds"),
    (["demo", "--metrics-address", "h:99999"], "argument --metrics-address: expected host"),
    (["sample-data", "--customers", "99999999999999"], "--customers: expected 0-1000000"),
    (["db", "upgrade", "nosuchrev"], "revision 'nosuchrev': Can't locate revision"),
])
def test_bad_flags_of_other_commands(args: list[str], needle: str, database_url: str,
                                     tmp_path: Path) -> None:
    env = base_env(tmp_path, database_url)  # a database that answers: the flag is what fails
    line = error_line(crmsync(args, env, tmp_path), EXIT_USAGE)
    assert needle in line, line


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, "postgresql://postgres@127.0.0.1:9/crmsync")
    line = error_line(crmsync(["nosuch"], env, tmp_path), EXIT_USAGE)
    assert "invalid choice: 'nosuch'" in line and "crmsync --help" in line
    line = error_line(crmsync(["run", "--concurrency"], env, tmp_path), EXIT_USAGE)
    assert line.startswith("crmsync: error: run: argument --concurrency")


def test_traceback_only_at_debug(closed_port: int, tmp_path: Path) -> None:
    env = base_env(tmp_path, f"postgresql://postgres@127.0.0.1:{closed_port}/crmsync")
    done = crmsync(["--log-level", "debug", "status"], env, tmp_path)
    assert done.returncode == EXIT_DATABASE
    assert "Traceback" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("crmsync: error: database ")


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    """``crmsync … | head``: the closed pipe is neither a traceback nor an error status."""
    env = base_env(tmp_path, "postgresql://postgres@127.0.0.1:9/crmsync")
    proc = subprocess.Popen([crmsync_executable(), "run", "--help"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before crmsync writes anything
    err = proc.stderr.read()
    assert proc.wait(60) == 0 and err == ""
