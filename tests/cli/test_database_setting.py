"""No silent embedded database: without ``CRMSYNC_DATABASE_URL`` every command that uses a
database refuses, naming the setting, and starts nothing — unless ``--embedded`` asks for
the embedded server (``demo`` always uses one of its own). ``--env-file FILE`` reads the
service's settings file, before or after the command's name."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import crmsync, error_line
from tests.cli.test_bad_input import ARGUMENTS, DATABASE_COMMANDS, OWN_DATABASE, run_each
from worker.errors import EXIT_USAGE


def bare_env(tmp_path: Path) -> dict[str, str]:
    """An administrator's shell without the service's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env["CRMSYNC_HOME"] = str(tmp_path / "home")
    return env


def test_every_command_refuses_without_a_database_url(tmp_path: Path) -> None:
    def check(command: str, done: subprocess.CompletedProcess) -> None:
        line = error_line(done, EXIT_USAGE)
        assert line.startswith("crmsync: error: CRMSYNC_DATABASE_URL: not set"), line
        assert "--embedded" in line and "--env-file" in line or command == "run"

    commands = [c for c in DATABASE_COMMANDS if c not in OWN_DATABASE]
    run_each(commands, bare_env(tmp_path), tmp_path, check)
    assert not (tmp_path / "home" / "pgdata").exists()  # nothing was started


def write_env_file(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "crmsync.env"
    path.write_text("# the service's settings\n\n"
                    f'CRMSYNC_DATABASE_URL="{database_url}"\n'
                    "CRMSYNC_LOG_LEVEL=WARNING\n")
    return path


@pytest.mark.parametrize("where", ["before", "after"])
def test_env_file_before_or_after_the_command(database_url: str, tmp_path: Path,
                                              where: str) -> None:
    env_file = str(write_env_file(tmp_path, database_url))
    args = ["--env-file", env_file, "db", "current"] if where == "before" \
        else ["db", "current", "--env-file", env_file]
    done = crmsync(args, bare_env(tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note:" not in done.stderr  # the file's database, not the embedded server
    assert not (tmp_path / "home" / "pgdata").exists()


def test_env_file_values_win_over_the_environment(database_url: str, tmp_path: Path) -> None:
    env = {**bare_env(tmp_path), "CRMSYNC_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/x"}
    env_file = str(write_env_file(tmp_path, database_url))
    done = crmsync(["entries", "list", "--env-file", env_file], env, tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("content", "expected"), [
    (None, "No such file or directory"),
    (b"CRMSYNC_DATABASE_URL\n", "line 1: expected NAME=VALUE, got 'CRMSYNC_DATABASE_URL'"),
    (b"# ok\nexport CRMSYNC_LOG_LEVEL=INFO\n", "line 2: expected NAME=VALUE"),
    (b"CRMSYNC_CRM_CLIENT_SECRET hunter2\n", "line 1: expected NAME=VALUE"),
    (b"CRMSYNC_HOME=\xff\n", "not UTF-8 text"),
])
def test_a_bad_env_file_is_one_line_naming_file_and_line(
        tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "bad.env"
    if content is not None:
        path.write_bytes(content)
    done = crmsync(["--env-file", str(path), "status"], bare_env(tmp_path), tmp_path)
    line = error_line(done, EXIT_USAGE)
    assert line.startswith(f"crmsync: error: --env-file {path}: ") and expected in line, line
    assert "hunter2" not in done.stderr


def test_every_command_takes_the_common_options() -> None:
    from worker.cli import build_parser

    parser = build_parser()
    for command in DATABASE_COMMANDS:
        args = parser.parse_args([*command.split(), *ARGUMENTS.get(command, []),
                                  "--env-file", "x.env", "--embedded"])
        assert args.env_file == "x.env" and args.embedded is True, command
