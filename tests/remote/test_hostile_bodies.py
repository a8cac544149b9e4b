"""Replies a parser chokes on are a protocol error of that request, never an exception out
of the client: JSON nested 100,000 deep in a page, in an error body, in a token reply; and
the token endpoint's ``expires_in`` is clamped (0 would fetch a token per request)."""

from __future__ import annotations

import json
import math

import pytest

from tests.support.hostile import Handler, Seen, client_of, hostile
from worker.remote.auth import token_lifetime
from worker.remote.bulk import BulkRecord
from worker.remote.errors import RemoteAuthError, RemoteError, RemoteProtocolError

DEEP = b"[" * 100_000


def test_deeply_nested_json_in_a_page_is_a_protocol_error() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(200, DEEP, {"Content-Type": "application/json"})

    with hostile(respond) as crm, client_of(crm) as client, \
            pytest.raises(RemoteProtocolError, match="nested too deeply"):
        list(client.entity_set("accounts", "accountid").read())


def test_deeply_nested_json_in_an_error_body_is_an_ordinary_refusal() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(400, b'{"error": ' + DEEP, {"Content-Type": "application/json"})

    with hostile(respond) as crm, client_of(crm) as client, \
            pytest.raises(RemoteError, match="HTTP 400 Bad Request"):
        list(client.entity_set("accounts", "accountid").read())


def _oauth(crm_origin: str) -> dict[str, str]:
    return {"auth": "oauth2", "client_id": "app", "client_secret": "s3cret",
            "token_url": f"{crm_origin}/token"}


def test_deeply_nested_json_from_the_token_endpoint_is_an_auth_error() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(200, b'{"access_token": ' + DEEP, {"Content-Type": "application/json"})

    with hostile(respond) as crm, client_of(crm, **_oauth(crm.origin)) as client, \
                pytest.raises(RemoteAuthError, match="no access_token"):
        list(client.entity_set("accounts", "accountid").read())


def test_expires_in_zero_does_not_fetch_a_token_per_request() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        if seen.path == "/token":
            handler.raw(200, json.dumps({"access_token": "tok", "expires_in": 0}).encode(),
                        {"Content-Type": "application/json"})
        else:
            handler.json(200, {"value": []})

    with hostile(respond) as crm, client_of(crm, **_oauth(crm.origin)) as client:
        for _ in range(5):
            list(client.entity_set("accounts", "accountid").read())
    assert [s.path for s in crm.seen].count("/token") == 1


@pytest.mark.parametrize(("raw", "seconds"), [
    (0, 60.0), (-5, 60.0), ("3599", 3599.0), (math.inf, 3600.0), (math.nan, 3600.0),
    (10**12, 86400.0)])
def test_expires_in_is_clamped(raw: object, seconds: float) -> None:
    assert token_lifetime(raw) == seconds


@pytest.mark.parametrize("raw", [True, None, "soon", [1]])
def test_an_expires_in_that_is_no_number_is_refused(raw: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        token_lifetime(raw)


def test_deeply_nested_json_from_a_managed_identity_endpoint_is_an_auth_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(200, b'{"access_token": ' + DEEP, {"Content-Type": "application/json"})

    with hostile(respond) as crm:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{crm.origin}/token")
        monkeypatch.setenv("IDENTITY_HEADER", "header-value")
        with client_of(crm, auth="managed_identity") as client, \
                pytest.raises(RemoteAuthError, match="not JSON"):
            list(client.entity_set("accounts", "accountid").read())


def test_deeply_nested_ids_of_a_bulk_create_leave_the_keys_sent() -> None:
    keys = [f"00000000-0000-0000-0000-00000000000{n}" for n in range(2)]

    def respond(handler: Handler, seen: Seen) -> None:
        if seen.path.endswith("CreateMultiple"):
            handler.raw(200, b'{"Ids": ' + DEEP, {"Content-Type": "application/json"})
        else:
            handler.raw(404, b"", {})  # no $metadata: the entity type by Dataverse's naming

    with hostile(respond) as crm, client_of(crm, bulk_messages="on") as client:
        results = client.entity_set("accounts", "accountid").create_multiple(
            [BulkRecord(key, {"name": "n"}) for key in keys], read_back=False)
    assert [(r.ok, r.key) for r in results] == [(True, key) for key in keys]
