"""Running the installed ``crmsync`` in a subprocess and reading its one error line."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.acceptance.conftest import ROOT, crmsync_executable


def crmsync(args: Sequence[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([crmsync_executable(), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def base_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment without any CRMSYNC_ variable of the caller, plus the database, a
    home of its own and a CRM address where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env.update({"CRMSYNC_DATABASE_URL": database_url, "CRMSYNC_HOME": str(tmp_path / "home"),
                "CRMSYNC_CRM_URL": "http://127.0.0.1:9/api/data/v9.2",
                "CRMSYNC_LOG_FORMAT": "text", "PYTHONPATH": str(ROOT)})
    return env


def error_line(done: subprocess.CompletedProcess, status: int) -> str:
    """The one error line of a failed command, after checking there is exactly one, no
    traceback, and the exit status."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("crmsync: error: ")]
    assert len(errors) == 1, output
    assert done.returncode == status, output
    return errors[0]


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
