"""Push: the emulator calls the worker's webhook endpoint after each CRM write (as a
Dataverse service endpoint would); the entries of the mappings that read that table wake at
once from their 12-hour hold. A bad or missing secret is refused with 401 and wakes nothing;
the secret never reaches a log line."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.freshness.conftest import account_id, put_on_hold, status
from tests.queue.test_worker import wait_for
from tests.sync.conftest import World
from worker.app import App
from worker.errors import ConfigurationError
from worker.remote.config import load_connection
from worker.runtime.http import StatusServer
from worker.runtime.webhook import MAX_BODY, Call, WebhookReceiver, plural
from worker.runtime.worker import Worker, WorkerConfig

SECRET = "s3cret-webhook-key"
CALL = {"MessageName": "Update", "PrimaryEntityName": "account",
        "PrimaryEntityId": "00000000-0000-0000-0000-000000000001",
        "OperationCreatedOn": "2026-11-26T10:00:00Z", "OrganizationName": "emulator",
        "Depth": 1}


@dataclass
class Listener:
    url: str
    worker: Worker
    receiver: WebhookReceiver


@pytest.fixture
def listener(synced: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    monkeypatch.setenv("CRMSYNC_CRM_WEBHOOK", "true")
    monkeypatch.setenv("CRMSYNC_CRM_WEBHOOK_SECRET", SECRET)
    put_on_hold(synced, "1 hour")
    app = App(synced.engine)
    worker = app.worker(WorkerConfig(poll_interval=1.0))
    receiver = app.webhooks().start()
    server = StatusServer("127.0.0.1:0", worker.health, worker.readiness,
                          webhooks=receiver).start()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.started.wait(10)
    yield Listener(f"{server.url}/webhooks/dataverse/crm", worker, receiver)
    worker.stop(immediately=True)
    thread.join(10)
    server.stop()
    receiver.stop()


def on_hold_for_hours(world: World) -> bool:
    hours = world.scalar("SELECT extract(epoch FROM next_run_at - now()) / 3600 "
                         "FROM crmsync.job_queue_entries WHERE mapping_name = 'CUSTOMER'")
    return status(world) == "on_hold_inactivity" and hours > 11


def test_the_emulators_webhook_call_wakes_the_entry_at_once(
        synced: World, listener: Listener, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reply = requests.post(f"{synced.emulator.admin_url}/webhooks", json={
        "url": listener.url, "headers": {"X-Crmsync-Webhook-Key": SECRET}}, timeout=10)
    assert reply.status_code in (200, 201), reply.text
    synced.patch("accounts", account_id(synced, "C0003"), {"address1_city": "Pushed"})
    wait_for(lambda: synced.scalar(
        "SELECT city FROM erp_t.customer WHERE no = 'C0003'") == "Pushed", timeout=15)
    assert not [r for r in caplog.records if SECRET in r.getMessage() or SECRET in str(
        r.__dict__)]


def metadata_reads(world: World) -> int:
    return int(world.emulator.stats.snapshot()["by_set"].get("$metadata", 0))


def test_a_worker_reads_the_crms_metadata_once_for_all_its_runs_and_webhook_calls(
        synced: World, listener: Listener) -> None:
    """``$metadata`` (megabytes on Dataverse, counted against its service protection
    limits) is read once per connection by a worker: its runs (the check, the facets the
    ERP values are converted to) and its webhook (which table a call names) share it."""
    requests.post(f"{synced.emulator.admin_url}/webhooks", json={
        "url": listener.url, "headers": {"X-Crmsync-Webhook-Key": SECRET}},
        timeout=10).raise_for_status()
    before = metadata_reads(synced)
    for n in (1, 2):
        synced.sql("UPDATE erp_t.customer SET city = :c WHERE no = 'C0002'", c=f"ERP {n}")
        synced.patch("accounts", account_id(synced, "C0003"), {"address1_city": f"CRM {n}"})
        wait_for(lambda n=n: synced.scalar(
            "SELECT city FROM erp_t.customer WHERE no = 'C0003'") == f"CRM {n}", timeout=15)
        wait_for(lambda n=n: synced.remote_one(
            "accounts", "accountnumber eq 'C0002'")["address1_city"] == f"ERP {n}",
            timeout=15)
        # A call that comes while the entry runs wakes nothing (only a resting entry is
        # woken): the next edit waits for the run to end.
        wait_for(lambda: status(synced) != "in_process", timeout=15)
    assert metadata_reads(synced) - before == 1


@pytest.mark.parametrize("headers,query", [
    ({}, ""),
    ({"X-Crmsync-Webhook-Key": "wrong"}, ""),
    ({}, "?code=wrong"),
])
def test_a_bad_or_missing_secret_is_refused_and_wakes_nothing(
        synced: World, listener: Listener, headers: dict[str, str], query: str) -> None:
    reply = requests.post(listener.url + query, json=CALL, headers=headers, timeout=10)
    assert reply.status_code == 401
    assert SECRET not in reply.text
    # A good call afterwards is taken: the refusal was not a broken endpoint.
    ok = requests.post(listener.url + "?code=" + SECRET, json={**CALL, "PrimaryEntityName":
                                                               "contact"}, timeout=10)
    assert ok.status_code == 202
    assert on_hold_for_hours(synced)  # nothing reads contacts here: still on hold


def runs(world: World) -> int:
    """Runs of the CUSTOMER entry so far. (A woken entry whose run finds nothing goes back
    on hold within milliseconds, so its status alone can miss the wake.)"""
    return int(world.scalar(
        "SELECT count(*) FROM crmsync.job_queue_log_entries l JOIN crmsync.job_queue_entries "
        "e ON e.id = l.entry_id WHERE e.mapping_name = 'CUSTOMER'"))


def test_the_webhook_key_as_query_parameter_wakes_the_entry(synced: World,
                                                             listener: Listener) -> None:
    before = runs(synced)
    reply = requests.post(listener.url + "?code=" + SECRET, json=CALL, timeout=10)
    assert reply.status_code == 202
    wait_for(lambda: runs(synced) > before, timeout=10)


def test_refusals_name_what_is_wrong(synced: World, listener: Listener) -> None:
    key = {"X-Crmsync-Webhook-Key": SECRET}
    big = requests.post(listener.url, data=b"x" * (MAX_BODY + 1), headers=key, timeout=10)
    assert big.status_code == 413
    bad = requests.post(listener.url, data=b"{not json", headers=key, timeout=10)
    assert bad.status_code == 400
    nameless = requests.post(listener.url, json={"MessageName": "Update"}, headers=key,
                             timeout=10)
    assert nameless.status_code == 400 and "PrimaryEntityName" in nameless.text
    other = requests.post(listener.url.replace("/crm", "/other"), json=CALL, headers=key,
                          timeout=10)
    assert other.status_code == 404  # no such connection, or its webhook is off
    assert on_hold_for_hours(synced)


def test_dataverse_entity_set_names() -> None:
    assert [plural(n) for n in ("account", "transactioncurrency", "systemuser", "address")] \
        == ["accounts", "transactioncurrencies", "systemusers", "addresses"]


def test_the_endpoint_is_off_unless_the_connection_enables_it(synced: World) -> None:
    receiver = App(synced.engine).webhooks()  # CRMSYNC_CRM_WEBHOOK is not set
    call = Call("crm", {"code": [SECRET]}, {}, "2", lambda n: b"{}")
    assert receiver.handle(call).status == 404


def test_a_webhook_without_a_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_connection(env={"CRMSYNC_CRM_URL": "https://crm.example.com/api/data/v9.2",
                             "CRMSYNC_CRM_WEBHOOK": "true"})
    assert str(caught.value).startswith("CRMSYNC_CRM_WEBHOOK: a webhook needs "
                                        "CRMSYNC_CRM_WEBHOOK_SECRET")


def test_a_call_for_crmsyncs_own_write_wakes_nothing(synced: World,
                                                     listener: Listener) -> None:
    own = requests.get(f"{synced.emulator.base_url}/WhoAmI", timeout=10).json()["UserId"]
    key = {"X-Crmsync-Webhook-Key": SECRET}
    echo = requests.post(listener.url, json={**CALL, "InitiatingUserId": own.upper()},
                         headers=key, timeout=10)
    assert echo.status_code == 202
    wait_for(lambda: listener.receiver.handled >= 1, timeout=10)
    assert on_hold_for_hours(synced)
    before = runs(synced)
    other = requests.post(listener.url, headers=key, timeout=10, json={
        **CALL, "InitiatingUserId": "11111111-2222-3333-4444-555555555555"})
    assert other.status_code == 202
    wait_for(lambda: runs(synced) > before, timeout=10)
