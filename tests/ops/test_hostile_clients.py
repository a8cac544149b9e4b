"""Anyone who can reach the listener of ``crmsync run`` (``/metrics``, ``/healthz``,
``/readyz``, the webhook) gets nothing: 200 slow and 1,000 idle connections neither starve
``/metrics`` nor the worker's descriptors; a malformed request is a 400 with at most one
DEBUG line, never a traceback, never the key; a flood of bad keys is one WARNING; a flood
of checks and scrapes costs the database a few transactions; an IPv6 address is bound."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.freshness.test_run_command import free_port
from tests.support.waiting import wait_for
from worker.db.engine import create_engine

SECRET = "a-webhook-key-no-log-may-show"
HELLO = bytes.fromhex("16030100a5010000a10303") + os.urandom(32) + b"\x00" * 40


@dataclass
class Running:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"msg": line, "level": "raw"})
        return out

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@contextlib.contextmanager
def crmsync_run(database_url: str, tmp_path: Path, host: str = "127.0.0.1",
                port: int | None = None) -> Iterator[Running]:
    """``crmsync run`` with its listener on ``host`` and the webhook of connection crm on;
    its log is checked for the webhook key and tracebacks at the end."""
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "crm_webhook_secret").write_text(SECRET + "\n")
    port = port or free_port()
    bracketed = f"[{host}]" if ":" in host else host
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env.update({
        "CRMSYNC_DATABASE_URL": database_url, "CRMSYNC_CRM_URL": "http://127.0.0.1:9/api",
        "CRMSYNC_CRM_WEBHOOK": "true", "CREDENTIALS_DIRECTORY": str(tmp_path / "credentials"),
        "CRMSYNC_METRICS_ADDRESS": f"{bracketed}:{port}", "CRMSYNC_LOG_FORMAT": "json",
        "CRMSYNC_LOG_LEVEL": "DEBUG", "CRMSYNC_REMOTE_PROBE": "off", "PYTHONPATH": str(ROOT),
    })
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([crmsync_executable(), "run"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://{bracketed}:{port}"
    try:
        wait_for(lambda: _answers(url) or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, log.read_text()[-2000:]
        yield Running(url, port, proc, log)
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    assert SECRET not in text
    assert "Traceback" not in text


@pytest.fixture
def running(database_url: str, tmp_path: Path) -> Iterator[Running]:
    with crmsync_run(database_url, tmp_path) as worker:
        yield worker


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _raise_descriptor_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_slow_and_idle_clients_never_starve_metrics(running: Running) -> None:
    limit = _raise_descriptor_limit(1400)
    idle_count = min(1000, limit - 300)
    stop = threading.Event()
    slow: list[socket.socket] = []
    idle: list[socket.socket] = []
    before = running.descriptors()

    def trickle() -> None:  # one byte every second on each slow connection
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        for i in range(10_000):
            if stop.wait(1.0):
                return
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(request[i % len(request):][:1])

    feeder = threading.Thread(target=trickle, daemon=True)
    try:
        for _ in range(200):
            slow.append(socket.create_connection(("127.0.0.1", running.port), timeout=10))
        feeder.start()
        for _ in range(idle_count):
            idle.append(socket.create_connection(("127.0.0.1", running.port), timeout=10))
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            reply = requests.get(f"{running.url}/metrics", timeout=30)
            latencies.append(time.monotonic() - started)
            assert reply.status_code == 200 and "crmsync_" in reply.text
        held = running.descriptors()
        print(f"\n/metrics latency with 200 slow + {idle_count} idle connections: "
              f"max {max(latencies) * 1000:.0f} ms; worker descriptors {before} -> {held}")
        # The listener keeps at most 128 connections: the rest are closed, not hoarded.
        assert held < before + 140
        assert requests.get(f"{running.url}/readyz", timeout=30).status_code == 200
    finally:
        stop.set()
        for sock in slow + idle:
            sock.close()
    assert running.proc.poll() is None


def test_malformed_requests_get_400_and_at_most_one_debug_line(running: Running) -> None:
    bad = [
        HELLO,                                                     # TLS on the plain port
        f"GET /webhooks/dataverse/crm?code={SECRET} HTTP/1.1 x\r\n\r\n".encode(),
        b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n",
        f"POST /webhooks/dataverse/crm?code={SECRET} HTTP/1.1\r\n"
        "Content-Length: \u00b2\r\n\r\n".encode(),
        b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    ]
    for data in bad:
        answer = _raw(running.port, data)
        assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:60]
    deep = b"[" * 60_000
    reply = requests.post(f"{running.url}/webhooks/dataverse/crm", data=deep,
                          headers={"x-crmsync-webhook-key": SECRET}, timeout=10)
    assert reply.status_code == 400
    assert requests.get(f"{running.url}/metrics", timeout=10).status_code == 200
    lines = running.lines()
    refused = [r for r in lines if r.get("msg") == "http request refused"]
    assert len(refused) == len(bad)
    assert all(r["level"] == "debug" for r in refused)
    assert not [r for r in lines if r.get("level") in ("error", "critical", "raw")]


def test_a_flood_of_bad_keys_is_one_warning(running: Running) -> None:
    for i in range(50):
        reply = requests.post(f"{running.url}/webhooks/dataverse/crm",
                              json={"PrimaryEntityName": "account"},
                              headers={"x-crmsync-webhook-key": f"guess-{i}"}, timeout=10)
        assert reply.status_code == 401
        reply = requests.post(f"{running.url}/webhooks/dataverse/nosuch{i % 3}",
                              json={"PrimaryEntityName": "account"}, timeout=10)
        assert reply.status_code == 404
    warnings = [r["msg"] for r in running.lines() if r.get("level") == "warning"]
    assert warnings.count("webhook call refused: bad or missing secret") == 1
    assert warnings.count(
        "webhook call for a connection whose configuration fails") <= 1


def _commits(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")))


def test_a_flood_of_checks_and_scrapes_costs_the_database_a_few_reads(
        running: Running, database_url: str) -> None:
    """/healthz asks the database once a second at most, and the cluster gauges are read
    once per cache period however many scrapes arrive together: thousands of requests
    cost the pool the worker claims with a few transactions, not one each."""
    engine = create_engine(database_url, pool_size=1)
    seconds = 5.0

    def ask(n: int) -> int:
        asked = 0
        stop = time.monotonic() + seconds
        with requests.Session() as session:
            while time.monotonic() < stop:
                path = "/healthz" if (asked + n) % 2 else "/metrics"
                assert session.get(f"{running.url}{path}", timeout=30).status_code == 200
                asked += 1
        return asked

    try:
        commits = _commits(engine)
        time.sleep(seconds)
        idle = _commits(engine) - commits
        commits = _commits(engine)
        with ThreadPoolExecutor(8) as pool:
            asked = sum(pool.map(ask, range(8)))
        flooded = _commits(engine) - commits
    finally:
        engine.dispose()
    print(f"\n{asked} requests in {seconds:.0f} s: {flooded} database transactions "
          f"({idle} in as long without them)")
    assert asked > 200
    # One check a second, one cluster read per 5 s, and the worker's own work.
    assert flooded <= idle + 2 * seconds + 10


def test_the_listener_binds_an_ipv6_address(database_url: str, tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = int(probe.getsockname()[1])
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with crmsync_run(database_url, tmp_path, host="::1", port=port) as worker:
        assert worker.url == f"http://[::1]:{port}"
        reply = requests.get(f"{worker.url}/metrics", timeout=10)
        assert reply.status_code == 200 and "crmsync_build_info" in reply.text
