"""Figures of the client against a hostile OData service on loopback (the test suite's own
scripted server, tests/support/hostile.py): how many ``Authorization`` headers reach
another port through a next link, the longest pause a huge ``Retry-After`` imposes on an
unrelated request, the peak memory of reading a 300 KB gzip bomb (300 MiB decompressed),
and how long a server (or token endpoint) trickling its answer holds a request with
``read_timeout = 2``.

And of the listener of a running ``crmsync run`` (on a scratch database crmsync_hostile
of CRMSYNC_DATABASE_URL's server) against hostile clients: the latency of ``/metrics``
alone, then while 200 slow connections (a byte every 5 s each) and 1,000 idle ones are
held, opened once, and again while every one the listener closes is opened again at
once; the worker's descriptors meanwhile; ``/metrics`` while 32 clients scrape as fast as
they can; and the database transactions a flood of ``/healthz`` and ``/metrics`` costs (its
checks and cluster gauges are cached).

    python bench/hostile_bench.py [--no-listener]

The bomb runs in a child process of its own, so its peak RSS is not that of the rest.
The machine's load average is printed first: the latencies depend on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402

from tests.remote.test_hostile_sizes import _trickle, bomb  # noqa: E402
from tests.support.hostile import Handler, Seen, client_of, hostile, never  # noqa: E402
from worker.errors import CrmsyncError  # noqa: E402


def leak() -> int:
    with hostile(never) as thief:
        def respond(handler: Handler, seen: Seen) -> None:
            handler.json(200, {"value": [], "@odata.nextLink": f"{thief.origin}/steal"})

        with hostile(respond) as crm, client_of(crm) as client, \
                contextlib.suppress(CrmsyncError):
            list(client.entity_set("accounts", "accountid").read())
        return len(thief.authorizations())


def frozen_gate() -> float:
    def respond(handler: Handler, seen: Seen) -> None:
        if "accounts" in seen.path:
            handler.json(429, {"error": {"message": "busy"}}, {"Retry-After": "100000"})
        else:
            handler.json(200, {"value": []})

    with hostile(respond) as crm, client_of(crm, max_retry_after=2) as client:
        with contextlib.suppress(CrmsyncError):
            list(client.entity_set("accounts", "accountid").read())
        started = time.monotonic()
        list(client.entity_set("contacts", "contactid").read())
        return time.monotonic() - started


def bomb_child() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(200, bomb(), {"Content-Type": "application/json",
                                  "Content-Encoding": "gzip"})

    payload = bomb()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with hostile(respond) as crm, client_of(crm) as client:
        try:
            list(client.entity_set("accounts", "accountid").read())
            outcome = "read"
        except CrmsyncError as exc:
            outcome = type(exc).__name__
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{len(payload)} {base} {peak} {outcome}")


def trickle() -> float:
    with hostile(_trickle("body")) as crm, \
            client_of(crm, connect_timeout=1, read_timeout=2, max_retries=0) as client:
        started = time.monotonic()
        with contextlib.suppress(CrmsyncError):
            list(client.entity_set("accounts", "accountid").read())
        return time.monotonic() - started


# ------------------------------------------------------------------------- the listener

SLOW, IDLE = 200, 1000
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


class Crowd:
    """200 slow and 1,000 idle connections to ``port``, fed by one thread: each slow one
    sends a byte of a request every 5 s; with ``reopen``, a connection the listener
    closes is opened again at once (``opened`` counts them all)."""

    def __init__(self, port: int, *, reopen: bool) -> None:
        self.port, self.reopen = port, reopen
        self.opened = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._sent: dict[socket.socket, int] = {}
        for n in range(SLOW + IDLE):
            self._open(slow=n < SLOW)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self, *, slow: bool) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            return
        sock.setblocking(False)
        self.opened += 1
        self._selector.register(sock, selectors.EVENT_READ, slow)
        if slow:
            self._sent[sock] = 0

    def _run(self) -> None:
        next_byte = time.monotonic() + 5
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if sock.recv(65536):
                        continue
                self._selector.unregister(sock)  # closed by the listener (or answered)
                self._sent.pop(sock, None)
                sock.close()
                if self.reopen and not self._stop.is_set():
                    self._open(slow=bool(key.data))
            if time.monotonic() >= next_byte:
                next_byte += 5
                for sock, sent in list(self._sent.items()):
                    with contextlib.suppress(OSError):
                        sock.send(REQUEST[sent % len(REQUEST):][:1])
                        self._sent[sock] = sent + 1

    def held(self) -> int:
        return len(self._selector.get_map())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


def _scrapes(url: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.monotonic()
        reply = requests.get(f"{url}/metrics", timeout=60)
        latencies.append(time.monotonic() - started)
        assert reply.status_code == 200 and "crmsync_" in reply.text, reply.status_code
        time.sleep(0.1)
    return latencies


def _latency(latencies: list[float]) -> str:
    return (f"median {statistics.median(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms ({len(latencies)} scrapes)")


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _commits(engine: Any) -> int:
    import sqlalchemy as sa  # here, not at the top: the bomb's child measures its RSS

    with engine.connect() as conn:
        return int(conn.scalar(sa.text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")))


@contextlib.contextmanager
def running_worker() -> Iterator[tuple[str, int, int, str]]:
    """A ``crmsync run`` on a scratch database: (listener URL, port, pid, database URL)."""
    from scratch import scratch_database  # not at the top: see _commits

    url = scratch_database("crmsync_hostile")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env.update({"CRMSYNC_DATABASE_URL": url, "CRMSYNC_CRM_URL": "http://127.0.0.1:9/api",
                "CRMSYNC_METRICS_ADDRESS": f"127.0.0.1:{port}", "CRMSYNC_LOG_LEVEL": "warning",
                "CRMSYNC_REMOTE_PROBE": "off", "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("crmsync run did not start")
            time.sleep(0.2)
        yield base, port, proc.pid, url
    finally:
        proc.terminate()
        proc.wait(30)


def _flood(url: str, seconds: float, threads: int = 8,
           paths: tuple[str, ...] = ("/healthz", "/metrics")) -> int:
    """``threads`` clients asking ``paths`` in turn for ``seconds``."""
    stop = time.monotonic() + seconds

    def client(n: int) -> int:
        asked = 0
        with requests.Session() as session:
            while time.monotonic() < stop:
                session.get(f"{url}{paths[(asked + n) % len(paths)]}", timeout=30)
                asked += 1
        return asked

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(client, range(threads)))


def listener() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # this process opens the 1,200 connections
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    with running_worker() as (url, port, pid, db_url):
        _scrapes(url, 3)  # warm
        quiet = _scrapes(url, 20)
        before = _descriptors(pid)
        print(f"listener: /metrics alone: {_latency(quiet)}; worker descriptors {before}")
        for reopen in (False, True):
            crowd = Crowd(port, reopen=reopen)
            try:
                time.sleep(2)
                loaded = _scrapes(url, 20)
                held, fds = crowd.held(), _descriptors(pid)
                opened = crowd.opened
            finally:
                crowd.close()
            how = "each closed one opened again at once" if reopen else "opened once"
            print(f"listener: /metrics with {SLOW} slow + {IDLE} idle connections ({how}; "
                  f"{opened} opened, {held} still open at the end): {_latency(loaded)}; "
                  f"worker descriptors {fds} (before {before})")
        with ThreadPoolExecutor(1) as pool:
            flood = pool.submit(_flood, url, 12, 32, ("/metrics",))
            time.sleep(2)
            flooded_scrapes = _scrapes(url, 20)
            asked = flood.result()
        print(f"listener: /metrics while 32 other clients scrape as fast as they can ({asked} "
              f"scrapes in 12 s): {_latency(flooded_scrapes)}")
        from worker.db.engine import create_engine  # not at the top: see _commits

        engine = create_engine(db_url, pool_size=1)
        try:
            time.sleep(6)  # the cluster gauges' cache (5 s) stale, the crowd gone
            commits = _commits(engine)
            time.sleep(10)
            idle = _commits(engine) - commits - 1
            commits = _commits(engine)
            asked = _flood(url, 10)
            flooded = _commits(engine) - commits - 1
        finally:
            engine.dispose()
        print(f"listener: database transactions in 10 s: {idle} idle, {flooded} while 8 "
              f"clients asked /healthz and /metrics {asked} times")


def token_trickle() -> float:
    with hostile(_trickle("body", only="/token")) as crm, client_of(
            crm, auth="oauth2", client_id="app", client_secret="s3cret",
            token_url=f"{crm.origin}/token", connect_timeout=1, read_timeout=2,
            max_retries=0) as client:
        started = time.monotonic()
        with contextlib.suppress(CrmsyncError):
            list(client.entity_set("accounts", "accountid").read())
        return time.monotonic() - started


def main() -> None:
    logging.disable(logging.WARNING)  # the client's warnings are expected here
    if sys.argv[1:] == ["--bomb"]:
        bomb_child()
        return
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"Authorization headers at another port through a next link: {leak()}")
    print(f"unrelated request after Retry-After: 100000 (max_retry_after 2): "
          f"{frozen_gate():.2f} s")
    out = subprocess.run([sys.executable, __file__, "--bomb"], capture_output=True,
                         text=True, check=True).stdout.split()
    size, base, peak, outcome = int(out[0]), int(out[1]), int(out[2]), out[3]
    print(f"gzip bomb of {size / 1000:.0f} KB (300 MiB decompressed), max_reply_mib 64: "
          f"{outcome}; peak RSS {base / 1024:.0f} MB before, {peak / 1024:.0f} MB after")
    print(f"trickling server, connect_timeout 1 + read_timeout 2: cut off after "
          f"{trickle():.1f} s")
    print(f"trickling token endpoint, the same timeouts: cut off after {token_trickle():.1f} s")
    if "--no-listener" not in sys.argv[1:]:
        listener()


if __name__ == "__main__":
    main()
