"""A small two-mapping world for engine tests: ``erp_t.currency`` → transactioncurrencies
(to CRM) and ``erp_t.customer`` ↔ accounts (bidirectional, with a currency lookup), against
a real database and the emulator over HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
       (name, local_table, entity_set, remote_key, direction, sync_only_coupled)
VALUES ('CURRENCY', 'erp_t.currency', 'transactioncurrencies', 'transactioncurrencyid',
        'to_integration', false),
       ('CUSTOMER', 'erp_t.customer', 'accounts', 'accountid', 'bidirectional', false);
INSERT INTO crmsync.integration_table_mapping_dependencies VALUES ('CUSTOMER', 'CURRENCY');
INSERT INTO crmsync.integration_field_mappings (mapping_name, local_column, remote_property)
VALUES ('CURRENCY', 'code', 'isocurrencycode'), ('CURRENCY', 'description', 'currencyname'),
       ('CURRENCY', 'symbol', 'currencysymbol'),
       ('CUSTOMER', 'no', 'accountnumber'), ('CUSTOMER', 'name', 'name'),
       ('CUSTOMER', 'city', 'address1_city'), ('CUSTOMER', 'phone_no', 'telephone1');
INSERT INTO crmsync.integration_field_mappings
       (mapping_name, local_column, remote_property, lookup_mapping, lookup_local_column)
VALUES ('CUSTOMER', 'currency_code', 'transactioncurrencyid', 'CURRENCY', 'code');
"""


@dataclass
class World:
    engine: Engine
    emulator: EmulatorServer
    sync_engine: SyncEngine

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
        reply = requests.get(f"{self.emulator.base_url}/{entity_set}", params=query,
                             headers={"Prefer": "odata.maxpagesize=5000"}, timeout=10)
        reply.raise_for_status()
        return reply.json()["value"]

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
def crm_env(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    monkeypatch.setenv("CRMSYNC_CRM_URL", emulator.base_url)
    monkeypatch.delenv("CRMSYNC_CONFIG", raising=False)
    return emulator


@pytest.fixture
def world(engine: Engine, crm_env: EmulatorServer) -> Iterator[World]:
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
    clients = Clients()
    yield World(engine, crm_env, SyncEngine(engine, clients))
    clients.close()


def add_customers(world: World, n: int, *, currency: str | None = "EUR", start: int = 1) -> None:
    world.sql(
        "INSERT INTO erp_t.customer (no, name, city, currency_code) "
        "SELECT 'C' || lpad(g::text, 4, '0'), 'Customer ' || g, 'City ' || g, :cur "
        "FROM generate_series(CAST(:a AS int), CAST(:b AS int)) g",
        cur=currency, a=start, b=start + n - 1)
