"""OAuth2 client credentials: caching, early refresh, one fetch for many threads, 401
invalidation of only the refused token, and refusals that never show the secret."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from worker.emulator import start_emulator
from worker.errors import ConfigurationError
from worker.remote.auth import ClientCredentials, NoAuth, StaticBearer, authenticator_for
from worker.remote.client import ODataClient
from worker.remote.config import ConnectionSettings, load_connection
from worker.remote.errors import RemoteAuthError
from worker.remote.retry import RetryPolicy
from worker.remote.secrets import Secret

from .stubs import ScriptedSession, response

SECRET = "very-secret-client-secret"
TOKEN_URL = "http://127.0.0.1:9/tenant/oauth2/v2.0/token"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def grant(token: str, expires_in: int = 3600) -> requests.Response:
    return response(200, {"token_type": "Bearer", "access_token": token,
                          "expires_in": expires_in})


def credentials(session: ScriptedSession, clock: Clock | None = None) -> ClientCredentials:
    return ClientCredentials(
        session, connection="crm", token_url=TOKEN_URL, client_id="app",
        client_secret=Secret(SECRET), scope="http://127.0.0.1:9/.default",
        timeout=(1.0, 2.0), policy=RetryPolicy(max_attempts=3, base=0.0),
        clock=clock or Clock(), sleep=lambda s: None)


def test_token_request_and_cache() -> None:
    session = ScriptedSession(grant("t1"))
    auth = credentials(session)
    assert auth.authorization() == "Bearer t1"
    assert auth.authorization() == "Bearer t1"
    assert len(session.sent) == 1
    assert session.sent[0]["data"] == {
        "grant_type": "client_credentials", "client_id": "app", "client_secret": SECRET,
        "scope": "http://127.0.0.1:9/.default"}
    assert session.sent[0]["timeout"] == (1.0, 2.0)


def test_refresh_five_minutes_early_or_ten_percent() -> None:
    clock = Clock()
    session = ScriptedSession(grant("t1", 3600), grant("t2", 100), grant("t3", 100))
    auth = credentials(session, clock)
    assert auth.authorization() == "Bearer t1"
    clock.now = 3600 - 301
    assert auth.authorization() == "Bearer t1"
    clock.now = 3600 - 300
    assert auth.authorization() == "Bearer t2"  # lifetime 100 s: refreshed 10 s early
    clock.now += 89
    assert auth.authorization() == "Bearer t2"
    clock.now += 1
    assert auth.authorization() == "Bearer t3"


def test_invalidate_drops_only_the_refused_token() -> None:
    session = ScriptedSession(grant("t1"), grant("t2"))
    auth = credentials(session)
    first = auth.authorization()
    assert auth.invalidate(first) is True
    second = auth.authorization()
    assert second == "Bearer t2"
    assert auth.invalidate(first) is True  # a late 401 for t1: t2 stays
    assert auth.authorization() == "Bearer t2"
    assert len(session.sent) == 2


def test_many_threads_one_fetch() -> None:
    def slow_grant() -> requests.Response:
        time.sleep(0.05)
        return grant("shared")

    session = ScriptedSession(slow_grant)
    auth = credentials(session)
    seen: list[str | None] = []
    threads = [threading.Thread(target=lambda: seen.append(auth.authorization()))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == ["Bearer shared"] * 8
    assert len(session.sent) == 1


def test_refused_credentials_never_show_the_secret() -> None:
    refusal = response(401, {"error": "invalid_client",
                             "error_description": f"AADSTS7000215: Invalid secret {SECRET}"})
    auth = credentials(ScriptedSession(refusal))
    with pytest.raises(RemoteAuthError) as info:
        auth.authorization()
    assert info.value.code == "invalid_client"
    assert info.value.status == 401
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert "/tenant/oauth2/v2.0/token" in str(info.value)


def test_token_endpoint_outage_is_retried_then_reported() -> None:
    auth = credentials(ScriptedSession(response(503), requests.ConnectionError("x"),
                                       grant("t1")))
    assert auth.authorization() == "Bearer t1"
    auth = credentials(ScriptedSession(*[requests.ConnectionError("x")] * 3))
    with pytest.raises(RemoteAuthError, match="unreachable"):
        auth.authorization()


def test_malformed_grant() -> None:
    auth = credentials(ScriptedSession(response(200, {"token_type": "Bearer"})))
    with pytest.raises(RemoteAuthError, match="no access_token"):
        auth.authorization()


def test_simple_authenticators_and_factory() -> None:
    assert NoAuth().authorization() is None
    assert StaticBearer(Secret("x")).authorization() == "Bearer x"
    assert StaticBearer(Secret("x")).invalidate("Bearer x") is False
    url = "http://127.0.0.1:9/api"
    session = requests.Session()
    assert isinstance(authenticator_for(ConnectionSettings("c", url), session), NoAuth)
    with pytest.raises(ConfigurationError):
        authenticator_for(ConnectionSettings("c", url, auth="bearer"), session)
    with pytest.raises(ConfigurationError):
        authenticator_for(ConnectionSettings("c", url, auth="oauth2"), session)


def test_client_secret_basic_keeps_the_secret_out_of_the_body() -> None:
    session = ScriptedSession(grant("t1"))
    auth = ClientCredentials(
        session, connection="crm", token_url=TOKEN_URL, client_id="app id",
        client_secret=Secret("p@ss:word"), scope="s/.default", timeout=(1.0, 2.0),
        policy=RetryPolicy(max_attempts=1), auth_method="client_secret_basic")
    assert auth.authorization() == "Bearer t1"
    sent = session.sent[0]
    assert sent["data"] == {"grant_type": "client_credentials", "scope": "s/.default"}
    # RFC 6749 2.3.1: each part form-encoded, then base64 of "id:secret"
    assert sent["headers"]["Authorization"] == "Basic YXBwK2lkOnAlNDBzcyUzQXdvcmQ="


def test_generic_basic_against_the_emulator() -> None:
    server = start_emulator(client_id="app id", client_secret="p@ss:word")
    try:
        env = {"CRMSYNC_CRM_URL": server.base_url, "CRMSYNC_CRM_TOKEN_URL": server.token_url,
               "CRMSYNC_CRM_CLIENT_ID": "app id", "CRMSYNC_CRM_CLIENT_SECRET": "p@ss:word",
               "CRMSYNC_CRM_TOKEN_ENDPOINT_AUTH_METHOD": "client_secret_basic"}
        with ODataClient(load_connection(env=env)) as client:
            assert list(client.entity_set("accounts", "accountid").read_pages(top=1)) == [[]]
    finally:
        server.stop()


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_a_refused_secret_names_the_connection_and_the_settings(method: str) -> None:
    server = start_emulator(client_id="app id", client_secret="p@ss:word")
    try:
        env = {"CRMSYNC_CRM_URL": server.base_url, "CRMSYNC_CRM_TOKEN_URL": server.token_url,
               "CRMSYNC_CRM_CLIENT_ID": "app id", "CRMSYNC_CRM_CLIENT_SECRET": "wrong:word",
               "CRMSYNC_CRM_TOKEN_ENDPOINT_AUTH_METHOD": method}
        with ODataClient(load_connection(env=env)) as client, \
                pytest.raises(RemoteAuthError) as info:
            list(client.entity_set("accounts", "accountid").read_pages(top=1))
    finally:
        server.stop()
    line = str(info.value)
    assert line.startswith(f"POST {server.token_url}: HTTP 401 [invalid_client] connection "
                           f"'crm' could not sign in at its token_url (client id app id, "
                           f"{method}): AADSTS7000215: Invalid client secret provided.")
    assert line.endswith("check CRMSYNC_CRM_CLIENT_SECRET and CRMSYNC_CRM_CLIENT_ID (or "
                         "CRMSYNC_CRM_TOKEN_ENDPOINT_AUTH_METHOD: the endpoint may want "
                         + ("client_secret_basic)" if method == "client_secret_post"
                            else "client_secret_post)"))
    assert "wrong" not in line and "\n" not in line and "Trace ID" not in line
