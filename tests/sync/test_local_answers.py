"""The ERP side's answers: a row write refused for a reason that may pass (a lock not
available, a deadlock, a statement timeout) is retried by every pass and never skipped; a
lasting refusal (a constraint) twice in a row skips the record, as on the CRM side."""

from __future__ import annotations

import pytest

from tests.sync.conftest import World, add_customers


def _refuse_city(world: World, errcode: str) -> None:
    """ERP updates that set the city to 'CRM city' are refused with ``errcode``."""
    world.sql(f"""
        CREATE FUNCTION erp_t.refuse_city() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.city = 'CRM city' THEN
                RAISE EXCEPTION 'city refused' USING ERRCODE = '{errcode}';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_city BEFORE UPDATE ON erp_t.customer
            FOR EACH ROW EXECUTE FUNCTION erp_t.refuse_city();
    """)


def _crm_edit(world: World) -> None:
    add_customers(world, 1)
    world.counts()
    (account,) = world.remote("accounts")
    world.patch("accounts", account["accountid"], {"address1_city": "CRM city"})


@pytest.mark.parametrize("errcode", ["55P03", "40P01", "57014"])
def test_a_refusal_that_may_pass_is_retried_and_never_skipped(world: World,
                                                               errcode: str) -> None:
    _crm_edit(world)
    _refuse_city(world, errcode)
    for _ in range(3):
        assert world.counts("CUSTOMER")[("CUSTOMER", "from")]["failed"] == 1
    assert world.scalar("SELECT count(*) FROM crmsync.couplings WHERE skipped") == 0
    world.sql("DROP TRIGGER refuse_city ON erp_t.customer")
    assert world.counts("CUSTOMER")[("CUSTOMER", "from")]["modified"] == 1
    assert world.scalar("SELECT city FROM erp_t.customer") == "CRM city"


def test_a_lasting_refusal_twice_skips_the_record(world: World) -> None:
    _crm_edit(world)
    _refuse_city(world, "23514")  # check_violation
    for _ in range(2):
        assert world.counts("CUSTOMER")[("CUSTOMER", "from")]["failed"] == 1
    assert world.scalar("SELECT count(*) FROM crmsync.couplings WHERE skipped") == 1
    assert world.counts("CUSTOMER")[("CUSTOMER", "from")]["failed"] == 0
    assert world.scalar("SELECT city FROM erp_t.customer") != "CRM city"
