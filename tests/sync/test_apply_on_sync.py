"""``apply_on = 'create'`` through real runs, on both emulator profiles: a constant and a
column's value are written when the record is created, on either side, and never again; a
later edit of them on either side is no change and no conflict, while the other fields
still flow."""

from __future__ import annotations

import pytest
import requests

from tests.fixtures.emulator import PROFILES
from tests.sync.conftest import World, add_customers

pytestmark = pytest.mark.parametrize("emulator_profile", PROFILES, indirect=True)


def _create_only(world: World) -> None:
    world.sql("INSERT INTO crmsync.integration_field_mappings (mapping_name, remote_property, "
              "constant_value, direction, apply_on) VALUES ('CUSTOMER', 'description', "
              "'Created by the ERP', 'to_integration', 'create')")
    world.sql("UPDATE crmsync.integration_field_mappings SET apply_on = 'create' "
              "WHERE mapping_name = 'CUSTOMER' AND local_column = 'phone_no'")


def test_written_on_create_and_never_after(world: World) -> None:
    _create_only(world)
    add_customers(world, 2)
    world.sql("UPDATE erp_t.customer SET phone_no = '+49 1'")
    world.counts("CURRENCY", "CUSTOMER")
    accounts = {a["accountnumber"]: a for a in world.remote("accounts")}
    assert {(a["description"], a["telephone1"]) for a in accounts.values()} == {
        ("Created by the ERP", "+49 1")}

    first = world.rid(accounts["C0001"])
    world.patch("accounts", first, {"description": "CRM note", "telephone1": "+49 CRM"})
    world.sql("UPDATE erp_t.customer SET phone_no = '+49 ERP' WHERE no IN ('C0001', 'C0002')")
    world.sql("UPDATE erp_t.customer SET city = 'ERP city' WHERE no = 'C0002'")
    ran = world.counts("CUSTOMER")
    assert ran[("CUSTOMER", "to")]["failed"] == ran[("CUSTOMER", "from")]["failed"] == 0
    assert ran[("CUSTOMER", "to")]["modified"] == 1  # C0002's city alone
    assert ran[("CUSTOMER", "from")]["modified"] == 0
    after = {a["accountnumber"]: a for a in world.remote("accounts")}
    assert (after["C0001"]["description"], after["C0001"]["telephone1"]) == (
        "CRM note", "+49 CRM")
    assert (after["C0002"]["telephone1"], after["C0002"]["address1_city"]) == (
        "+49 1", "ERP city")
    assert world.sql("SELECT no, phone_no FROM erp_t.customer ORDER BY no") == [
        ("C0001", "+49 ERP"), ("C0002", "+49 ERP")]
    again = world.counts("CUSTOMER")  # and it stays that way
    assert again[("CUSTOMER", "to")]["modified"] == again[("CUSTOMER", "from")]["modified"] == 0


def test_a_record_created_in_the_erp_from_the_crm_takes_it(world: World) -> None:
    _create_only(world)
    world.counts("CURRENCY")
    requests.post(f"{world.emulator.base_url}/accounts", timeout=10, json={
        "name": "From the CRM", "accountnumber": "C0100", "telephone1": "+44 20"},
    ).raise_for_status()
    world.counts("CUSTOMER")
    assert world.sql("SELECT phone_no FROM erp_t.customer WHERE no = 'C0100'") == [("+44 20",)]
    (account,) = world.remote("accounts")
    world.patch("accounts", world.rid(account), {"telephone1": "+44 21", "name": "Renamed"})
    world.counts("CUSTOMER")
    assert world.sql("SELECT name, phone_no FROM erp_t.customer WHERE no = 'C0100'") == [
        ("Renamed", "+44 20")]


def test_a_create_only_lookup_never_fails_an_update(world: World) -> None:
    # The currency is set when the account is created; a later ERP change to a currency
    # the CRM does not have yet neither fails the record nor holds back its other fields.
    world.sql("UPDATE crmsync.integration_field_mappings SET apply_on = 'create' "
              "WHERE mapping_name = 'CUSTOMER' AND local_column = 'currency_code'")
    add_customers(world, 1)
    world.counts("CURRENCY", "CUSTOMER")
    (account,) = world.remote("accounts")
    euro = world.lookup(account, "transactioncurrencyid")
    assert euro
    world.sql("INSERT INTO erp_t.currency (code) VALUES ('CHF')")
    world.sql("UPDATE erp_t.customer SET currency_code = 'CHF', city = 'Zürich'")
    ran = world.counts("CUSTOMER")
    assert ran[("CUSTOMER", "to")]["failed"] == 0 and ran[("CUSTOMER", "to")]["modified"] == 1
    (account,) = world.remote("accounts")
    assert account["address1_city"] == "Zürich"
    assert world.lookup(account, "transactioncurrencyid") == euro
