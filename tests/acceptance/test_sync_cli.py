"""Issue 4's walk-through with the installed command: db upgrade, sample data, the seven
defaults, check, sync --all, jobs, errors and status, against the emulator over HTTP."""

from __future__ import annotations

import json
import subprocess

from tests.acceptance.conftest import crmsync_executable
from worker.emulator import start_emulator


def test_the_seven_defaults_through_the_cli(empty_database_url: str,
                                            cli_env: dict[str, str]) -> None:
    crm = start_emulator(port=0, sample_users=5)
    cli_env.update({"CRMSYNC_DATABASE_URL": empty_database_url,
                    "CRMSYNC_CRM_URL": crm.base_url})
    cli_env.pop("CRMSYNC_PLUGINS")

    def crmsync(*args: str) -> str:
        done = subprocess.run([crmsync_executable(), *args], env=cli_env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    try:
        crmsync("db", "upgrade")
        crmsync("sample-data", "--customers", "10")
        crmsync("setup-defaults")
        assert "every enabled mapping is valid" in crmsync("check")
        table = crmsync("sync", "--all")
        rows = [line.split() for line in table.splitlines()[2:]]
        assert [r[0] for r in rows][:3] == ["CURRENCY", "SALESPEOPLE", "UNITOFMEASURE"]
        customer_to = next(r for r in rows if r[:2] == ["CUSTOMER", "to_integration"])
        assert customer_to[2] == "10"  # inserted
        assert all(r[7] == "0" for r in rows)  # failed
        jobs = json.loads(crmsync("jobs", "--json", "--limit", "100"))
        assert len(jobs) == 11 and all(j["finished_at"] for j in jobs)
        assert json.loads(crmsync("errors", "--json")) == []
        status = json.loads(crmsync("status", "--json"))
        assert {e["mapping_name"] for e in status["entries"]} == {
            "CURRENCY", "SALESPEOPLE", "UNITOFMEASURE", "CUSTOMER", "CONTACTS",
            "RESOURCE-PRODUCT", "ITEM-PRODUCT"}
        mappings = crmsync("mappings", "list")
        assert "CUSTOMER" in mappings and "CURRENCY,SALESPEOPLE" in mappings
    finally:
        crm.stop()
