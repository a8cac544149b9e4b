"""``crmsync run`` as systemd starts it, with push configured the documented way: the local
CRM's webhook call wakes an entry on its 12-hour hold, the scrape counts the call and the
freshness of what the run carried, and the key appears in no output."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import requests

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.freshness.conftest import account_id, put_on_hold
from tests.queue.test_worker import wait_for
from tests.sync.conftest import World

SECRET = "a-webhook-key-from-a-credential"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def running(synced: World, database_url: str, tmp_path: Path) -> Iterator[str]:
    """A ``crmsync run`` process; yields its HTTP listener's URL."""
    put_on_hold(synced, "1 hour")
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "crm_webhook_secret").write_text(SECRET + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env.update({
        "CRMSYNC_DATABASE_URL": database_url, "CRMSYNC_CRM_URL": synced.emulator.base_url,
        "CRMSYNC_CRM_WEBHOOK": "true", "CREDENTIALS_DIRECTORY": str(tmp_path / "credentials"),
        "CRMSYNC_METRICS_ADDRESS": f"127.0.0.1:{port}", "CRMSYNC_LOG_FORMAT": "json",
        "CRMSYNC_LOG_LEVEL": "DEBUG", "PYTHONPATH": str(ROOT),
    })
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([crmsync_executable(), "run"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        assert SECRET not in log.read_text()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_crmsync_run_takes_the_webhook_call_of_the_crm(synced: World, running: str) -> None:
    requests.post(f"{synced.emulator.admin_url}/webhooks", timeout=10, json={
        "url": f"{running}/webhooks/dataverse/crm",
        "headers": {"x-crmsync-webhook-key": SECRET}}).raise_for_status()
    synced.patch("accounts", account_id(synced, "C0005"), {"address1_city": "From the CRM"})
    wait_for(lambda: synced.scalar(
        "SELECT city FROM erp_t.customer WHERE no = 'C0005'") == "From the CRM", timeout=20)
    refused = requests.post(f"{running}/webhooks/dataverse/crm", json={
        "PrimaryEntityName": "account"}, headers={"x-crmsync-webhook-key": "guess"}, timeout=10)
    assert refused.status_code == 401

    def scraped() -> str:
        return requests.get(f"{running}/metrics", timeout=10).text

    wait_for(lambda: 'crmsync_change_to_sync_seconds_count{direction="from_integration",'
             'mapping="CUSTOMER"} 1.0' in scraped(), timeout=20)
    text = scraped()
    assert 'crmsync_webhook_calls_total{connection="crm",status="202"}' in text
    assert 'crmsync_webhook_calls_total{connection="crm",status="401"} 1.0' in text
