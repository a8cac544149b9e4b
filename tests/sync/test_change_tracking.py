"""Remote→local passes through Dataverse change tracking (delta links): changes and CRM
deletes arrive by themselves, and an expired token falls back to a full reconcile that
still notices the records deleted meanwhile."""

from __future__ import annotations

import pytest

from tests.sync.conftest import World, add_customers


@pytest.fixture
def tracked(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("CRMSYNC_CRM_CHANGE_TRACKING", "true")
    world.sql("UPDATE crmsync.integration_table_mappings "
              "SET deletion_conflict_resolution = 'propagate_delete' WHERE name = 'CUSTOMER'")
    add_customers(world, 4)
    world.counts()
    assert world.scalar("SELECT delta_link FROM crmsync.integration_table_mappings "
                        "WHERE name = 'CUSTOMER'")
    return world


def test_changes_and_deletes_arrive_through_the_delta_link(tracked: World) -> None:
    world = tracked
    first = world.remote_one("accounts", "accountnumber eq 'C0001'")
    second = world.remote_one("accounts", "accountnumber eq 'C0002'")
    world.patch("accounts", first["accountid"], {"address1_city": "Tracked"})
    world.delete("accounts", second["accountid"])
    came = world.counts("CUSTOMER")[("CUSTOMER", "from")]
    assert came["modified"] == 1 and came["deleted"] == 1
    assert world.scalar("SELECT city FROM erp_t.customer WHERE no = 'C0001'") == "Tracked"
    assert world.scalar("SELECT count(*) FROM erp_t.customer WHERE no = 'C0002'") == 0
    again = world.counts("CUSTOMER")[("CUSTOMER", "from")]
    assert again["modified"] == again["deleted"] == 0


def test_an_expired_token_means_a_full_reconcile(tracked: World) -> None:
    world = tracked
    gone = world.remote_one("accounts", "accountnumber eq 'C0003'")
    world.delete("accounts", gone["accountid"])
    world.emulator.store.expire_change_tokens()
    came = world.counts("CUSTOMER")[("CUSTOMER", "from")]
    assert came["deleted"] == 1
    assert world.scalar("SELECT count(*) FROM erp_t.customer") == 3
