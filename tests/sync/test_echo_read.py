"""The remote→local pass after a local→remote pass that wrote many records: most of what it
reads are the echoes of those writes, read by key, stamp and version only; the records a
CRM user changed meanwhile are read whole and synced as ever."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.sync.conftest import World, add_customers
from worker.sync.context import CHUNK
from worker.sync.model import Direction

pytestmark = pytest.mark.parametrize("emulator_profile", ["dataverse", "odata"],
                                     indirect=True)


class EditAfterSending:
    """A CRM user's edits made while the run is between its two passes."""

    def __init__(self, world: World, edits: dict[str, dict[str, str]]) -> None:
        self.world, self.edits = world, edits

    def pass_finished(self, mapping: str, direction: Direction, counts: Counter[str],
                      error: str | None) -> None:
        if mapping != "CUSTOMER" or direction is not Direction.TO_INTEGRATION:
            return
        for number, values in self.edits.items():
            record = self.world.remote_one("accounts", f"accountnumber eq '{number}'")
            self.world.patch("accounts", self.world.rid(record), values)

    def mapping_finished(self, mapping: str, ok: bool) -> None:
        pass


def test_a_crm_edit_made_during_an_initial_sync_arrives_in_the_same_run(world: World) -> None:
    count = CHUNK + 100  # the pass wrote enough records to read their echoes thin
    add_customers(world, count)
    world.sync_engine.observer = EditAfterSending(world, {
        "C0007": {"name": "Renamed in the CRM", "telephone1": "+44 20 7946 0000"},
        "C0555": {"address1_city": "Moved in the CRM"}})
    counts = world.counts("CURRENCY", "CUSTOMER")
    assert counts[("CUSTOMER", "to")]["inserted"] == count
    assert counts[("CUSTOMER", "from")] == Counter(modified=2)
    rows = {no: (name, city, phone) for no, name, city, phone in world.sql(
        "SELECT no, name, city, phone_no FROM erp_t.customer WHERE no IN ('C0007', 'C0555')")}
    assert rows["C0007"] == ("Renamed in the CRM", "City 7", "+44 20 7946 0000")
    assert rows["C0555"] == ("Customer 555", "Moved in the CRM", None)
    # Nothing is left: the next run reads the two changes' echoes and writes nothing.
    world.sync_engine.observer = None
    again = world.counts("CUSTOMER")
    assert not again[("CUSTOMER", "to")] and not again[("CUSTOMER", "from")]


def test_the_echoes_of_a_long_pass_are_not_written_back(world: World) -> None:
    count = CHUNK * 2 + 1
    add_customers(world, count)
    counts = world.counts("CURRENCY", "CUSTOMER")
    assert counts[("CUSTOMER", "to")]["inserted"] == count
    assert not counts[("CUSTOMER", "from")]
    snapshots = world.scalar(
        "SELECT count(*) FROM crmsync.couplings WHERE mapping_name = 'CUSTOMER' "
        "AND state = 'coupled' AND last_result_from IS NULL AND remote_version IS NOT NULL")
    assert snapshots == count
