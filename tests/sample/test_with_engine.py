"""The defaults on the sample schema against the emulator: ``crmsync check`` finds nothing
to complain about, and ``sync --all`` on a fresh install creates everything in the CRM,
coupling the CRM's existing users to the sample salespeople instead of duplicating them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.emulator import EmulatorServer, start_emulator
from worker.emulator.seed import SAMPLE_ACCOUNTS, SAMPLE_CONTACTS
from worker.sample import data
from worker.sample.defaults import setup_defaults
from worker.sync.check import check_all
from worker.sync.engine import SyncEngine

USERS = 7
SALESPEOPLE = 5
CUSTOMERS = 12


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    server = start_emulator(port=0, sample_users=USERS)
    monkeypatch.setenv("CRMSYNC_CRM_URL", server.base_url)
    monkeypatch.setenv("CRMSYNC_CRM_AUTH", "none")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sync(engine: Engine, crm: EmulatorServer) -> Iterator[SyncEngine]:
    data.load_sample_data(engine, customers=CUSTOMERS, salespeople=SALESPEOPLE)
    setup_defaults(engine)
    sync = SyncEngine(engine)
    yield sync
    sync.clients.close()


def _count(server: EmulatorServer, entity_set: str, query: str = "") -> int:
    answer = requests.get(f"{server.base_url}/{entity_set}?$count=true&$top=1{query}",
                          headers={"Accept": "application/json"}, timeout=10)
    answer.raise_for_status()
    return int(answer.json()["@odata.count"])


def test_the_defaults_pass_crmsync_check(sync: SyncEngine) -> None:
    assert [str(p) for p in check_all(sync.engine, sync.clients)] == []


def test_sync_all_on_a_fresh_install_creates_everything(sync: SyncEngine,
                                                        crm: EmulatorServer) -> None:
    sample = data.build_sample_data(CUSTOMERS, SALESPEOPLE)
    summaries = sync.run_all()
    assert [s.error for s in summaries if s.error] == []
    failed = sum(p.counts.get("failed", 0) for s in summaries for p in s.passes)
    assert failed == 0
    assert _count(crm, "transactioncurrencies") == len(data.CURRENCIES)
    assert _count(crm, "uomschedules") == len(data.UNITS)
    customers = "&$filter=statecode eq 0 and customertypecode eq 3"
    assert _count(crm, "accounts", customers) == CUSTOMERS  # created as customers
    assert _count(crm, "accounts") == CUSTOMERS + len(SAMPLE_ACCOUNTS)
    assert _count(crm, "contacts") == len(sample.contacts) + len(SAMPLE_CONTACTS)
    assert _count(crm, "products", "&$filter=producttypecode eq 3") == len(data.RESOURCES)
    assert _count(crm, "products", "&$filter=producttypecode eq 1") == len(data.ITEMS)
    # The users are not duplicated: the sample salespeople were coupled by e-mail, and the
    # users without one became salespeople with the same code rule.
    assert _count(crm, "systemusers") == USERS
    with sync.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM erp.salesperson")) == USERS
        assert conn.scalar(sa.text(
            "SELECT count(*) FROM crmsync.couplings WHERE mapping_name = 'SALESPEOPLE'")) \
            == USERS
    # The CRM's vendors, competitor, partner, inactive account and contacts without a
    # company stayed out of the ERP (NAV's default filters).
    with sync.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM erp.customer")) == CUSTOMERS
        assert conn.scalar(sa.text("SELECT count(*) FROM erp.contact")) == len(sample.contacts)
        assert conn.scalar(sa.text(
            "SELECT count(*) FROM erp.customer WHERE name = ANY(:names)"),
            {"names": [a["name"] for a in SAMPLE_ACCOUNTS]}) == 0
    again = sync.run_all()
    changed = {s.mapping: dict(s.counts) for s in again
               if any(s.counts.get(k) for k in ("inserted", "modified", "failed"))}
    assert changed == {}
