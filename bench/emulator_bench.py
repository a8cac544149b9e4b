"""Requests per second the crmsync emulator serves on loopback.

Starts ``crmsync emulator`` in its own process (as a demo or a benchmark of crmsync would),
loaded from a data file of accounts (stamped ten a second), then drives it with keep-alive
clients for a few seconds per scenario:

- ``get``:   GET /accounts(<id>) with $select (a read by key)
- ``patch``: PATCH /accounts(<id>) with a two-field body and If-Match: * (an update)
- ``page``:  GET /accounts?$filter=...&$top=50 (a filtered collection read, not indexable)
- ``altkey``: GET /accounts(accountnumber='C000123') (a read by alternate key)
- ``keys``:  GET /accounts?$filter=accountid eq a or ... (ten keys: crmsync's read-back)
- ``modified``: GET /accounts?$filter=modifiedon ge <the last 50 records' stamp>, ordered
  by (modifiedon, accountid), first page of 50 (crmsync's incremental read)
- ``paging``: the next page of a read of every account in (modifiedon, accountid) order,
  50 records a page, from a random position (following ``@odata.nextLink``)

``--records`` takes several counts (``--records 1000,200000``): the scenarios run at each,
so the growth of a request's cost with the size of the set shows side by side.

Clients are ``requests.Session`` objects (what crmsync itself uses) or bare ``http.client``
connections (``--client http``, cheaper per request, so the server is measured rather than
the client), in ``--processes`` processes of ``--threads`` threads each.

    python bench/emulator_bench.py                    # http.client, 2 processes x 2 threads
    python bench/emulator_bench.py --client requests --threads 4
    python bench/emulator_bench.py --records 1000,200000 --profile odata
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from threading import Thread
from urllib.parse import urlsplit

import requests
from emulator_process import SERVICE, free_port, start_emulator

SCENARIOS = ("get", "patch", "page", "altkey", "keys", "modified", "paging")


def data_file(path: str, count: int, names: dict[str, str]) -> list[str]:
    """Write an emulator data file of ``count`` accounts (stamped ten a second, as a load
    would leave them) and return their ids; loading it is far quicker than creating them."""
    ids = [str(uuid.UUID(int=random.getrandbits(128), version=4)) for _ in range(count)]
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for n, key in enumerate(ids):
        stamp = (base + timedelta(seconds=n // 10)).isoformat().replace("+00:00", "Z")
        rows.append({names["key"]: key, "name": f"Account {n:06d}", "accountnumber":
                     f"C{n:06d}", "address1_city": "Berlin", "statecode": 0,
                     "createdon": stamp, names["modified"]: stamp, "versionnumber": n + 1})
    with open(path, "w") as out:
        json.dump({"versionnumber": count, "sets": {"accounts": rows}}, out)
    return ids


HEADERS = {"Accept": "application/json", "OData-Version": "4.0", "OData-MaxVersion": "4.0"}
NAMES = {"dataverse": {"key": "accountid", "modified": "modifiedon"},
         "odata": {"key": "ID", "modified": "modifiedAt"}}
Extra = dict[str, str | list[str]]


def prepare(root: str, ids: list[str], names: dict[str, str]) -> Extra:
    """What the ``modified`` and ``paging`` scenarios need: the stamp of the 50th-last
    record, and next links of reads that start at 20 positions spread over the set."""
    order = f"$orderby={names['modified']}%20asc,{names['key']}%20asc"
    with requests.Session() as session:
        def stamp(key: str) -> str:
            doc = session.get(f"{root}{SERVICE}/accounts({key})?$select={names['modified']}",
                              headers=HEADERS, timeout=60).json()
            return str(doc[names["modified"]])

        links = []
        for n in range(20):
            since = stamp(ids[(n * 7919) % len(ids)])
            reply = session.get(f"{root}{SERVICE}/accounts?$select=name&$filter="
                                f"{names['modified']}%20ge%20{since}&{order}",
                                headers={**HEADERS, "Prefer": "odata.maxpagesize=50"},
                                timeout=120).json()
            link = reply.get("@odata.nextLink")
            if link:
                links.append(link if link.startswith("http") else f"{root}{SERVICE}/{link}")
        return {**names, "order": order, "links": [u.removeprefix(root) for u in links],
                "stamp": stamp(ids[-50 if len(ids) > 50 else 0])}


def request_for(scenario: str, key: str, n: int, ids: list[str],
                extra: Extra) -> tuple[str, str, bytes, dict[str, str]]:
    headers = dict(HEADERS)
    if scenario == "get":
        return "GET", f"{SERVICE}/accounts({key})?$select=name,accountnumber", b"", headers
    if scenario == "patch":
        body = json.dumps({"telephone1": f"+49 30 {n:07d}", "address1_city": "Hamburg"})
        headers.update({"Content-Type": "application/json", "If-Match": "*"})
        return "PATCH", f"{SERVICE}/accounts({key})", body.encode(), headers
    if scenario == "altkey":
        number = f"C{n % len(ids):06d}"
        return ("GET", f"{SERVICE}/accounts(accountnumber='{number}')?$select=name", b"",
                headers)
    if scenario == "keys":
        keys = "%20or%20".join(f"{extra['key']}%20eq%20{ids[(n + 97 * j) % len(ids)]}"
                               for j in range(10))
        return "GET", f"{SERVICE}/accounts?$select=name&$filter={keys}", b"", headers
    if scenario == "modified":
        headers["Prefer"] = "odata.maxpagesize=50"
        return ("GET", f"{SERVICE}/accounts?$select=name&$filter={extra['modified']}%20ge%20"
                       f"{extra['stamp']}&{extra['order']}", b"", headers)
    if scenario == "paging":
        links = extra["links"]
        return "GET", links[n % len(links)], b"", headers
    query = "$select=name&$filter=startswith(accountnumber,'C0001')%20and%20statecode%20eq%200"
    return "GET", f"{SERVICE}/accounts?{query}&$top=50", b"", headers


def client_thread(kind: str, root: str, scenario: str, ids: list[str],
                  extra: Extra, seconds: float, offset: int,
                  out: list[tuple[int, int, list[float]]]) -> None:
    """Send requests for ``seconds``; append (ok, failed, latencies) to ``out``."""
    ok = failed = 0
    latencies: list[float] = []
    send = _http_client(root) if kind == "http" else _requests_client(root)
    deadline = time.perf_counter() + seconds
    n = offset
    while time.perf_counter() < deadline:
        method, path, body, headers = request_for(scenario, ids[n % len(ids)], n, ids, extra)
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


def client_process(args: tuple[str, str, str, list[str], dict[str, list[str]], float, int,
                                int]) -> tuple[int, int, list[float]]:
    kind, root, scenario, ids, extra, seconds, threads, index = args
    out: list[tuple[int, int, list[float]]] = []
    workers = [Thread(target=client_thread,
                      args=(kind, root, scenario, ids, extra, seconds,
                             (index * threads + t) * 7919, out))
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
                 scenario: str, ids: list[str], extra: Extra,
                 server_pid: int | None) -> dict[str, float]:
    jobs = [(options.client, root, scenario, ids, extra, options.seconds, options.threads, i)
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
    parser.add_argument("--client", choices=("requests", "http"), default="http",
                        help="http: bare http.client (measures the server; default); "
                             "requests: requests.Session, what crmsync uses")
    parser.add_argument("--profile", choices=sorted(NAMES), default="dataverse")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per process")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--records", default="2000",
                        help="accounts, or several counts separated by commas")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    options = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()} ({platform.system()})")
    print(f"clients: {options.processes} processes x {options.threads} threads, "
          f"{options.client}, keep-alive; profile {options.profile}; "
          f"{options.seconds:g} s per scenario")
    for count in (int(c) for c in options.records.split(",")):
        run_at(options, count)
    return 0


def run_at(options: argparse.Namespace, count: int) -> None:
    """Every scenario against a fresh emulator holding ``count`` accounts."""
    names = NAMES[options.profile]
    scenarios = [s for s in options.scenarios.split(",")
                 if not (s == "altkey" and options.profile == "odata")]  # no alternate keys
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "accounts.json")
        ids = data_file(path, count, names)
        port = free_port()
        server = start_emulator(port, "--data-file", path, "--page-size", "50",
                                profile=options.profile, wait=30 + count / 1000)
        root = f"http://127.0.0.1:{port}"
        try:
            extra = prepare(root, ids, names)
            print(f"-- {count} accounts", flush=True)
            with multiprocessing.Pool(options.processes) as pool:
                for scenario in scenarios:
                    figures = run_scenario(pool, options, root, scenario, ids, extra,
                                           server.pid)
                    print(f"{scenario:8} " + "  ".join(f"{k}={v}" for k, v in figures.items()),
                          flush=True)
            stats = requests.get(f"{root}/_admin/stats", timeout=5).json()
            print(f"server counted {stats['requests']} data requests, "
                  f"statuses {stats['by_status']}")
        finally:
            server.kill()  # not terminate: it would save the data file, for nothing
            server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
