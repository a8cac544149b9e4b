"""Where ``crmsync sync`` spends its time during an initial sync: the sample ERP with the
defaults, CURRENCY and SALESPEOPLE synced first, then ``crmsync sync CUSTOMER CONTACTS`` in a
process of its own under cProfile (or py-spy), the emulator in another.

    python bench/profile_sync.py --customers 5000                 # cProfile, top 40
    python bench/profile_sync.py --customers 5000 --py-spy out.svg
    python bench/profile_sync.py --customers 5000 --bulk          # Dataverse bulk messages

Prints the wall time and the process's CPU time per record, the load average, and the
profile sorted by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ratios import ROOT, run_mapping, world


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--py-spy", metavar="SVG", help="sample with py-spy into SVG instead")
    parser.add_argument("--bulk", action="store_true", help="bulk_messages = on")
    parser.add_argument("--mappings", default="CUSTOMER,CONTACTS")
    args = parser.parse_args()
    names = args.mappings.split(",")
    with world("profile", args.customers, ("CURRENCY", "SALESPEOPLE", *names)) as w:
        for name in ("CURRENCY", "SALESPEOPLE"):
            run_mapping(w, name)
        records = int(w.sql("SELECT count(*) FROM erp.customer").scalar())
        if "CONTACTS" in names:
            records += int(w.sql("SELECT count(*) FROM erp.contact").scalar())
        env = {**os.environ, "CRMSYNC_DATABASE_URL": w.url, "CRMSYNC_CRM_URL": w.crm,
               "PYTHONPATH": str(ROOT)}
        if args.bulk:
            env["CRMSYNC_CRM_BULK_MESSAGES"] = "on"
        out = Path(tempfile.mkdtemp()) / "sync.prof"
        if args.py_spy:
            command = ["py-spy", "record", "-o", args.py_spy, "-r", "250", "--gil", "--nonblocking",
                       *(["--format", "raw"] if not args.py_spy.endswith(".svg") else []), "--",
                       sys.executable, "-m", "worker"]
        else:
            command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "worker"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([*command, "--log-level", "warning", "sync", *names], env=env,
                       check=True)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"{records:,} records in {seconds:.1f} s ({records / seconds:,.0f}/s), "
              f"crmsync CPU {cpu * 1e6 / records:.0f} µs/record; "
              f"load average {os.getloadavg()[0]:.2f}")
    if not args.py_spy:
        stats = pstats.Stats(str(out))
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
