"""The listener's own behaviour on loopback: IPv6 addresses, prometheus_client's exposition
(gzip, OpenMetrics, ``name[]``), checks kept a second however often they are asked (and a
slow one holding one handler thread), one
database read for any number of concurrent scrapes of a stale cluster cache, a flood of
scrapes rendered twice a second (two in a row still fresh), an Accept header
prometheus_client chokes on answered in the text format, and a
connection's settings read once however many webhook calls (for however many names)."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tests.support.waiting import wait_for
from worker.errors import ConfigurationError
from worker.metrics import REGISTRY, ClusterCollector
from worker.remote.config import ConnectionSettings
from worker.remote.secrets import Secret
from worker.runtime.http import StatusServer
from worker.runtime.webhook import Call, WebhookReceiver


def _ok() -> dict[str, bool]:
    return {"ok": True}


@pytest.fixture
def server() -> Iterator[StatusServer]:
    status = StatusServer("127.0.0.1:0", _ok, _ok).start()
    yield status
    status.stop()


def test_an_ipv6_address_is_served() -> None:
    status = StatusServer("[::1]:0", _ok, _ok).start()
    try:
        assert status.url.startswith("http://[::1]:")
        assert requests.get(f"{status.url}/healthz", timeout=10).json() == {"ok": True}
    finally:
        status.stop()


def test_metrics_come_with_gzip_openmetrics_and_name_filtering(server: StatusServer) -> None:
    plain = requests.get(f"{server.url}/metrics", timeout=10,
                         headers={"Accept-Encoding": "identity"})
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert "crmsync_build_info" in plain.text and "crmsync_job_runs_total" in plain.text
    packed = requests.get(f"{server.url}/metrics", timeout=10, stream=True,
                          headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert b"crmsync_build_info" in gzip.decompress(packed.raw.read())
    open_metrics = requests.get(f"{server.url}/metrics", timeout=10, headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})
    assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")
    one = requests.get(f"{server.url}/metrics?name[]=process_virtual_memory_bytes",
                       timeout=10).text
    assert "process_virtual_memory_bytes" in one and "crmsync_" not in one


def test_an_accept_header_prometheus_client_cannot_read_gets_the_text_format(
        server: StatusServer, caplog: pytest.LogCaptureFixture) -> None:
    for n in range(20):
        reply = requests.get(f"{server.url}/metrics", timeout=10, headers={
            "Accept": "text/plain; version=abc" if n % 2 else
            f"application/openmetrics-text; version={n}"})
        assert reply.status_code == 200 and "crmsync_build_info" in reply.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_healthz_asks_its_checks_about_once_a_second() -> None:
    calls: list[float] = []

    def health() -> dict[str, bool]:
        calls.append(time.monotonic())
        return {"database": True}

    status = StatusServer("127.0.0.1:0", health, _ok).start()
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.get(f"{status.url}/healthz", timeout=30)
                                    .status_code, range(100)))
        elapsed = time.monotonic() - started
    finally:
        status.stop()
    assert answers == [200] * 100
    assert len(calls) <= elapsed + 1  # 100 requests, one check per second at most


def test_a_slow_check_holds_one_handler_thread_not_all() -> None:
    slow = threading.Event()
    release = threading.Event()

    def health() -> dict[str, bool]:
        if slow.is_set():
            release.wait(30)  # a database pool with every connection taken
        return {"database": True}

    status = StatusServer("127.0.0.1:0", health, _ok).start()
    try:
        assert requests.get(f"{status.url}/healthz", timeout=10).status_code == 200
        slow.set()
        time.sleep(1.1)  # the kept answer is stale: the next caller asks again
        with ThreadPoolExecutor(8) as pool:
            asked = [pool.submit(requests.get, f"{status.url}/healthz", timeout=30)
                     for _ in range(8)]
            # The seven others get the previous answer while one waits for the check.
            wait_for(lambda: sum(f.done() for f in asked) >= 7, timeout=10)
            scrape = requests.get(f"{status.url}/metrics", timeout=10)
            done = [f for f in asked if f.done()]
            release.set()
    finally:
        release.set()
        status.stop()
    assert len(done) == 7
    assert all(f.result().json() == {"ok": True, "database": True} for f in done)
    assert scrape.status_code == 200


def test_a_flood_of_scrapes_renders_the_metrics_twice_a_second_at_most() -> None:
    renders: list[float] = []

    class Counting(Collector):
        def collect(self) -> Iterator[Any]:
            renders.append(time.monotonic())
            yield GaugeMetricFamily("crmsync_test_renders", "renders", value=len(renders))

    collector = Counting()
    REGISTRY.register(collector)
    status = StatusServer("127.0.0.1:0", _ok, _ok).start()
    try:
        registered = len(renders)  # register() collects once to learn the names
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            texts = list(pool.map(lambda n: requests.get(
                f"{status.url}/metrics", timeout=30,
                headers={"Accept-Encoding": "gzip" if n % 2 else "identity"}).text, range(200)))
        elapsed = time.monotonic() - started
        flooded = len(renders) - registered
        assert "crmsync_test_renders" in requests.get(
            f"{status.url}/metrics?name[]=crmsync_test_renders", timeout=10).text
    finally:
        status.stop()
        REGISTRY.unregister(collector)
    assert all("crmsync_test_renders" in text for text in texts)
    # Two variants (gzip or not), each rendered twice a second at most.
    assert flooded <= 2 * 2 * (elapsed + 1)


def test_two_scrapes_in_a_row_see_what_happened_between_them(server: StatusServer) -> None:
    counter = Counter("crmsync_test_events", "events", registry=REGISTRY)
    try:
        first = requests.get(f"{server.url}/metrics", timeout=10).text
        counter.inc()
        second = requests.get(f"{server.url}/metrics", timeout=10).text
    finally:
        REGISTRY.unregister(counter)
    assert "crmsync_test_events_total 0.0" in first
    assert "crmsync_test_events_total 1.0" in second


def test_concurrent_scrapes_of_a_stale_cache_read_the_database_once() -> None:
    reads: list[int] = []
    gate = threading.Event()

    class Counting(ClusterCollector):
        def _read(self) -> Iterator[Any]:
            reads.append(1)
            gate.wait(2)  # a slow database: every scrape arrives while this one reads
            return iter(())

    collector = Counting(engine=None, reads=None, cache_seconds=60)  # type: ignore[arg-type]
    with ThreadPoolExecutor(30) as pool:
        futures = [pool.submit(lambda: list(collector.collect())) for _ in range(30)]
        time.sleep(0.2)
        gate.set()
        for future in futures:
            future.result()
    assert reads == [1]


def test_calls_for_made_up_connections_never_make_the_real_one_read_again() -> None:
    loads: list[str] = []

    def load(name: str) -> ConnectionSettings:
        loads.append(name)
        if name != "crm":
            raise ConfigurationError(f"connection {name!r} has no URL")
        return ConnectionSettings(name="crm", url="https://crm.example.com/api",
                                  webhook=True, webhook_secret=Secret("key"))

    receiver = WebhookReceiver(None, None, settings=load)  # type: ignore[arg-type]

    def call(connection: str, key: str) -> int:
        body = json.dumps({"PrimaryEntityName": "account"}).encode()
        return receiver.handle(Call(connection, {"code": [key]}, {}, str(len(body)),
                                    lambda size: body[:size])).status

    for n in range(300):
        assert call(f"madeup{n}", "key") == 404
        assert call("crm", "key" if n % 2 else f"guess{n}") in (202, 401)
    assert loads.count("crm") == 1  # within the cache's seconds, however many names came
