"""Records per second the crmsync OData client creates, in $batch requests of 1, 100 and
1000 operations, against the crmsync emulator on loopback.

Starts ``crmsync emulator`` in its own process (so client and server do not share a GIL),
then for each batch size sends idempotent creates (``PATCH accounts(<id>)`` +
``If-None-Match: *`` + ``return=representation``) through ``ODataClient.batch`` with the
connection's concurrency, and prints records/s. A last row measures the dialect without
$batch (one PATCH per record, ``concurrency`` in parallel). Beside records/s it prints
the client's own CPU time per record (user + system of this process, every thread; the
emulator's CPU is its own process's) and the load average, so that a change to the client
can be measured before and after on one machine. ``--bulk`` sends the creates as
Dataverse's ``CreateMultiple`` instead (the dialect's ``bulk_messages = "on"``).

    python bench/client_bench.py
    python bench/client_bench.py --concurrency 8 --records 20000
    python bench/client_bench.py --sizes 100 --records 20000 --bulk
    python bench/client_bench.py --url http://127.0.0.1:8080/api/data/v9.2   # running service
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from emulator_process import SERVICE, free_port, start_emulator

from worker.remote.batch import Operation
from worker.remote.client import EntitySet, ODataClient
from worker.remote.config import load_connection

# Records per batch size by default: enough for a few seconds each on a laptop.
DEFAULT_RECORDS = {1: 2000, 100: 10000, 1000: 20000, 0: 4000}


@dataclass
class Latencies:
    """A RequestObserver collecting the duration of every HTTP request."""

    seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        with self.lock:
            self.seconds.append(seconds)

    def throttled(self, seconds: float) -> None:
        pass


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def account_creates(accounts: EntitySet, records: int) -> list[Operation]:
    """Creates of ``records`` new accounts (name, number, telephone, credit limit), each
    with its index as ``ref``."""
    return [Operation("create", accounts, str(uuid.uuid4()),
                      {"name": f"bench {i}", "accountnumber": f"B{i}",
                       "telephone1": "+49 30 1234567",
                       "creditlimit": Decimal(f"{1000 + i}.50")}, ref=i)
            for i in range(records)]


def account_updates(creates: list[Operation]) -> list[Operation]:
    """An update of two fields of each account that ``creates`` made."""
    return [Operation("update", op.entity_set, op.key,
                      {"name": f"bench {op.ref} v2", "creditlimit": Decimal("7.25")},
                      ref=op.ref) for op in creates]


def run(url: str, batch_size: int, records: int, concurrency: int,
        bulk: bool = False, chunk: int | None = None,
        kind: str = "create") -> dict[str, float]:
    """Create ``records`` accounts (``kind`` update: create them unmeasured, then measure
    their updates), ``chunk`` operations per call; batch_size 0 means the dialect without
    $batch."""
    env = {"CRMSYNC_BENCH_BULK_MESSAGES": "on" if bulk else "off",
           "CRMSYNC_BENCH_URL": url, "CRMSYNC_BENCH_CONCURRENCY": str(concurrency),
           "CRMSYNC_BENCH_BATCH_SIZE": str(max(batch_size, 1)),
           "CRMSYNC_BENCH_BATCH": "false" if batch_size == 0 else "true"}
    latencies = Latencies()
    with ODataClient(load_connection("bench", env=env), latencies) as client:
        accounts = client.entity_set("accounts", "accountid")
        ops = account_creates(accounts, records)
        # By default one call per wave of `concurrency` batches; the sync engine sends
        # one call per chunk (500 records).
        wave = chunk or max(batch_size, 1) * concurrency
        if kind == "update":
            for i in range(0, records, wave):
                client.batch(ops[i:i + wave])
            ops = account_updates(ops)
            latencies.seconds.clear()
        started, cpu_started = time.perf_counter(), cpu_seconds()
        failed = 0
        for i in range(0, records, wave):
            failed += sum(not r.ok for r in client.batch(ops[i:i + wave]))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    if failed:
        raise SystemExit(f"{failed} {kind}s failed")
    ms = sorted(s * 1000 for s in latencies.seconds)
    return {"records": records, "seconds": elapsed, "per_second": records / elapsed,
            "cpu_us": cpu / records * 1e6,
            "requests": len(ms), "p50_ms": statistics.median(ms),
            "p95_ms": ms[int(len(ms) * 0.95) - 1] if len(ms) > 1 else ms[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="service root of a running service (default: start "
                                      "an emulator)")
    parser.add_argument("--sizes", default="1,100,1000,0",
                        help="batch sizes; 0 = no $batch (default 1,100,1000,0)")
    parser.add_argument("--records", type=int, help="records per size (default: by size)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="parallel requests (default 4, the connection default)")
    parser.add_argument("--chunk", type=int,
                        help="operations per ODataClient.batch call (default batch size × "
                             "concurrency; the sync engine sends 500)")
    parser.add_argument("--kind", choices=("create", "update"), default="create",
                        help="the operations measured (default create)")
    parser.add_argument("--bulk", action="store_true",
                        help="creates as CreateMultiple (bulk_messages = on)")
    args = parser.parse_args()

    process = None
    url = args.url
    if url is None:
        port = free_port()
        process = start_emulator(port)
        url = f"http://127.0.0.1:{port}{SERVICE}"
    try:
        print(f"crmsync client bench: {args.kind}s via ODataClient.batch"
              f"{' (bulk messages on)' if args.bulk else ''}, concurrency "
              f"{args.concurrency}, {platform.python_implementation()} "
              f"{platform.python_version()}, {os.cpu_count()} CPUs, {url}")
        print(f"{'batch size':>10} {'records':>8} {'seconds':>8} {'records/s':>10} "
              f"{'client CPU µs/rec':>17} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'load 1m':>8}")
        for size in (int(s) for s in args.sizes.split(",")):
            records = args.records or DEFAULT_RECORDS.get(size, 10000)
            r = run(url, size, records, args.concurrency, args.bulk, args.chunk, args.kind)
            label = "no $batch" if size == 0 else str(size)
            print(f"{label:>10} {records:>8} {r['seconds']:>8.2f} {r['per_second']:>10.0f} "
                  f"{r['cpu_us']:>17.0f} {r['requests']:>9} {r['p50_ms']:>8.1f} "
                  f"{r['p95_ms']:>8.1f} {os.getloadavg()[0]:>8.2f}", flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
