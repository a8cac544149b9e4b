"""``crmsync audit`` on N sample customers: its time, its memory, and the raw capacity of the
same reads in the same run (the CRM's records by key in the chunks the audit asks for, and
the local rows by key), with the emulator in its own process.

    python bench/audit_bench.py --customers 100000

The CUSTOMER mapping (and the two it depends on) is synchronized first; then 100 ERP rows
are rewritten with the triggers off (drift the audit must find). Memory: the process's
resident set sampled every 20 ms while the audit runs (its peak above the level before
it), and the same for an audit of the first tenth of the couplings, to show whether memory
grows with the number of records. Uses CRMSYNC_DATABASE_URL's server (default: local
PostgreSQL on 127.0.0.1:5432) and a scratch database crmsync_audit_bench.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from emulator_process import SERVICE, free_port, start_emulator
from scratch import scratch_database

from worker.db.engine import create_engine
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults
from worker.sync import audit as audit_module
from worker.sync.audit import audit_run
from worker.sync.clients import Clients
from worker.sync.context import CHUNK
from worker.sync.engine import SyncEngine
from worker.sync.mappings import load_with_marks
from worker.sync.model import Direction


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss(work: Callable[[], Any]) -> tuple[Any, float, int, int]:
    """``work()``'s result, seconds, and the resident set before and at its peak."""
    base, peak, done = rss(), [rss()], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    return result, seconds, base, max(peak[0], rss())


def raw_reads(sync: SyncEngine, limit: int | None) -> tuple[int, float]:
    """The same reads without the comparison: couplings by page, local rows by key, the
    CRM's records by key, chunk by chunk."""
    mapping, marks = load_with_marks(sync.engine, "CUSTOMER")
    px = sync.context(mapping, Direction.TO_INTEGRATION, 0, lambda: None, None, marks)
    n, t = 0, time.perf_counter()
    for page in audit_module._pages(sync.engine, "CUSTOMER"):
        with sync.engine.connect() as conn:
            px.local.fetch(conn, [c.local_id for c in page], px.where)
        list(px.remote.read_by_keys([c.remote_id for c in page], select=px.remote_select()))
        n += len(page)
        if limit is not None and n >= limit:
            break
    return n, time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100000)
    args = parser.parse_args()
    url = scratch_database("crmsync_audit_bench")
    engine = create_engine(url, pool_size=8)
    port = free_port()
    crm = start_emulator(port, "--sample-users", "5")
    os.environ["CRMSYNC_CRM_URL"] = f"http://127.0.0.1:{port}{SERVICE}"
    try:
        t = time.perf_counter()
        load_sample_data(engine, customers=args.customers)
        setup_defaults(engine)
        sync = SyncEngine(engine, Clients())
        for summary in sync.run_all(["CURRENCY", "SALESPEOPLE", "CUSTOMER"]):
            assert summary.error is None, summary.error
        print(f"set-up: {args.customers} customers synchronized in "
              f"{time.perf_counter() - t:.0f} s")
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            conn.execute(sa.text(
                "UPDATE erp.customer SET city = 'Bulk load' "
                "WHERE no IN (SELECT no FROM erp.customer ORDER BY no LIMIT 100)"))

        tenth = max(CHUNK, args.customers // 10)
        _, small_s, small_base, small_peak = peak_rss(lambda: _audit_first(sync, tenth))
        results, seconds, base, peak = peak_rss(lambda: audit_run(sync, ["CUSTOMER"]))
        (result,) = results
        n, raw_s = raw_reads(sync, None)
        load1, load5, _ = os.getloadavg()
        print(f"audit: {result.audited} records in {seconds:.1f} s "
              f"({result.audited / seconds:.0f} records/s), {result.drifted} drifted "
              f"(100 expected)")
        print(f"raw reads of the same records (couplings, local rows, CRM GETs by key): "
              f"{n} in {raw_s:.1f} s ({n / raw_s:.0f}/s); audit / raw = {seconds / raw_s:.2f}")
        print(f"memory: resident set {base / 2**20:.0f} MiB before the audit, peak "
              f"{peak / 2**20:.0f} MiB (+{(peak - base) / 2**20:.1f} MiB) for "
              f"{result.audited} records; +{(small_peak - small_base) / 2**20:.1f} MiB for "
              f"the first {tenth} ({small_s:.1f} s)")
        print(f"machine: {os.cpu_count()} CPUs, load average {load1:.2f} (1 min), "
              f"{load5:.2f} (5 min) at the end")
    finally:
        crm.terminate()
        crm.wait(10)
        engine.dispose()
    return 0


def _audit_first(sync: SyncEngine, limit: int) -> None:
    """An audit of the first ``limit`` couplings only (the same code, fewer pages)."""
    reader = audit_module._Reader(sync, *load_with_marks(sync.engine, "CUSTOMER"))
    n = 0
    for page in audit_module._pages(sync.engine, "CUSTOMER"):
        reader.compare(page)
        n += len(page)
        if n >= limit:
            return


if __name__ == "__main__":
    raise SystemExit(main())
