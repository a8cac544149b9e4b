"""The worker's HTTP listener under clients that go away early: one quiet log line each,
never a traceback on stderr, and the endpoint keeps answering."""

from __future__ import annotations

import logging
import socket
import struct
import urllib.request

import pytest

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
