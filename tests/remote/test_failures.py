"""Failure handling against the emulator over real HTTP: throttling shared by all
threads, lost responses, server errors, timeouts, expiring tokens, and secrets that never
reach a log line or an error message."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from worker.emulator.auth import TokenIssuer
from worker.emulator.server import EmulatorServer, start_emulator
from worker.remote.auth import ClientCredentials
from worker.remote.batch import Operation
from worker.remote.client import ODataClient
from worker.remote.config import load_connection
from worker.remote.errors import RemoteAuthError, RemoteError, RemoteThrottled, RemoteUnavailable
from worker.remote.filters import eq
from worker.remote.transport import Transport, new_session

from .helpers import client_for, marker, seed_accounts
from .stubs import Recorder

CLIENT_ID = "5f0c8d61-6a3e-4c07-9a43-1d5a2b4c7e90"
SECRET = "Zq8~s3cr3t-value-that-must-never-leak"


def test_429_with_retry_after_holds_every_thread(emulator: EmulatorServer) -> None:
    key = seed_accounts(emulator, 1, marker())[0]
    observer = Recorder()
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def watch() -> None:  # the server's request counter over time
        while not stop.is_set():
            snap = emulator.stats.snapshot()
            samples.append((time.monotonic(), snap["requests"],
                            snap["by_status"].get("429", 0)))
            time.sleep(0.005)

    results: list[bool] = []
    with client_for(emulator, observer, concurrency=8) as client:
        accounts = client.entity_set("accounts", "accountid")

        def reader() -> None:
            for _ in range(5):
                results.append(accounts.get(key) is not None)

        emulator.faults.throttle(retry_after=2, count=1)
        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        threads = [threading.Thread(target=reader) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        stop.set()
        watcher.join()

    assert results == [True] * 30
    assert elapsed >= 2.0
    assert observer.pauses == [2.0]
    throttled_at = next(t for t, _, throttled in samples if throttled)
    window = [n for t, n, _ in samples if throttled_at + 0.2 <= t <= throttled_at + 1.8]
    assert len(window) > 10
    assert len(set(window)) == 1, "a request reached the service during the Retry-After pause"


def test_a_create_whose_response_is_lost_is_retried_into_one_record(
        emulator: EmulatorServer) -> None:
    tag = marker()
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        emulator.faults.drop_after_write(count=1)
        result = accounts.create(key, {"name": "once", "description": tag})
        assert result.already_existed  # the retry found what the lost response created
        rows = list(accounts.read(filter=eq("description", tag)))
    assert [r["accountid"] for r in rows] == [key]
    assert emulator.faults.injected == {"drop_after_write": 1}


def test_a_generic_odata_create_whose_response_is_lost(emulator: EmulatorServer) -> None:
    tag = marker()
    with client_for(emulator, dialect="odata") as client:
        accounts = client.entity_set("accounts", "accountid")
        emulator.faults.drop_after_write(count=1)
        result = accounts.create(str(uuid.uuid4()), {"name": "once", "description": tag})
        assert result.already_existed
        assert len(list(accounts.read(filter=eq("description", tag)))) == 1


def test_a_batch_whose_response_is_lost_is_retried_into_one_record_each(
        emulator: EmulatorServer) -> None:
    tag = marker()
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        ops = [Operation("create", accounts, str(uuid.uuid4()),
                         {"name": f"b{i}", "description": tag}, ref=i) for i in range(10)]
        emulator.faults.drop_after_write(count=1)
        results = client.batch(ops)
        rows = list(accounts.read(filter=eq("description", tag)))
    assert all(r.ok and r.already_existed for r in results)
    assert sorted(r["accountid"] for r in rows) == sorted(op.key for op in ops)


def test_server_errors_are_retried(emulator: EmulatorServer) -> None:
    key = seed_accounts(emulator, 1, marker())[0]
    observer = Recorder()
    with client_for(emulator, observer) as client:
        accounts = client.entity_set("accounts", "accountid")
        emulator.faults.unavailable(count=2)
        assert accounts.get(key) is not None
        assert observer.requests == [("GET", "5xx"), ("GET", "5xx"), ("GET", "2xx")]
        emulator.faults.error_rate(1.0, count=1)
        assert accounts.update(key, {"name": "after a 500"}).status == 200


def test_retries_run_out(emulator: EmulatorServer) -> None:
    key = seed_accounts(emulator, 1, marker())[0]
    with client_for(emulator, max_retries=2) as client:
        accounts = client.entity_set("accounts", "accountid")
        emulator.faults.unavailable(count=3)
        with pytest.raises(RemoteUnavailable) as info:
            accounts.get(key)
        assert info.value.status == 503 and info.value.code
    with client_for(emulator, max_retries=1) as client:
        accounts = client.entity_set("accounts", "accountid")
        emulator.faults.throttle(retry_after=1, count=2)
        with pytest.raises(RemoteThrottled) as throttled:
            accounts.get(key)
        assert throttled.value.status == 429


def test_a_timeout_is_retried(emulator: EmulatorServer) -> None:
    key = seed_accounts(emulator, 1, marker())[0]
    observer = Recorder()
    with client_for(emulator, observer, read_timeout=0.5) as client:
        emulator.faults.slow(1500, count=1)
        assert client.entity_set("accounts", "accountid").get(key) is not None
    assert observer.requests[0] == ("GET", "error")  # timed out
    assert observer.requests[-1] == ("GET", "2xx")


# ------------------------------------------------------------------ authentication

@pytest.fixture
def secured() -> Iterator[EmulatorServer]:
    """An emulator that demands OAuth2 client credentials."""
    server = start_emulator(client_id=CLIENT_ID, client_secret=SECRET)
    yield server
    server.stop()


def oauth_client(server: EmulatorServer, secret: str = SECRET, **settings: str) -> ODataClient:
    env = {"CRMSYNC_CRM_URL": server.base_url, "CRMSYNC_CRM_TOKEN_URL": server.token_url,
           "CRMSYNC_CRM_CLIENT_ID": CLIENT_ID, "CRMSYNC_CRM_CLIENT_SECRET": secret,
           "CRMSYNC_CRM_RETRY_BASE": "0.05"}
    env.update({f"CRMSYNC_CRM_{k.upper()}": v for k, v in settings.items()})
    return ODataClient(load_connection(env=env))


def test_a_token_revoked_mid_stream_is_renewed_without_losing_a_record(
        secured: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.remote")
    tag = marker()
    keys = seed_accounts(secured, 1000, tag)
    seen: list[str] = []
    with oauth_client(secured, page_size="100") as client:
        accounts = client.entity_set("accounts", "accountid")
        for number, page in enumerate(accounts.read_pages(filter=eq("description", tag)), 1):
            seen += [r["accountid"] for r in page]
            if number == 3:
                secured.emulator.auth.revoke_all()  # every issued token is now refused
    assert sorted(seen) == sorted(keys)
    assert secured.stats.snapshot()["by_status"].get("401") == 1
    assert [r.message for r in caplog.records].count("access token acquired") == 2


class Clock:
    """One clock for the token service and the client, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_refreshed_before_it_expires(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.remote")
    clock = Clock()
    secured = start_emulator(client_id=CLIENT_ID, client_secret=SECRET)
    # Tokens live 100 s on the service's clock; the client renews 10 % (10 s) early.
    secured.emulator.auth = TokenIssuer(CLIENT_ID, SECRET, lifetime=100, clock=clock)
    with secured:
        settings = oauth_client(secured).settings
        session = new_session(settings)
        assert settings.token_url and settings.client_id and settings.client_secret
        auth = ClientCredentials(
            session, connection=settings.name, token_url=settings.token_url,
            client_id=settings.client_id, client_secret=settings.client_secret,
            scope=settings.scope, timeout=settings.timeout, policy=settings.retry_policy,
            clock=clock)
        client = ODataClient(settings, transport=Transport(settings, session=session, auth=auth))
        with client:
            accounts = client.entity_set("accounts", "accountid")
            accounts.create(str(uuid.uuid4()), {"name": "first"})
            clock.now += 95  # the token is still valid for 5 s: a 401-only client keeps it
            accounts.create(str(uuid.uuid4()), {"name": "in the renewal window"})
            acquired = [r.message for r in caplog.records].count("access token acquired")
            clock.now += 10  # past the first token's expiry
            accounts.create(str(uuid.uuid4()), {"name": "after the first token expired"})
        refused = secured.stats.snapshot()["by_status"].get("401", 0)
    assert acquired == 2  # renewed in the window, before any refusal
    assert refused == 0  # no request went out with an expired token


def test_secrets_stay_out_of_logs_and_errors(
        secured: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens: set[str] = set()
    with oauth_client(secured) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        accounts.create(key, {"name": "x"})
        tokens.update(client.transport.auth.secrets())
        secured.emulator.auth.revoke_all()
        assert accounts.get(key) is not None  # 401, new token, retried
        tokens.update(client.transport.auth.secrets())
        with pytest.raises(RemoteError) as bad_request:
            accounts.create(str(uuid.uuid4()), {"name": "y" * 1000})
        text_of_settings = repr(client.settings) + str(client.settings)
    with oauth_client(secured, secret="wrong-" + SECRET) as wrong, \
            pytest.raises(RemoteAuthError) as refused:
        wrong.entity_set("accounts", "accountid").get(key)
    assert refused.value.code == "invalid_client"
    tokens.discard(SECRET)
    assert len(tokens) == 2
    errors = [bad_request.value, refused.value]
    texts = [caplog.text, text_of_settings, *(str(e) for e in errors),
             *(repr(e) for e in errors), *(str(e.__context__) for e in errors)]
    for text in texts:
        assert SECRET not in text
        for token in tokens:
            assert token not in text
    assert "access token acquired" in caplog.text  # the log was captured at all


def test_a_wrong_static_bearer_token_is_refused_without_showing_it(
        secured: EmulatorServer) -> None:
    token = "static-token-" + uuid.uuid4().hex
    client = ODataClient(load_connection(env={"CRMSYNC_CRM_URL": secured.base_url,
                                              "CRMSYNC_CRM_TOKEN": token}))
    with client, pytest.raises(RemoteAuthError) as info:
        list(client.entity_set("accounts", "accountid").read())
    assert info.value.status == 401
    assert token not in str(info.value) and token not in repr(info.value)
