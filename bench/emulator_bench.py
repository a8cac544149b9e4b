"""Requests per second the crmsync emulator serves on loopback.

Starts ``crmsync emulator`` in its own process (as a demo or a benchmark of crmsync would),
seeds accounts, then drives it with keep-alive clients for a few seconds per scenario:

- ``get``:   GET /accounts(<id>) with $select (a read by key)
- ``patch``: PATCH /accounts(<id>) with a two-field body and If-Match: * (an update)
- ``page``:  GET /accounts?$filter=...&$top=50 (a filtered collection read)

Clients are ``requests.Session`` objects (what crmsync itself uses) or bare ``http.client``
connections (``--client http``, cheaper per request, so the server is measured rather than
the client), in ``--processes`` processes of ``--threads`` threads each.

    python bench/emulator_bench.py                    # http.client, 2 processes x 2 threads
    python bench/emulator_bench.py --client requests --threads 4
    python bench/emulator_bench.py --url http://127.0.0.1:8080   # an emulator already running
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from threading import Thread
from urllib.parse import urlsplit

import requests
from emulator_process import SERVICE, free_port, start_emulator

SCENARIOS = ("get", "patch", "page")


def seed(root: str, count: int) -> list[str]:
    """Create ``count`` accounts with $batch (100 per batch); return their ids."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with requests.Session() as session:
        session.post(f"{root}/_admin/reset")
        for start in range(0, count, 100):
            boundary = f"batch_{uuid.uuid4()}"
            parts = []
            for n, key in enumerate(ids[start:start + 100], start):
                body = json.dumps({"accountid": key, "name": f"Account {n:06d}",
                                   "accountnumber": f"C{n:06d}", "address1_city": "Berlin"})
                parts.append(f"--{boundary}\r\nContent-Type: application/http\r\n"
                             f"Content-Transfer-Encoding: binary\r\n\r\n"
                             f"POST {SERVICE}/accounts HTTP/1.1\r\n"
                             f"Content-Type: application/json\r\n\r\n{body}\r\n")
            payload = "".join(parts) + f"--{boundary}--\r\n"
            response = session.post(f"{root}{SERVICE}/$batch", data=payload.encode(),
                                    headers={"Content-Type":
                                             f"multipart/mixed; boundary={boundary}"})
            response.raise_for_status()
    return ids


def request_for(scenario: str, key: str, n: int) -> tuple[str, str, bytes, dict[str, str]]:
    headers = {"Accept": "application/json", "OData-Version": "4.0",
               "OData-MaxVersion": "4.0"}
    if scenario == "get":
        return "GET", f"{SERVICE}/accounts({key})?$select=name,accountnumber", b"", headers
    if scenario == "patch":
        body = json.dumps({"telephone1": f"+49 30 {n:07d}", "address1_city": "Hamburg"})
        headers.update({"Content-Type": "application/json", "If-Match": "*"})
        return "PATCH", f"{SERVICE}/accounts({key})", body.encode(), headers
    query = "$select=name&$filter=startswith(accountnumber,'C0001')%20and%20statecode%20eq%200"
    return "GET", f"{SERVICE}/accounts?{query}&$top=50", b"", headers


def client_thread(kind: str, root: str, scenario: str, ids: list[str], seconds: float,
                  offset: int, out: list[tuple[int, int, list[float]]]) -> None:
    """Send requests for ``seconds``; append (ok, failed, latencies) to ``out``."""
    ok = failed = 0
    latencies: list[float] = []
    send = _http_client(root) if kind == "http" else _requests_client(root)
    deadline = time.perf_counter() + seconds
    n = offset
    while time.perf_counter() < deadline:
        method, path, body, headers = request_for(scenario, ids[n % len(ids)], n)
        began = time.perf_counter()
        status = send(method, path, body, headers)
        latencies.append(time.perf_counter() - began)
        if status < 400:
            ok += 1
        else:
            failed += 1
        n += 1
    out.append((ok, failed, latencies))


Sender = Callable[[str, str, bytes, dict[str, str]], int]


def _requests_client(root: str) -> Sender:
    session = requests.Session()

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        return session.request(method, root + path, data=body or None, headers=headers).status_code

    return send


def _http_client(root: str) -> Sender:
    url = urlsplit(root)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status

    return send


def client_process(args: tuple[str, str, str, list[str], float, int, int]
                   ) -> tuple[int, int, list[float]]:
    kind, root, scenario, ids, seconds, threads, index = args
    out: list[tuple[int, int, list[float]]] = []
    workers = [Thread(target=client_thread,
                      args=(kind, root, scenario, ids, seconds, (index * threads + t) * 7919, out))
               for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    latencies = [x for _, _, lat in out for x in lat]
    return sum(o for o, _, _ in out), sum(f for _, f, _ in out), latencies


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) of a process, from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_scenario(pool: multiprocessing.pool.Pool, options: argparse.Namespace, root: str,
                 scenario: str, ids: list[str], server_pid: int | None) -> dict[str, float]:
    jobs = [(options.client, root, scenario, ids, options.seconds, options.threads, i)
            for i in range(options.processes)]
    cpu_before = cpu_seconds(server_pid)
    began = time.perf_counter()
    results = pool.map(client_process, jobs)
    elapsed = time.perf_counter() - began
    cpu_after = cpu_seconds(server_pid)
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    figures = {"requests_per_second": round((ok + failed) / elapsed), "ok": ok,
               "failed": failed, "p50_ms": round(quantiles[49] * 1000, 2),
               "p99_ms": round(quantiles[98] * 1000, 2)}
    if cpu_before is not None and cpu_after is not None:
        # Share of one core the server used: near 100% means the server is the bottleneck
        # (one Python process is bound to a core by the GIL); well below, the clients are.
        figures["server_cpu_percent"] = round(100 * (cpu_after - cpu_before) / elapsed)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="root URL of a running emulator (default: start one)")
    parser.add_argument("--client", choices=("requests", "http"), default="http",
                        help="http: bare http.client (measures the server; default); "
                             "requests: requests.Session, what crmsync uses")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per process")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    options = parser.parse_args()

    server = None
    root = options.url
    if root is None:
        port = free_port()
        server = start_emulator(port)
        root = f"http://127.0.0.1:{port}"
    try:
        ids = seed(root, options.records)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"Python {platform.python_version()} ({platform.system()})")
        print(f"clients: {options.processes} processes x {options.threads} threads, "
              f"{options.client}, keep-alive; {options.records} accounts; "
              f"{options.seconds:g} s per scenario")
        with multiprocessing.Pool(options.processes) as pool:
            for scenario in options.scenarios.split(","):
                figures = run_scenario(pool, options, root, scenario, ids,
                                       server.pid if server else None)
                print(f"{scenario:6} " + "  ".join(f"{k}={v}" for k, v in figures.items()),
                      flush=True)
        stats = requests.get(f"{root}/_admin/stats", timeout=5).json()
        print(f"server counted {stats['requests']} data requests, statuses {stats['by_status']}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
