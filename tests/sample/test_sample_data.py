"""Loading the sample data into a real database: counts, idempotence, consistency."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.sample import data
from worker.sample.erp_schema import TABLES


def _fingerprint(engine: Engine) -> dict[str, str]:
    """Every row of every table, ids and stamps included, as one hash per table."""
    with engine.connect() as conn:
        return {table: conn.scalar(sa.text(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t"))
            for table in TABLES}


def _scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql))


def test_loads_the_expected_counts(engine: Engine) -> None:
    summary = data.load_sample_data(engine, customers=60, salespeople=4)
    expected = data.build_sample_data(60, 4)
    assert summary.inserted("erp.customer") == 60 == summary.total("erp.customer")
    assert summary.inserted("erp.contact") == len(expected.contacts)
    assert summary.total("erp.salesperson") == 4
    assert summary.total("erp.currency") == len(data.CURRENCIES) >= 6
    assert summary.total("erp.unit_of_measure") == len(data.UNITS)
    assert summary.total("erp.resource") == 10
    assert summary.total("erp.item") == 30
    assert [t.table for t in summary.tables] == [
        "erp.currency", "erp.unit_of_measure", "erp.salesperson", "erp.customer",
        "erp.contact", "erp.resource", "erp.item"]


def test_running_twice_changes_nothing(engine: Engine) -> None:
    data.load_sample_data(engine, customers=40)
    before = _fingerprint(engine)
    again = data.load_sample_data(engine, customers=40)
    assert all(t.inserted == 0 for t in again.tables)
    assert _fingerprint(engine) == before


def test_a_users_edit_survives_a_second_load(engine: Engine) -> None:
    data.load_sample_data(engine, customers=10)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE erp.customer SET name = 'Renamed' WHERE no = 'C00001'"))
    data.load_sample_data(engine, customers=10)
    assert _scalar(engine, "SELECT name FROM erp.customer WHERE no = 'C00001'") == "Renamed"


def test_more_customers_later_adds_only_the_new_ones(engine: Engine) -> None:
    data.load_sample_data(engine, customers=20)
    summary = data.load_sample_data(engine, customers=35)
    assert summary.inserted("erp.customer") == 15
    assert summary.total("erp.customer") == 35
    assert summary.inserted("erp.currency") == 0


def test_every_reference_resolves(engine: Engine) -> None:
    data.load_sample_data(engine, customers=80, salespeople=3)
    assert _scalar(engine, """
        SELECT count(*) FROM erp.customer c
         WHERE c.currency_code IS NULL OR c.salesperson_code IS NULL
            OR NOT EXISTS (SELECT 1 FROM erp.currency x WHERE x.code = c.currency_code)
            OR NOT EXISTS (SELECT 1 FROM erp.salesperson s WHERE s.code = c.salesperson_code)
        """) == 0
    assert _scalar(engine, "SELECT count(DISTINCT salesperson_code) FROM erp.customer") == 3
    assert _scalar(engine, "SELECT count(*) FROM erp.contact WHERE customer_no IS NULL") == 0
    assert _scalar(engine, "SELECT count(*) FROM erp.customer c WHERE NOT EXISTS "
                           "(SELECT 1 FROM erp.contact k WHERE k.customer_no = c.no)") == 0
    assert _scalar(engine, "SELECT count(*) FROM erp.contact WHERE name IS NULL") == 0


def test_a_customer_created_later_gets_a_fresh_number(engine: Engine) -> None:
    data.load_sample_data(engine, customers=25)
    with engine.begin() as conn:
        new_no = conn.scalar(sa.text(
            "INSERT INTO erp.customer (name) VALUES ('From the CRM') RETURNING no"))
        item_no = conn.scalar(sa.text(
            "INSERT INTO erp.item (description) VALUES ('New item') RETURNING no"))
    assert new_no == "C00026"
    assert item_no == "1030"
