"""The emulator in a process of its own, on a free loopback port, for the benchmarks (so
that the server's CPU is not the measuring client's)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import closing

import requests

SERVICE = "/api/data/v9.2"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator(port: int, *extra: str, profile: str = "dataverse",
                   wait: float = 15.0) -> subprocess.Popen[bytes]:
    """Start ``crmsync emulator --port PORT --profile PROFILE EXTRA…`` and wait until it
    answers, ``wait`` seconds at most (``profile``: ``dataverse`` or ``odata``, the generic
    OData v4 server)."""
    command = [sys.executable, "-m", "worker", "--log-level", "WARNING", "emulator",
               "--port", str(port), "--profile", profile, *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}{SERVICE}/", timeout=1)
            return process
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the emulator did not start")
