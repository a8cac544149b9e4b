"""Webhooks: the emulator calls a real HTTP receiver on loopback after each committed write,
with a Dataverse-shaped execution context and the configured headers."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.emulator.helpers import Receiver, batch, batch_statuses, create, http_part
from tests.fixtures.emulator import start_emulator_for
from worker.emulator import EmulatorServer
from worker.emulator.webhooks import Webhook


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def test_create_update_delete_each_call_the_webhook_once(
        emulator: EmulatorServer, emulator_session: requests.Session,
        receiver: Receiver) -> None:
    added = emulator_session.post(f"{emulator.admin_url}/webhooks", json={
        "url": receiver.url, "headers": {"X-Webhook-Key": "s3cret"}})
    assert added.status_code == 201
    assert added.json()["webhooks"] == [{"url": receiver.url, "headers": ["X-Webhook-Key"]}]
    key = create(emulator_session, emulator, "accounts", {"name": "Contoso"})
    emulator_session.patch(f"{emulator.base_url}/accounts({key})", json={"name": "Contoso 2"})
    emulator_session.delete(f"{emulator.base_url}/accounts({key})")

    calls = [receiver.next_call() for _ in range(3)]
    assert [body["MessageName"] for _, body in calls] == ["Create", "Update", "Delete"]
    for headers, body in calls:
        assert headers["X-Webhook-Key"] == "s3cret"
        assert headers["Content-Type"] == "application/json"
        assert (body["PrimaryEntityName"], body["PrimaryEntityId"]) == ("account", key)
        assert body["OrganizationName"] == "emulator" and body["Depth"] == 1
        assert body["OperationCreatedOn"].endswith("Z")
    assert receiver.calls.empty()


def test_a_rolled_back_change_set_calls_nothing_a_committed_one_after_commit(
        emulator: EmulatorServer, emulator_session: requests.Session,
        receiver: Receiver) -> None:
    emulator.webhooks.add(Webhook(receiver.url))
    key = str(uuid.uuid4())
    content_type, body = batch([[
        http_part("POST", "accounts", {"accountid": key, "name": "A"}),
        http_part("PATCH", f"accounts({uuid.uuid4()})", {"name": "missing"}),  # creates too
        http_part("POST", "accounts", {"accountid": key, "name": "duplicate"}),  # fails
    ]])
    failed = emulator_session.post(f"{emulator.base_url}/$batch", data=body,
                                   headers={"Content-Type": content_type})
    assert batch_statuses(failed) == [412]
    content_type, body = batch([[http_part("POST", "contacts", {"lastname": "Meyer"})]])
    emulator_session.post(f"{emulator.base_url}/$batch", data=body,
                          headers={"Content-Type": content_type})
    _, call = receiver.next_call()
    assert (call["MessageName"], call["PrimaryEntityName"]) == ("Create", "contact")
    assert receiver.calls.empty() and emulator.store.count("accounts") == 0


def test_a_receiver_that_hangs_or_is_down_does_not_hold_up_a_write(
        emulator: EmulatorServer, emulator_session: requests.Session,
        receiver: Receiver) -> None:
    emulator.webhooks.add(Webhook(f"http://127.0.0.1:{free_port()}/nobody-listens"))
    emulator.webhooks.add(Webhook(receiver.url))
    receiver.hold.clear()  # the receiver takes the call and does not answer
    first = create(emulator_session, emulator, "accounts", {"name": "A"})
    _, call = receiver.next_call()  # the call is being made, and left waiting
    assert call["PrimaryEntityId"] == first
    second = emulator_session.post(f"{emulator.base_url}/accounts", json={"name": "B"})
    assert second.status_code == 204  # answered while the receiver still holds a call
    receiver.hold.set()
    _, call = receiver.next_call()
    assert call["MessageName"] == "Create"
    stats = emulator_session.get(f"{emulator.admin_url}/webhooks").json()
    assert stats["failed"] >= 1  # the receiver that is down, logged and dropped


def test_delete_removes_every_webhook(emulator: EmulatorServer,
                                      emulator_session: requests.Session,
                                      receiver: Receiver) -> None:
    emulator_session.post(f"{emulator.admin_url}/webhooks", json={"url": receiver.url})
    assert emulator_session.delete(f"{emulator.admin_url}/webhooks").json()["webhooks"] == []
    create(emulator_session, emulator, "accounts", {"name": "A"})
    emulator.webhooks.add(Webhook(receiver.url))  # a later call proves none came before
    create(emulator_session, emulator, "contacts", {"lastname": "B"})
    _, call = receiver.next_call()
    assert call["PrimaryEntityName"] == "contact"


@pytest.mark.parametrize("body", [
    {"url": "ftp://example.org/hook"}, {"url": 5}, {"headers": {}},
    {"url": "http://127.0.0.1:1/x", "headers": {"X-Key": 1}},
    {"url": "http://127.0.0.1:1/x", "headers": {"X-Key": "a\r\nInjected: yes"}},
    {"url": "http://127.0.0.1:1/x", "headers": ["X-Key"]},
])
def test_a_bad_webhook_is_refused(emulator: EmulatorServer,
                                  emulator_session: requests.Session,
                                  body: dict[str, Any]) -> None:
    response = emulator_session.post(f"{emulator.admin_url}/webhooks", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Bad webhook")
    assert emulator.webhooks.hooks == ()


def test_the_odata_profile_calls_with_the_same_shape(receiver: Receiver) -> None:
    server = start_emulator_for("odata", webhooks=[Webhook(receiver.url, {"X-Key": "k"})])
    try:
        key = str(uuid.uuid4())
        requests.post(f"{server.base_url}/products", json={"ID": key, "name": "P"})
        headers, call = receiver.next_call()
    finally:
        server.stop()
    assert (call["MessageName"], call["PrimaryEntityName"], call["PrimaryEntityId"]) == (
        "Create", "product", key)
    assert headers["X-Key"] == "k"


def test_sample_data_calls_no_webhook_at_start_or_reset(receiver: Receiver) -> None:
    server = start_emulator_for("dataverse", sample_users=3, webhooks=[Webhook(receiver.url)])
    try:
        requests.post(f"{server.admin_url}/reset")
        key = requests.post(f"{server.base_url}/contacts", json={"lastname": "First"}).headers[
            "OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
        _, call = receiver.next_call()
    finally:
        server.stop()
    assert (call["MessageName"], call["PrimaryEntityId"]) == ("Create", key)
    assert server.store.count("systemusers") == 3
