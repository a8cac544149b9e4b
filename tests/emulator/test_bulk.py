"""Dataverse's bulk messages on the emulator: CreateMultiple, UpdateMultiple and
UpsertMultiple bound to an entity set, all or nothing, counted by message name."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from worker.emulator import EmulatorServer

ACTION = "Microsoft.Dynamics.CRM."


def post(session: requests.Session, server: EmulatorServer, message: str,
         targets: list[dict[str, Any]], set_name: str = "accounts") -> requests.Response:
    return session.post(f"{server.base_url}/{set_name}/{ACTION}{message}",
                        json={"Targets": targets})


def account(**values: Any) -> dict[str, Any]:
    return {"@odata.type": "Microsoft.Dynamics.CRM.account", **values}


def names(server: EmulatorServer) -> dict[str, str]:
    return {r["accountid"]: r["name"] for r in server.store.scan("accounts", None)}


def test_create_multiple_answers_the_ids_in_order(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    chosen = str(uuid.uuid4())
    response = post(emulator_session, emulator, "CreateMultiple", [
        account(name="first", accountnumber="B1"), account(accountid=chosen, name="second")])
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["@odata.context"].endswith("$metadata#Microsoft.Dynamics.CRM."
                                          "CreateMultipleResponse")
    assert doc["Ids"][1] == chosen
    assert names(emulator) == {doc["Ids"][0]: "first", chosen: "second"}
    stats = emulator_session.get(f"{emulator.admin_url}/stats").json()
    assert stats["by_message"] == {"CreateMultiple": 1}
    assert stats["by_set"]["accounts"] == 1


def test_one_bad_record_refuses_the_whole_request_and_writes_nothing(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    existing = post(emulator_session, emulator, "CreateMultiple",
                    [account(name="there", accountnumber="A1")]).json()["Ids"][0]
    before = names(emulator)
    version = emulator.store.require("accounts", existing)["versionnumber"]
    cases = {
        "CreateMultiple": [account(name="new"), account(accountid=existing, name="dup")],
        "UpdateMultiple": [account(accountid=existing, name="renamed"),
                           account(accountid=str(uuid.uuid4()), name="missing")],
        "UpsertMultiple": [account(name="ok", **{"@odata.id": "accounts(accountnumber='A9')"}),
                           account(name="x" * 500, accountid=str(uuid.uuid4()))],
    }
    statuses = {}
    for message, targets in cases.items():
        response = post(emulator_session, emulator, message, targets)
        statuses[message] = response.status_code
        assert response.json()["error"]["message"].startswith("Targets[1]: "), response.text
    assert statuses == {"CreateMultiple": 412, "UpdateMultiple": 404, "UpsertMultiple": 400}
    assert names(emulator) == before
    assert emulator.store.require("accounts", existing)["versionnumber"] == version


def test_update_and_upsert_multiple(emulator: EmulatorServer,
                                    emulator_session: requests.Session) -> None:
    ids = post(emulator_session, emulator, "CreateMultiple",
               [account(name="one", accountnumber="U1"),
                account(name="two", accountnumber="U2")]).json()["Ids"]
    response = post(emulator_session, emulator, "UpdateMultiple",
                    [account(accountid=ids[0], name="one'"), account(accountid=ids[1],
                                                                     name="two'")])
    assert response.status_code == 204, response.text
    assert names(emulator) == {ids[0]: "one'", ids[1]: "two'"}
    new = str(uuid.uuid4())
    response = post(emulator_session, emulator, "UpsertMultiple", [
        account(name="by alternate key", **{"@odata.id": "accounts(accountnumber='U2')"}),
        account(name="created by alternate key", **{"@odata.id":
                                                    "accounts(accountnumber='U3')"}),
        account(accountid=new, name="created by id"),
        account(accountid=ids[0], name="updated by id")])
    assert response.status_code == 204, response.text
    after = names(emulator)
    assert after[ids[1]] == "by alternate key" and after[new] == "created by id"
    assert after[ids[0]] == "updated by id" and len(after) == 4
    numbers = {r["accountnumber"] for r in emulator.store.scan("accounts", None)}
    assert "U3" in numbers
    stats = emulator_session.get(f"{emulator.admin_url}/stats").json()["by_message"]
    assert stats == {"CreateMultiple": 1, "UpdateMultiple": 1, "UpsertMultiple": 1}


@pytest.mark.parametrize("targets, fragment", [
    ([{"name": "no type"}], "@odata.type"),
    ([account(name="twice", accountid="11111111-1111-1111-1111-111111111111"),
      account(name="twice", accountid="11111111-1111-1111-1111-111111111111")], "more than once"),
    ([], "non-empty"),
])
def test_malformed_requests_are_refused(emulator: EmulatorServer,
                                        emulator_session: requests.Session,
                                        targets: list[dict[str, Any]], fragment: str) -> None:
    response = post(emulator_session, emulator, "UpsertMultiple", targets)
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]
    assert names(emulator) == {}


def test_a_table_without_the_messages_and_the_generic_profile_refuse_them(
        emulator_odata: EmulatorServer, odata_session: requests.Session) -> None:
    from tests.fixtures.emulator import start_emulator_for

    server = start_emulator_for("dataverse", bulk_unsupported=["contacts"])
    try:
        with requests.Session() as session:
            response = post(session, server, "CreateMultiple",
                            [{"@odata.type": "Microsoft.Dynamics.CRM.contact",
                              "lastname": "x"}], set_name="contacts")
            assert response.status_code == 400
            assert "does not support entities of type 'contact'" in response.text
            metadata = session.get(f"{server.base_url}/$metadata").text
            assert '<Action Name="CreateMultiple" IsBound="true">' in metadata
    finally:
        server.stop()
    response = post(odata_session, emulator_odata, "CreateMultiple", [account(name="x")])
    assert response.status_code == 404
    assert "CreateMultiple" not in odata_session.get(f"{emulator_odata.base_url}/$metadata").text
