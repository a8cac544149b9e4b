"""A small two-mapping world for engine tests: ``erp_t.currency`` → transactioncurrencies
(to CRM) and ``erp_t.customer`` ↔ accounts (bidirectional, with a currency lookup), against
a real database and the emulator over HTTP.

The emulator imitates Dataverse unless a test parametrizes ``emulator_profile`` (see
tests/fixtures/emulator.py): with ``odata`` the mappings use the generic service's key
``ID``, its ``modifiedAt`` and its ``<nav>_ID`` lookups, and the connection the ``odata``
dialect with ``$batch`` on. ``World.rid`` and ``World.lookup`` read records either way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.emulator import EmulatorServer
from worker.sync.clients import Clients
from worker.sync.engine import RunSummary, SyncEngine
from worker.sync.model import Direction

SCHEMA = """
CREATE SCHEMA erp_t;
CREATE TABLE erp_t.currency (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), code varchar(10) UNIQUE NOT NULL,
    description varchar(30), symbol varchar(10));
CREATE TABLE erp_t.customer (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), no varchar(20) UNIQUE,
    name varchar(100), city varchar(30), phone_no varchar(30),
    currency_code varchar(10) REFERENCES erp_t.currency (code));
INSERT INTO erp_t.currency (code, description, symbol)
     VALUES ('EUR', 'Euro', '€'), ('USD', 'US Dollar', '$'), ('GBP', 'Pound', '£');
INSERT INTO crmsync.integration_table_mappings
       (name, local_table, entity_set, remote_key, remote_modified_on, direction,
        sync_only_coupled)
VALUES ('CURRENCY', 'erp_t.currency', 'transactioncurrencies', '{currency_key}',
        '{modified_on}', 'to_integration', false),
       ('CUSTOMER', 'erp_t.customer', 'accounts', '{account_key}', '{modified_on}',
        'bidirectional', false);
INSERT INTO crmsync.integration_table_mapping_dependencies VALUES ('CUSTOMER', 'CURRENCY');
INSERT INTO crmsync.integration_field_mappings (mapping_name, local_column, remote_property)
VALUES ('CURRENCY', 'code', 'isocurrencycode'), ('CURRENCY', 'description', 'currencyname'),
       ('CURRENCY', 'symbol', 'currencysymbol'),
       ('CUSTOMER', 'no', 'accountnumber'), ('CUSTOMER', 'name', 'name'),
       ('CUSTOMER', 'city', 'address1_city'), ('CUSTOMER', 'phone_no', 'telephone1');
INSERT INTO crmsync.integration_field_mappings
       (mapping_name, local_column, remote_property, lookup_mapping, lookup_local_column,
        remote_read_property)
VALUES ('CUSTOMER', 'currency_code', 'transactioncurrencyid', 'CURRENCY', 'code',
        {currency_read});
