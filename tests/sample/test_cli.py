"""``crmsync sample-data`` and ``crmsync setup-defaults``: the installed command in a
subprocess against a fresh database, and the error paths through ``main`` in-process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.acceptance.conftest import ROOT, crmsync_executable
from worker.cli import main

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def crmsync(database_url: str) -> Runner:
    env = {**os.environ, "CRMSYNC_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT),
           "CRMSYNC_LOG_FORMAT": "text"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([crmsync_executable(), *args], env=env, capture_output=True,
                              text=True, timeout=120)
    return run


def _scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.scalar(sa.text(sql))


@pytest.mark.slow
def test_sample_data(crmsync: Runner, engine: Engine) -> None:
    first = crmsync("sample-data", "--customers", "15", "--salespeople", "3")
    assert first.returncode == 0, first.stderr
    assert "erp.customer         15        15" in first.stdout
    assert _scalar(engine, "SELECT count(*) FROM erp.salesperson") == 3
    again = crmsync("sample-data", "--customers", "15", "--salespeople", "3")
    assert again.returncode == 0, again.stderr
    assert "0 rows inserted" in again.stdout and "already there" in again.stdout


@pytest.mark.slow
def test_setup_defaults(crmsync: Runner, engine: Engine) -> None:
    first = crmsync("setup-defaults", "--interval", "45 minutes", "--connection", "crm")
    assert first.returncode == 0, first.stderr
    assert "mappings created: CURRENCY, SALESPEOPLE, UNITOFMEASURE, CUSTOMER, CONTACTS, " \
           "RESOURCE-PRODUCT, ITEM-PRODUCT" in first.stdout
    assert "crmsync sample-data" in first.stdout  # the erp tables are not there yet
    assert _scalar(engine, "SELECT count(*) FROM crmsync.job_queue_entries "
                           "WHERE run_interval = '45 minutes'") == 7
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET run_interval = '1 hour' "
                             "WHERE mapping_name = 'CUSTOMER'"))
    again = crmsync("setup-defaults")
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert _scalar(engine, "SELECT run_interval::text FROM crmsync.job_queue_entries "
                           "WHERE mapping_name = 'CUSTOMER'") == "01:00:00"


def test_overwrite_and_bad_arguments(database_url: str, engine: Engine,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    # In-process (main() is what the installed command calls): the same parser and handlers.
    monkeypatch.setenv("CRMSYNC_DATABASE_URL", database_url)
    monkeypatch.setattr("worker.logs.configure", lambda *args, **kwargs: None)  # keep pytest's
    assert main(["setup-defaults", "--interval", "45 minutes"]) == 0
    assert main(["setup-defaults", "--overwrite"]) == 0
    assert "job queue entries restored: 7" in capsys.readouterr().out  # back to 30 minutes
    assert main(["setup-defaults", "--interval", "0 minutes"]) == 2
    assert "positive" in capsys.readouterr().err
    assert main(["setup-defaults", "--interval", "soon"]) == 2
    assert "interval" in capsys.readouterr().err
    assert main(["sample-data", "--customers", "-3"]) == 2
    assert "--customers" in capsys.readouterr().err
    assert main(["sample-data", "--salespeople", "0"]) == 2
    assert _scalar(engine, "SELECT to_regclass('erp.customer') IS NULL") is True
