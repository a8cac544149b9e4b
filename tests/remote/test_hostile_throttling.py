"""A hostile ``Retry-After`` cannot freeze the connection: it is read as a finite number
(or an HTTP date), the shared gate closes for at most ``max_retry_after``, and an answer
asking for longer fails its own request with a clear error."""

from __future__ import annotations

import pytest

from tests.support.hostile import Handler, Seen, client_of, hostile
from worker.remote.classify import parse_retry_after
from worker.remote.errors import RemoteThrottled


@pytest.mark.parametrize("value", ["100000", "inf", "nan", "1e400", "9" * 400,
                                   "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_huge_retry_after_fails_one_request_and_leaves_the_gate_open(value: str) -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        if seen.path.startswith("/api/accounts"):
            handler.json(429, {"error": {"code": "0x80072321", "message": "busy"}},
                         {"Retry-After": value})
        else:
            handler.json(200, {"value": []})

    with hostile(respond) as crm, client_of(crm, max_retry_after=1) as client:
        accounts = client.entity_set("accounts", "accountid")
        if value in ("inf", "nan", "1e400"):  # not delta-seconds: ordinary backoff
            with pytest.raises(RemoteThrottled):
                list(accounts.read())
        else:
            with pytest.raises(RemoteThrottled, match="longer than max_retry_after 1 s"):
                list(accounts.read())
        assert client.transport.gate.remaining() <= 1.0
        # An unrelated request of the same connection goes through (after at most 1 s).
        assert list(client.entity_set("contacts", "contactid").read()) == []
    assert len([s for s in crm.seen if s.path.startswith("/api/accounts")]) <= 2


def test_retry_after_is_always_finite() -> None:
    for junk in ("inf", "-inf", "nan", "1e400", "0x10", "1_000", "٣"):
        assert parse_retry_after(junk) is None, junk
    assert parse_retry_after("9" * 30) == 1e9
    assert parse_retry_after("-3") == 0.0


@pytest.mark.parametrize(("header", "value"), [
    ("x-ms-dop-hint", "inf"), ("x-ms-dop-hint", "1e999"), ("x-ms-dop-hint", "nan"),
    ("x-ms-ratelimit-burst-remaining-xrm-requests", "1e999"),
    ("x-ms-ratelimit-burst-remaining-xrm-requests", "-inf"),
    ("x-ms-ratelimit-time-remaining-xrm-requests", "inf"),
])
def test_a_pacing_hint_that_is_no_finite_number_is_ignored(header: str, value: str) -> None:
    answered = []

    def respond(handler: Handler, seen: Seen) -> None:
        # The hint once, then ordinary figures: an infinite maximum once taken in would
        # break every later computation of the limit.
        hint = value if not answered else "5"
        answered.append(seen.path)
        handler.json(200, {"value": []}, {header: hint})

    with hostile(respond) as crm, client_of(crm, concurrency=4) as client:
        for _ in range(3):
            assert list(client.entity_set("accounts", "accountid").read()) == []
        assert 1 <= client.transport._slots.limit <= 4
    assert len(answered) == 3
