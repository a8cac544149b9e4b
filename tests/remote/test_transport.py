"""The transport's retry loop, throttle gate, 401 handling, observer calls and error
messages, against a scripted session (no network)."""

from __future__ import annotations

import pytest
import requests

from worker.remote.auth import StaticBearer
from worker.remote.config import ConnectionSettings
from worker.remote.errors import (
    RemoteAuthError,
    RemoteError,
    RemoteNotFound,
    RemoteThrottled,
    RemoteUnavailable,
)
from worker.remote.retry import ThrottleGate
from worker.remote.secrets import Secret
from worker.remote.transport import Transport

from .stubs import Recorder, ScriptedSession, response

URL = "http://127.0.0.1:9/api/data/v9.2/accounts"
SETTINGS = ConnectionSettings(name="crm", url="http://127.0.0.1:9/api/data/v9.2",
                              max_retries=3, retry_base=1.0, connect_timeout=2.0,
                              read_timeout=7.0)


class Sleeps(list[float]):
    """A fake sleep that only advances a fake clock."""

    now = 1000.0

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def transport(session: ScriptedSession, **kwargs: object) -> tuple[Transport, Recorder, Sleeps]:
    observer, sleeps = Recorder(), Sleeps()
    settings = kwargs.pop("settings", SETTINGS)
    t = Transport(settings, observer, session=session,  # type: ignore[arg-type]
                  sleep=sleeps, gate=ThrottleGate(sleeps.clock, sleeps),
                  **kwargs)  # type: ignore[arg-type]
    return t, observer, sleeps


def test_success_sends_timeouts_and_reports() -> None:
    session = ScriptedSession(response(200, {"value": []}))
    t, observer, sleeps = transport(session)
    reply = t.send("GET", URL)
    assert reply.status == 200
    assert session.sent[0]["timeout"] == (2.0, 7.0)
    assert observer.requests == [("GET", "2xx")]
    assert sleeps == []


def test_server_errors_are_retried_with_backoff() -> None:
    session = ScriptedSession(response(500), requests.ConnectionError("reset"),
                              response(502), response(200, {}))
    t, observer, sleeps = transport(session)
    assert t.send("GET", URL).status == 200
    assert len(sleeps) == 3
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0 and 2.0 <= sleeps[2] <= 4.0
    assert observer.requests == [("GET", "5xx"), ("GET", "error"), ("GET", "5xx"),
                                 ("GET", "2xx")]


def test_retries_run_out_with_the_service_message() -> None:
    body = {"error": {"code": "0x80040216", "message": "Generic SQL error."}}
    session = ScriptedSession(*[response(500, body) for _ in range(4)])
    t, _, sleeps = transport(session)
    with pytest.raises(RemoteUnavailable) as info:
        t.send("PATCH", URL + "(1)")
    assert (info.value.status, info.value.code, info.value.message) == (
        500, "0x80040216", "Generic SQL error.")
    assert str(info.value) == ("PATCH http://127.0.0.1:9/api/data/v9.2/accounts(1): "
                               "HTTP 500 [0x80040216] Generic SQL error.")
    assert len(sleeps) == 3


def test_non_idempotent_requests_are_not_retried() -> None:
    session = ScriptedSession(requests.ReadTimeout("slow"))
    t, _, sleeps = transport(session)
    with pytest.raises(RemoteUnavailable, match="ReadTimeout"):
        t.send("POST", URL, idempotent=False)
    session = ScriptedSession(response(503))
    t, _, _ = transport(session)
    with pytest.raises(RemoteUnavailable):
        t.send("POST", URL, idempotent=False)
    assert sleeps == []


def test_429_closes_the_gate_for_retry_after() -> None:
    session = ScriptedSession(response(429, b"", {"Retry-After": "2"}), response(200, {}))
    t, observer, sleeps = transport(session)
    assert t.send("POST", URL, idempotent=False).status == 200  # 429: nothing was done
    assert observer.pauses == [2.0]
    assert sleeps == [2.0]  # slept in the gate


