"""``$batch``: change sets are atomic, ``continue-on-error``, Content-ID references."""

from __future__ import annotations

import re
import uuid

import requests

from tests.emulator.helpers import batch, batch_statuses, http_part
from worker.emulator import EmulatorServer

SERVICE = "/api/data/v9.2"


def post_batch(session: requests.Session, server: EmulatorServer,
               parts: list[str | list[str]], prefer: str | None = None) -> requests.Response:
    content_type, body = batch(parts)
    headers = {"Content-Type": content_type}
    if prefer:
        headers["Prefer"] = prefer
    response = session.post(f"{server.base_url}/$batch", data=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    return response


def test_change_set_commits_with_content_id_references(
        emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    response = post_batch(emulator_session, emulator, [[
        http_part("POST", f"{SERVICE}/accounts", {"name": "Contoso"}, content_id="1"),
        http_part("POST", f"{emulator.base_url}/contacts",
                  {"lastname": "Meyer", "parentcustomerid_account@odata.bind": "$1"},
                  content_id="2"),
        http_part("PATCH", "$1", {"telephone1": "030 1234"}, content_id="3"),
    ]])
    assert batch_statuses(response) == [204, 204, 204]
    assert "Content-ID: 2" in response.text
    [account] = emulator.store.scan("accounts", None)
    [contact] = emulator.store.scan("contacts", None)
    assert account["telephone1"] == "030 1234"
    assert contact["_parentcustomerid_value"] == account["accountid"]


def test_failing_change_set_is_rolled_back(emulator: EmulatorServer,
                                           emulator_session: requests.Session) -> None:
    existing = str(uuid.uuid4())
    emulator_session.post(f"{emulator.base_url}/accounts",
                          json={"accountid": existing, "name": "Before"})
    response = post_batch(emulator_session, emulator, [[
        http_part("POST", f"{SERVICE}/accounts", {"name": "New"}),
        http_part("PATCH", f"{SERVICE}/accounts({existing})", {"name": "After"}),
        http_part("POST", f"{SERVICE}/accounts", {"name": "Bad", "nosuchfield": 1}),
    ]])
    assert batch_statuses(response) == [400]  # the change set's only answer: its failure
    assert '"code":"0x80060888"' in response.text
    assert [r["name"] for r in emulator.store.scan("accounts", None)] == ["Before"]


def test_batch_stops_at_the_first_failure(emulator: EmulatorServer,
                                          emulator_session: requests.Session) -> None:
    response = post_batch(emulator_session, emulator, [
        http_part("POST", f"{SERVICE}/accounts", {"name": "One"}),
        http_part("DELETE", f"{SERVICE}/accounts({uuid.uuid4()})"),
        http_part("POST", f"{SERVICE}/accounts", {"name": "Three"}),
    ])
    assert batch_statuses(response) == [204, 404]
    assert emulator.store.count("accounts") == 1


def test_continue_on_error_answers_every_part(emulator: EmulatorServer,
                                              emulator_session: requests.Session) -> None:
    response = post_batch(emulator_session, emulator, [
        http_part("POST", f"{SERVICE}/accounts", {"name": "One"}),
        [http_part("POST", f"{SERVICE}/accounts", {"name": "x" * 200})],
        http_part("DELETE", f"{SERVICE}/accounts({uuid.uuid4()})"),
        [http_part("POST", f"{SERVICE}/accounts", {"name": "Four"}),
         http_part("POST", f"{SERVICE}/accounts", {"name": "Five"})],
        http_part("GET", f"{SERVICE}/accounts?$select=name&$orderby=name"),
    ], prefer="odata.continue-on-error")
    assert response.headers["Preference-Applied"] == "odata.continue-on-error"
    assert batch_statuses(response) == [204, 400, 404, 204, 204, 200]
    names = re.findall(r'"name":"(\w+)"', response.text)
    assert names == ["Five", "Four", "One"]


def test_batch_with_bare_lf_line_ends(emulator: EmulatorServer,
                                      emulator_session: requests.Session) -> None:
    content_type, body = batch([http_part("POST", f"{SERVICE}/accounts", {"name": "LF"})])
    response = emulator_session.post(f"{emulator.base_url}/$batch",
                                     data=body.replace(b"\r\n", b"\n"),
                                     headers={"Content-Type": content_type})
    assert batch_statuses(response) == [204]
    assert emulator.store.count("accounts") == 1


def test_batch_without_boundary_is_refused(emulator: EmulatorServer,
                                           emulator_session: requests.Session) -> None:
    response = emulator_session.post(f"{emulator.base_url}/$batch", data=b"x",
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "multipart/mixed" in response.json()["error"]["message"]
