"""Records per second written with Dataverse's bulk messages (CreateMultiple,
UpdateMultiple) against the same records written with ``$batch``, on the crmsync emulator.

Starts ``crmsync emulator`` in its own process, then for each way creates ``--records``
accounts and updates them once: ``$batch`` (``ODataClient.batch``, ``batch_size`` 100),
``bulk`` (``EntitySet.create_multiple`` / ``update_multiple``, ``bulk_size`` 500, versions
read back) and ``bulk, no read-back``. Each call takes one chunk of ``--chunk`` records, as
the sync passes send them. Printed per way: records/s, the requests the service counted (its
service protection limit counts requests), and the server's CPU seconds per 1,000 records.

    python bench/bulk_bench.py
    python bench/bulk_bench.py --records 50000 --chunk 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from collections.abc import Callable

import requests
from emulator_process import SERVICE, free_port, start_emulator

from worker.remote.batch import Kind, Operation, OperationResult
from worker.remote.bulk import BulkRecord
from worker.remote.client import EntitySet, ODataClient
from worker.remote.config import load_connection

Writer = Callable[[EntitySet, list[str], str], list[OperationResult]]


def batch_writer(kind: Kind) -> Writer:
    def write(accounts: EntitySet, keys: list[str], name: str) -> list[OperationResult]:
        return accounts.client.batch([Operation(kind, accounts, k, _values(n, name))
                                      for n, k in enumerate(keys)])
    return write


def bulk_writer(kind: str, read_back: bool) -> Writer:
    def write(accounts: EntitySet, keys: list[str], name: str) -> list[OperationResult]:
        records = [BulkRecord(k, _values(n, name)) for n, k in enumerate(keys)]
        method = accounts.create_multiple if kind == "create" else accounts.update_multiple
        return method(records, read_back=read_back)
    return write


def _values(n: int, name: str) -> dict[str, object]:
    return {"name": f"{name} {n}", "telephone1": "+49 30 1234567", "creditlimit": 1000 + n}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(root: str, pid: int, writer: Writer, keys: list[str], chunk: int, name: str,
            client: ODataClient) -> tuple[float, int, float]:
    """(records/s, requests counted by the service, server CPU s per 1,000 records)."""
    accounts = client.entity_set("accounts", "accountid")
    before = requests.get(f"{root}/_admin/stats", timeout=10).json()["requests"]
    cpu = cpu_seconds(pid)
    began = time.perf_counter()
    failed = 0
    for start in range(0, len(keys), chunk):
        failed += sum(not r.ok for r in writer(accounts, keys[start:start + chunk], name))
    elapsed = time.perf_counter() - began
    if failed:
        raise SystemExit(f"{failed} writes failed")
    spent = cpu_seconds(pid) - cpu
    counted = requests.get(f"{root}/_admin/stats", timeout=10).json()["requests"] - before
    return len(keys) / elapsed, counted, spent * 1000 / len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=1000, help="records per call")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    port = free_port()
    process = start_emulator(port)
    root = f"http://127.0.0.1:{port}"
    env = {"CRMSYNC_BENCH_URL": root + SERVICE, "CRMSYNC_BENCH_CONCURRENCY":
           str(args.concurrency), "CRMSYNC_BENCH_BATCH_SIZE": "100",
           "CRMSYNC_BENCH_BULK_SIZE": "500"}
    ways = [("$batch", batch_writer("create"), batch_writer("update")),
            ("bulk", bulk_writer("create", True), bulk_writer("update", True)),
            ("bulk, no read-back", bulk_writer("create", False), bulk_writer("update", False))]
    try:
        print(f"crmsync bulk bench: {args.records} accounts, {args.chunk} a call, "
              f"concurrency {args.concurrency}, {platform.python_implementation()} "
              f"{platform.python_version()}, {os.cpu_count()} CPUs")
        print(f"{'way':>20} {'op':>7} {'records/s':>10} {'requests':>9} "
              f"{'server CPU s / 1000':>20}")
        with ODataClient(load_connection("bench", env=env)) as client:
            for label, create, update in ways:
                keys = [str(uuid.uuid4()) for _ in range(args.records)]
                for op, writer in (("create", create), ("update", update)):
                    rate, counted, cpu = measure(root, process.pid, writer, keys, args.chunk,
                                                 f"{label} {op}", client)
                    print(f"{label:>20} {op:>7} {rate:>10.0f} {counted:>9} {cpu:>20.2f}",
                          flush=True)
    finally:
        process.kill()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
