"""Errors you can act on: ``crmsync errors`` shows each failed record's business key, its
remote key and the whole message, filters by mapping and record, and has ``--json``; and
the default filters keep the CRM's vendors and inactive records out of the ERP."""

from __future__ import annotations

import json

import requests

from tests.admin.conftest import Admin

LOOKUP_FAILURE = ("currency_code 'XTS' must be coupled to a record in transactioncurrencies "
                  "(mapping CURRENCY)")


def _fail_two_customers(admin: Admin) -> list[str]:
    """After a first full sync, two customers point at a currency the CRM does not know
    yet; syncing CUSTOMER alone fails exactly those two."""
    admin.ok("sync", "--all")
    admin.sql("INSERT INTO erp.currency (code, description) VALUES ('XTS', 'Test currency')")
    numbers = [r[0] for r in admin.sql(
        "UPDATE erp.customer SET currency_code = 'XTS' WHERE no IN "
        "(SELECT no FROM erp.customer ORDER BY no LIMIT 2) RETURNING no")]
    done = admin.run("sync", "CUSTOMER")
    assert done.returncode == 1, (done.stdout, done.stderr)  # records failed
    return sorted(numbers)


def test_errors_show_business_keys_and_whole_messages(defaults: Admin) -> None:
    admin = defaults
    numbers = _fail_two_customers(admin)
    out = admin.ok("errors")
    lines = out.splitlines()
    for no in numbers:
        at = next(n for n, line in enumerate(lines) if f"record {no}" in line)
        assert "CUSTOMER -> CRM" in lines[at]
        assert lines[at + 1].startswith("    ids: local ") and ", remote " in lines[at + 1]
    # The message is wrapped, never cut: its words all come back in order.
    assert LOOKUP_FAILURE in " ".join(line.strip() for line in out.splitlines())
    rows = json.loads(admin.ok("errors", "--json"))
    assert sorted(r["business_key"] for r in rows) == numbers
    assert all(r["message"].endswith(LOOKUP_FAILURE) and r["remote_id"] for r in rows)
    stored = admin.sql("SELECT business_key FROM crmsync.sync_job_errors ORDER BY 1")
    assert [r[0] for r in stored] == numbers

    only = json.loads(admin.ok("errors", "CUSTOMER", "--record", numbers[0], "--json"))
    assert [r["business_key"] for r in only] == [numbers[0]]
    by_remote = json.loads(admin.ok("errors", "--record", only[0]["remote_id"], "--json"))
    assert [r["business_key"] for r in by_remote] == [numbers[0]]
    assert admin.ok("errors", "CONTACTS").strip() == "no errors of mapping CONTACTS"


def test_errors_of_an_unknown_mapping_is_an_error(defaults: Admin) -> None:
    done = defaults.run("errors", "NOSUCH")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "crmsync: error: mapping 'NOSUCH' does not exist; crmsync mappings list shows the "
        "mappings"]


def test_the_defaults_leave_vendors_and_inactive_records_in_the_crm(defaults: Admin) -> None:
    admin = defaults
    admin.ok("sync", "--all")
    names = {r[0] for r in admin.sql("SELECT name FROM erp.customer")}
    assert len(names) == 8
    assert not names & {"Northwind Supplies GmbH", "Blue Yonder Freight B.V.",
                        "Fabrikam Rivals Ltd", "Adatum Partners AB", "Closed Customer Oy"}
    surnames = {r[0] for r in admin.sql("SELECT surname FROM erp.contact")}
    assert not surnames & {"Inactive", "Private"}
    # A vendor edited in the CRM stays out too, and nothing failed on the way.
    assert json.loads(admin.ok("errors", "--json")) == []


def test_a_business_key_that_cannot_be_read_costs_nothing_else(defaults: Admin) -> None:
    admin = defaults
    admin.sql("UPDATE crmsync.integration_table_mappings SET business_key_column = 'nosuch' "
              "WHERE name = 'CUSTOMER'")
    _fail_two_customers(admin)
    rows = json.loads(admin.ok("errors", "CUSTOMER", "--json"))
    assert len(rows) == 2 and {r["business_key"] for r in rows} == {None}
    assert all(r["message"].endswith(LOOKUP_FAILURE) for r in rows)
    assert admin.sql("SELECT failed FROM crmsync.sync_jobs WHERE mapping_name = 'CUSTOMER' "
                     "ORDER BY id DESC LIMIT 2") == [(0,), (2,)]


def test_a_record_from_the_crm_shows_its_business_key_before_it_has_a_row(
        defaults: Admin) -> None:
    admin = defaults
    admin.ok("sync", "--all")
    base = admin.crm.base_url
    currency = requests.post(f"{base}/transactioncurrencies", timeout=10, headers={
        "Prefer": "return=representation"}, json={
        "isocurrencycode": "XTS", "currencyname": "Test"}).json()["transactioncurrencyid"]
    requests.post(f"{base}/accounts", timeout=10, json={
        "name": "Made in the CRM", "accountnumber": "C77777", "customertypecode": 3,
        "transactioncurrencyid@odata.bind": f"/transactioncurrencies({currency})"}
    ).raise_for_status()
    assert admin.run("sync", "CUSTOMER").returncode == 1
    rows = json.loads(admin.ok("errors", "CUSTOMER", "--record", "C77777", "--json"))
    assert [(r["direction"], r["business_key"]) for r in rows] == [
        ("from_integration", "C77777")]
    assert "must be coupled" in rows[0]["message"]
