"""Sync engine throughput: the seven default mappings on N sample customers (about 2 contacts
each) against the emulator in its own process. Prints the initial full sync, a run with
nothing changed (queries and requests), and a run after 100 local and 100 remote edits.

    python bench/sync_bench.py --customers 10000

Uses CRMSYNC_DATABASE_URL's server (default: local PostgreSQL on 127.0.0.1:5432) and creates
a scratch database crmsync_bench there.
"""

from __future__ import annotations

import argparse
import os
import time

import requests
import sqlalchemy as sa
from emulator_process import SERVICE, free_port, start_emulator
from scratch import scratch_database

from worker.db.engine import create_engine
from worker.sample.data import load_sample_data
from worker.sample.defaults import setup_defaults
from worker.sync.clients import Clients
from worker.sync.engine import SyncEngine


def statements(engine: sa.engine.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()")))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10000)
    args = parser.parse_args()
    url = scratch_database("crmsync_bench")
    engine = create_engine(url, pool_size=8)
    port = free_port()
    crm = start_emulator(port, "--sample-users", "5")
    base_url = f"http://127.0.0.1:{port}{SERVICE}"
    os.environ["CRMSYNC_CRM_URL"] = base_url
    try:
        t = time.perf_counter()
        load_sample_data(engine, customers=args.customers)
        print(f"sample data: {args.customers} customers loaded in {time.perf_counter() - t:.1f} s")
        setup_defaults(engine)
        sync = SyncEngine(engine, Clients())

        def run(label: str) -> None:
            before_tx = statements(engine)
            before_req = requests.get(f"http://127.0.0.1:{port}/_admin/stats", timeout=5).json()
            t = time.perf_counter()
            summaries = sync.run_all()
            seconds = time.perf_counter() - t
            after_req = requests.get(f"http://127.0.0.1:{port}/_admin/stats", timeout=5).json()
            records = sum(p.counts[k] for s in summaries for p in s.passes
                          for k in ("inserted", "modified", "deleted"))
            failed = sum(p.counts["failed"] for s in summaries for p in s.passes)
            print(f"{label}: {seconds:.2f} s, {records} records written "
                  f"({records / seconds:.0f}/s), failed {failed}, "
                  f"{statements(engine) - before_tx} local transactions, "
                  f"{_requests(after_req) - _requests(before_req)} CRM requests")
            for s in summaries:
                for p in s.passes:
                    shown = {k: v for k, v in p.counts.items() if v}
                    print(f"    {s.mapping:<17} {p.direction.value:<17} {shown}")

        run("initial full sync")
        run("nothing changed")
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE erp.customer SET phone_no = '+1 555 0100' "
                                 "WHERE no IN (SELECT no FROM erp.customer ORDER BY no LIMIT 100)"))
        accounts = requests.get(f"{base_url}/accounts", params={
            "$select": "accountid", "$orderby": "accountnumber desc", "$top": "100"},
            timeout=30).json()["value"]
        session = requests.Session()
        for a in accounts:
            session.patch(f"{base_url}/accounts({a['accountid']})",
                          json={"address1_city": "Remote City"}, headers={"If-Match": "*"})
        run("100 local + 100 remote edits")
    finally:
        crm.terminate()
        crm.wait(10)
        engine.dispose()
    return 0


def _requests(stats: dict) -> int:
    return int(stats.get("requests", stats.get("total", 0)))


if __name__ == "__main__":
    raise SystemExit(main())
