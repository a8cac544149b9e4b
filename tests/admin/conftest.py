"""The administrator's interface through the installed ``crmsync`` command: a fresh database
with the sample ERP schema, the emulator as the CRM, and a runner for the command."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.acceptance.conftest import ROOT, crmsync_executable
from worker.emulator import EmulatorServer, start_emulator


@dataclass
class Admin:
    """Runs ``crmsync`` against one database and one emulator."""

    engine: Engine
    crm: EmulatorServer
    env: dict[str, str]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([crmsync_executable(), *args], env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=300)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def sql(self, statement: str, **params: object) -> list[sa.Row]:
        with self.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []


@pytest.fixture
def admin(engine: Engine, database_url: str) -> Iterator[Admin]:
    crm = start_emulator(port=0, sample_users=5)
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "CRMSYNC_CRM_URL": crm.base_url,
           "CRMSYNC_CRM_AUTH": "none", "CRMSYNC_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT),
           "COLUMNS": "100"}
    env.pop("CRMSYNC_PLUGINS", None)
    try:
        yield Admin(engine, crm, env)
    finally:
        crm.stop()


@pytest.fixture
def defaults(admin: Admin) -> Admin:
    """The sample ERP data and the seven default mappings."""
    admin.ok("sample-data", "--customers", "8", "--salespeople", "3")
    admin.ok("setup-defaults")
    return admin

