"""The worker's HTTP listener under clients that go away early: one quiet log line each,
never a traceback on stderr, and the endpoint keeps answering; and out of descriptors, one
warning a minute however often accepting fails."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.acceptance.conftest import ROOT
from tests.support.waiting import wait_for
from worker.runtime.http import StatusServer


def _abort(address: str) -> None:
    """GET /metrics, then reset the connection without reading the answer."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")


def test_300_aborted_scrapes_print_no_traceback(
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG, logger="worker.runtime.http")
    server = StatusServer("127.0.0.1:0", lambda: {"ok": True}, lambda: {"ok": True}).start()
    try:
        for _ in range(300):
            _abort(server.address)
        # The answer to a fresh request comes after the aborted ones were accepted (one
        # accept loop); their handler threads log when they meet the reset.
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=60) as answer:
            assert answer.status == 200
        quiet = wait_for(lambda: [r for r in caplog.records
                                  if r.getMessage() == "http client disconnected early"])
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as answer:
            assert answer.status == 200  # still serving
    finally:
        server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err
    assert quiet, "an aborted connection is logged"
    assert all(r.levelno == logging.DEBUG and "\n" not in r.getMessage() for r in quiet)
    assert not [r for r in caplog.records if r.exc_info and r.name == "worker.runtime.http"]


_OUT_OF_DESCRIPTORS = """
import logging, resource, sys, time
from worker.runtime.httpserver import BoundedServer, Response
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stdout)
server = BoundedServer("127.0.0.1", 0, lambda request: Response.text(200, "ok"))
resource.setrlimit(resource.RLIMIT_NOFILE, (32, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def test_running_out_of_descriptors_is_one_warning_not_one_per_attempt() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _OUT_OF_DESCRIPTORS], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    held = []
    try:
        port = int(proc.stdout.readline())
        for _ in range(60):  # more than the process may open: accepting fails
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(2)  # about twenty failed attempts
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert out.count("http listener cannot accept") == 1
