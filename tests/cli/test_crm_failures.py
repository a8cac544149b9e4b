"""A wrong CRM address through the installed command: ``check``, ``sync`` and ``couple``
name scheme://host:port and the cause, in full, without retrying a refused or unresolvable
address; a failed pass leaves its job row with the message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.cli.helpers import base_env, closed_port, crmsync, error_line
from worker.errors import EXIT_REMOTE

ADDRESSES = {
    "refused": ("http://127.0.0.1:{port}/api/data/v9.2", "http://127.0.0.1:{port}",
                "connection refused"),
    "unresolvable": ("https://nonexistent.invalid/api/data/v9.2",
                     "https://nonexistent.invalid:443", "host name not resolved"),
}


@pytest.mark.parametrize("case", sorted(ADDRESSES))
def test_check_sync_and_couple_name_the_address_and_the_cause(
        case: str, configured: dict[str, str], engine: Engine, tmp_path: Path) -> None:
    port = closed_port()
    url, origin, cause = (part.format(port=port) for part in ADDRESSES[case])
    env = {**configured, "CRMSYNC_CRM_URL": url}
    expected = f"GET {origin}/api/data/v9.2/"
    for args in (["check"], ["sync", "CURRENCY"]):
        done = crmsync(args, env, tmp_path)
        output = done.stdout + done.stderr
        assert done.returncode == EXIT_REMOTE, output
        assert "Traceback" not in output and "retrying" not in output, output
        assert expected in output and cause in output, output
        assert "check the URL of connection 'crm'" in output  # never cut off
    line = error_line(crmsync(["check"], env, tmp_path), EXIT_REMOTE)  # once, not per mapping
    assert expected in line and cause in line
    line = error_line(crmsync(["couple", "--match", "CUSTOMER"], env, tmp_path), EXIT_REMOTE)
    assert expected in line and cause in line and line.endswith("connection 'crm'")
    with engine.connect() as conn:
        messages = conn.scalars(sa.text(
            "SELECT message FROM crmsync.sync_jobs WHERE mapping_name = 'CURRENCY'")).all()
    assert any(m and cause in m and origin in m for m in messages), messages


def test_embedded_server_only_when_asked_for_and_then_said(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env["CRMSYNC_HOME"] = str(tmp_path / "home")
    line = error_line(crmsync(["run"], env, tmp_path), 2)
    assert "CRMSYNC_DATABASE_URL: not set" in line and "--embedded" in line
    assert not (tmp_path / "home" / "pgdata").exists()  # refused before starting anything
    done = crmsync(["db", "current", "--embedded"], env, tmp_path)
    notes = [x for x in done.stderr.splitlines() if x.startswith("crmsync: note: ")]
    assert len(notes) == 1, done.stderr
    assert str(tmp_path / "home" / "pgdata") in notes[0] and "CRMSYNC_DATABASE_URL=" in notes[0]


def test_help_lists_the_environment(tmp_path: Path) -> None:
    env = base_env(tmp_path, "postgresql://postgres@127.0.0.1:9/x")
    top = crmsync(["--help"], env, tmp_path).stdout
    for name in ("CRMSYNC_DATABASE_URL", "CRMSYNC_CONFIG", "CRMSYNC_LOG_LEVEL", "exit statuses"):
        assert name in top
    run = crmsync(["run", "--help"], env, tmp_path).stdout
    for name in ("CRMSYNC_CONCURRENCY", "CRMSYNC_LEASE_SECONDS", "CRMSYNC_PLUGINS",
                 "CRMSYNC_METRICS_ADDRESS", "CRMSYNC_DATABASE_URL", "--embedded"):
        assert name in run
    assert "CRMSYNC_CRM_URL" in crmsync(["check", "--help"], env, tmp_path).stdout
    assert "CRMSYNC_DATABASE_URL" in crmsync(["entries", "list", "--help"], env, tmp_path).stdout
    assert "CRMSYNC_EMULATOR_CLIENT_ID" in crmsync(["emulator", "--help"], env,
                                                   tmp_path).stdout
