"""Exact values and per-record failures with the installed command: on the seven defaults,
an amount the CRM cannot hold fails that customer alone (the others arrive digit for digit),
and a malformed transformation is reported by ``crmsync check`` before any run."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal

import requests
import sqlalchemy as sa

from tests.acceptance.conftest import crmsync_executable
from worker.db.engine import create_engine
from worker.emulator import start_emulator
from worker.remote import wire


def test_amounts_and_bad_mappings_through_the_cli(empty_database_url: str,
                                                   cli_env: dict[str, str]) -> None:
    crm = start_emulator(port=0, sample_users=5)
    cli_env.update({"CRMSYNC_DATABASE_URL": empty_database_url,
                    "CRMSYNC_CRM_URL": crm.base_url})
    cli_env.pop("CRMSYNC_PLUGINS", None)

    def crmsync(*args: str, status: int = 0) -> str:
        done = subprocess.run([crmsync_executable(), *args], env=cli_env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == status, (args, done.stdout, done.stderr)
        return done.stdout

    engine = create_engine(empty_database_url)
    try:
        crmsync("db", "upgrade")
        crmsync("sample-data", "--customers", "5")
        crmsync("setup-defaults")
        with engine.begin() as conn:
            numbers = conn.scalars(sa.text("SELECT no FROM erp.customer ORDER BY no")).all()
            conn.execute(sa.text("UPDATE erp.customer SET credit_limit_lcy = :c WHERE no = :n"),
                         [{"c": Decimal("9999999999999999.99"), "n": numbers[0]},
                          {"c": Decimal("99999999999999.99"), "n": numbers[1]}])
        crmsync("sync", "--all", status=1)  # records failed, the run went on
        errors = {e["mapping"]: e for e in json.loads(crmsync("errors", "--json"))}
        assert set(errors) <= {"CUSTOMER", "CONTACTS"}  # its contacts wait for it
        error = errors["CUSTOMER"]
        assert error["business_key"] == numbers[0]
        assert "field credit_limit_lcy <-> creditlimit: 9999999999999999.99 is too large " \
               "for creditlimit (Edm.Decimal) (precision 19, scale 4)" in error["message"]
        reply = requests.get(f"{crm.base_url}/accounts", timeout=10,
                             params={"$select": "accountnumber,creditlimit"})
        credit = {r["accountnumber"]: r["creditlimit"]
                  for r in wire.loads(reply.content)["value"]}
        assert numbers[0] not in credit and len(credit) >= 4
        assert credit[numbers[1]] == Decimal("99999999999999.99")
        with engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE crmsync.integration_field_mappings SET transformation = "
                "'{\"value_map\": 5}' WHERE mapping_name = 'CUSTOMER' AND local_column = 'city'"))
        report = crmsync("check", status=1)
        assert ("mapping CUSTOMER: field city <-> address1_city: transformation.value_map "
                "must be an object of value → value, got 5") in report
    finally:
        engine.dispose()
        crm.stop()
