"""The total a remote→local pass over change tracking shows: a read of every record (the
first, or after an expired token) is counted with the set's ``$count`` where the dialect
counts reads (Dataverse; a generic service when configured); a delta read's total is
unknown, shown as "?" with no ETA. On both emulator profiles, change tracking on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.fixtures.emulator import start_emulator_for
from tests.sync.conftest import World, add_customers
from worker.emulator import EmulatorServer
from worker.sync.clients import Clients
from worker.sync.engine import SyncEngine
from worker.sync.model import Direction
from worker.sync.progress import PassObservers, PassProgress

FROM = Direction.FROM_INTEGRATION


@pytest.fixture
def emulator(emulator_profile: str) -> Iterator[EmulatorServer]:
    server = start_emulator_for(emulator_profile, change_tracking=True)
    try:
        yield server
    finally:
        server.stop()


class Totals:
    """What the CUSTOMER pass from the CRM showed, event by event."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    def pass_progress(self, progress: PassProgress, counts: Counter[str]) -> None:
        if (progress.mapping, progress.direction) == ("CUSTOMER", FROM):
            self.seen.append((progress.total_text(), progress.describe()))

    def run(self, world: World) -> list[tuple[str | None, str]]:
        self.seen = []
        world.counts("CUSTOMER")
        return self.seen


@pytest.fixture
def totals(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Totals]:
    monkeypatch.setenv("CRMSYNC_CRM_CHANGE_TRACKING", "true")
    watcher, clients = Totals(), Clients()
    world.sync_engine = SyncEngine(world.engine, clients, PassObservers([watcher]))
    world.counts("CURRENCY")
    add_customers(world, 4)
    yield watcher
    clients.close()


@pytest.mark.parametrize("emulator_profile", ["dataverse", "odata"], indirect=True)
def test_a_full_read_is_counted_and_a_delta_read_has_no_total(
        world: World, totals: Totals, monkeypatch: pytest.MonkeyPatch) -> None:
    if world.profile == "odata":
        monkeypatch.setenv("CRMSYNC_CRM_COUNT_READS", "true")
    first = totals.run(world)  # writes the 4 accounts, then reads every record back
    assert [t for t, _ in first if t is not None][:1] == ["4"]
    assert first[-1][1].startswith("CUSTOMER from CRM: 4 / 4")

    key = "ID" if world.profile == "odata" else "accountid"
    account = world.remote_one("accounts", "accountnumber eq 'C0001'")
    world.patch("accounts", account[key], {"address1_city": "Tracked"})
    delta = totals.run(world)
    assert delta and all(t is None for t, _ in delta)
    assert delta[-1][1].startswith("CUSTOMER from CRM: 1 / ?")
    assert "ETA" not in delta[-1][1]

    world.emulator.store.expire_change_tokens()  # a full reconcile: counted again
    again = totals.run(world)
    assert [t for t, _ in again if t is not None][:1] == ["4"]


@pytest.mark.parametrize("emulator_profile", ["odata"], indirect=True)
def test_a_generic_service_is_not_asked_for_a_count_unless_configured(
        world: World, totals: Totals) -> None:
    seen = totals.run(world)
    assert seen and all(t is None for t, _ in seen)
    assert seen[-1][1].startswith("CUSTOMER from CRM: 4 / ?")
    assert "ETA" not in seen[-1][1]