def test_throttling_that_never_ends() -> None:
    session = ScriptedSession(*[response(429, b"", {"Retry-After": "1"}) for _ in range(4)])
    t, observer, _ = transport(session)
    with pytest.raises(RemoteThrottled) as info:
        t.send("GET", URL)
    assert info.value.status == 429
    # three waits, and the gate closes after the last refusal too: nobody else should send
    assert observer.pauses == [1.0, 1.0, 1.0, 1.0]


def test_retry_after_beyond_the_limit_gives_up_at_once() -> None:
    settings = ConnectionSettings(name="crm", url=SETTINGS.url, max_retry_after=10.0)
    session = ScriptedSession(response(429, b"", {"Retry-After": "3600"}))
    t, _, _ = transport(session, settings=settings)
    with pytest.raises(RemoteThrottled, match="asked to wait 3600 s"):
        t.send("GET", URL)
    # Nobody else should send meanwhile, but never for longer than max_retry_after.
    assert 5 < t.gate.remaining() <= 10


def test_fatal_4xx_are_not_retried() -> None:
    body = {"error": {"code": "0x80044331", "message": "A validation error occurred."}}
    session = ScriptedSession(response(400, body))
    t, _, sleeps = transport(session)
    with pytest.raises(RemoteError) as info:
        t.send("PATCH", URL + "(1)")
    assert type(info.value) is RemoteError
    assert info.value.code == "0x80044331"
    session = ScriptedSession(response(404))
    t, _, _ = transport(session)
    with pytest.raises(RemoteNotFound, match="Not Found"):
        t.send("GET", URL + "(1)")
    assert sleeps == []


def test_accepted_statuses_are_returned() -> None:
    session = ScriptedSession(response(412))
    t, _, _ = transport(session)
    assert t.send("PATCH", URL + "(1)", accept={412}).status == 412


def test_static_bearer_401_is_final_and_scrubbed() -> None:
    token = "tok-abc-123"
    session = ScriptedSession(response(401, {"error": {"code": "401",
                                                       "message": f"bad token {token}"}}))
    t, _, _ = transport(session, auth=StaticBearer(Secret(token)))
    with pytest.raises(RemoteAuthError) as info:
        t.send("GET", URL)
    assert session.sent[0]["authorization"] == f"Bearer {token}"
    assert token not in str(info.value)
    assert "***" in str(info.value)


class Renewing:
    """An authenticator whose token changes each time it is invalidated."""

    def __init__(self) -> None:
        self.version = 1

    def authorization(self) -> str:
        return f"Bearer t{self.version}"

    def invalidate(self, authorization: str | None) -> bool:
        if authorization == self.authorization():
            self.version += 1
        return True

    def secrets(self) -> list[str]:
        return []


def test_one_401_renews_the_token_and_retries() -> None:
    session = ScriptedSession(response(401), response(200, {}))
    t, _, sleeps = transport(session, auth=Renewing())
    assert t.send("GET", URL).status == 200
    assert [s["authorization"] for s in session.sent] == ["Bearer t1", "Bearer t2"]
    assert sleeps == []
    session = ScriptedSession(response(401), response(401))
    t, _, _ = transport(session, auth=Renewing())
    with pytest.raises(RemoteAuthError):
        t.send("GET", URL)


def test_a_failing_observer_does_not_fail_requests() -> None:
    class Broken:
        def request_finished(self, *args: object) -> None:
            raise RuntimeError("metrics down")

        def throttled(self, seconds: float) -> None:
            raise RuntimeError("metrics down")

    session = ScriptedSession(response(429, b"", {"Retry-After": "0.01"}), response(200, {}))
    sleeps = Sleeps()
    t = Transport(SETTINGS, Broken(), session=session, sleep=sleeps,
                  gate=ThrottleGate(sleeps.clock, sleeps))
    assert t.send("GET", URL).status == 200