"""
KEYS = {"accounts": "accountid", "transactioncurrencies": "transactioncurrencyid",
        "contacts": "contactid"}


@dataclass
class World:
    engine: Engine
    emulator: EmulatorServer
    sync_engine: SyncEngine
    profile: str = "dataverse"

    def key(self, entity_set: str) -> str:
        return "ID" if self.profile != "dataverse" else KEYS[entity_set]

    def rid(self, record: dict[str, Any], entity_set: str = "accounts") -> str:
        """The key of a remote record, whatever the server calls it."""
        return str(record[self.key(entity_set)])

    def lookup(self, record: dict[str, Any], prop: str) -> Any:
        """A lookup's value read back (``_x_value`` on Dataverse, ``x_ID`` elsewhere)."""
        return record.get(f"{prop}_ID" if self.profile != "dataverse" else f"_{prop}_value")

    def sql(self, statement: str, **params: Any) -> Any:
        with self.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return result.all() if result.returns_rows else result.rowcount

    def scalar(self, statement: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.scalar(sa.text(statement), params)

    def sync(self, *names: str) -> list[RunSummary]:
        return self.sync_engine.run_all(list(names) or None)

    def counts(self, *names: str) -> dict[tuple[str, str], Counter[str]]:
        """Run and return the counts per (mapping, direction), e.g. ('CUSTOMER', 'to')."""
        out = {}
        for summary in self.sync(*names):
            assert summary.error is None, summary.error
            for p in summary.passes:
                short = "to" if p.direction is Direction.TO_INTEGRATION else "from"
                out[(summary.mapping, short)] = p.counts
        return out

    def remote(self, entity_set: str, **params: str) -> list[dict[str, Any]]:
        query = {f"${k}": v for k, v in params.items()}
        url: str | None = f"{self.emulator.base_url}/{entity_set}"
        records: list[dict[str, Any]] = []
        while url:  # every page, whatever size the server chose
            reply = requests.get(url, params=query, timeout=10,
                                 headers={"Prefer": "odata.maxpagesize=5000"})
            reply.raise_for_status()
            doc = reply.json()
            records.extend(doc["value"])
            link = doc.get("@odata.nextLink")
            url = urljoin(f"{self.emulator.base_url}/", link) if link else None
            query = {}
        return records

    def remote_one(self, entity_set: str, filter: str) -> dict[str, Any]:
        (record,) = self.remote(entity_set, filter=filter)
        return record

    def patch(self, entity_set: str, key: str, values: dict[str, Any]) -> None:
        reply = requests.patch(f"{self.emulator.base_url}/{entity_set}({key})", json=values,
                               headers={"If-Match": "*"}, timeout=10)
        assert reply.status_code in (200, 204), reply.text

    def delete(self, entity_set: str, key: str) -> None:
        reply = requests.delete(f"{self.emulator.base_url}/{entity_set}({key})", timeout=10)
        assert reply.status_code == 204, reply.text

    def coupling(self, mapping: str, **where: str) -> Any:
        (row,) = self.sql(
            "SELECT * FROM crmsync.couplings WHERE mapping_name = :m AND "
            + " AND ".join(f"{k} = :{k}" for k in where), m=mapping, **where)
        return row

    def local_id(self, table: str, no: str) -> str:
        return str(self.scalar(f"SELECT id FROM {table} WHERE no = :no", no=no))


@pytest.fixture
def crm_env(emulator: EmulatorServer, emulator_profile: str,
            monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    monkeypatch.setenv("CRMSYNC_CRM_URL", emulator.base_url)
    monkeypatch.delenv("CRMSYNC_CONFIG", raising=False)
    if emulator_profile != "dataverse":
        monkeypatch.setenv("CRMSYNC_CRM_DIALECT", "odata")
        monkeypatch.setenv("CRMSYNC_CRM_BATCH", "true")
    return emulator


def world_schema(profile: str) -> str:
    odata = profile != "dataverse"
    return SCHEMA.format(
        currency_key="ID" if odata else KEYS["transactioncurrencies"],
        account_key="ID" if odata else KEYS["accounts"],
        modified_on="modifiedAt" if odata else "modifiedon",
        currency_read="'transactioncurrencyid_ID'" if odata else "NULL")


@pytest.fixture
def world(engine: Engine, crm_env: EmulatorServer, emulator_profile: str) -> Iterator[World]:
    with engine.begin() as conn:
        conn.exec_driver_sql(world_schema(emulator_profile))
    clients = Clients()
    yield World(engine, crm_env, SyncEngine(engine, clients), emulator_profile)
    clients.close()


def add_customers(world: World, n: int, *, currency: str | None = "EUR", start: int = 1) -> None:
    world.sql(
        "INSERT INTO erp_t.customer (no, name, city, currency_code) "
        "SELECT 'C' || lpad(g::text, 4, '0'), 'Customer ' || g, 'City ' || g, :cur "
        "FROM generate_series(CAST(:a AS int), CAST(:b AS int)) g",
        cur=currency, a=start, b=start + n - 1)
