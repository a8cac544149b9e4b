"""The two-mapping world of tests/sync (currencies to the CRM, customers both ways) with
job queue entries on NAV's 12-hour inactivity hold, for the probe and push tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.queue.test_worker import wait_for
from tests.sync.conftest import World, add_customers, crm_env, world  # noqa: F401 (fixtures)

HOLD = """INSERT INTO crmsync.job_queue_entries
          (job_kind, mapping_name, run_interval, inactivity_timeout, priority)
          VALUES ('sync_mapping', 'CURRENCY', :interval, '12 hours', 1),
                 ('sync_mapping', 'CUSTOMER', :interval, '12 hours', 2)"""


def status(w: World, mapping: str = "CUSTOMER") -> str:
    return str(w.scalar("SELECT status FROM crmsync.job_queue_entries "
                            "WHERE mapping_name = :m", m=mapping))


@pytest.fixture
def synced(world: World) -> Iterator[World]:  # noqa: F811 (the fixture imported above)
    """Five customers synchronized both ways; nothing pending on either side."""
    add_customers(world, 5)
    world.counts()
    world.counts()
    yield world


def put_on_hold(w: World, interval: str = "2 seconds") -> None:
    """Entries as NAV creates them, already on their 12-hour inactivity hold."""
    w.sql(HOLD, interval=interval)
    w.sql("UPDATE crmsync.job_queue_entries SET status = 'on_hold_inactivity', "
              "next_run_at = now() + interval '12 hours'")
    wait_for(lambda: status(w) == "on_hold_inactivity")


def account_id(w: World, number: str) -> str:
    return str(w.remote_one("accounts", f"accountnumber eq '{number}'")["accountid"])
