"""Dataverse's service protection limits on the emulator: the x-ms-ratelimit-* and
x-ms-dop-hint headers on every data response, and 429 past a limit."""

from __future__ import annotations

import requests

from tests.fixtures.emulator import start_emulator_for
from worker.emulator import EmulatorServer, ServiceLimits


def test_headers_count_down_and_the_request_past_the_limit_is_429() -> None:
    server = start_emulator_for(limits=ServiceLimits(requests=5, window=600, dop_hint=3))
    try:
        with requests.Session() as session:
            remaining = []
            for _ in range(5):
                reply = session.get(f"{server.base_url}/accounts")
                assert reply.status_code == 200
                remaining.append(reply.headers["x-ms-ratelimit-burst-remaining-xrm-requests"])
                assert reply.headers["x-ms-dop-hint"] == "3"
                spent = reply.headers["x-ms-ratelimit-time-remaining-xrm-requests"]
                assert spent.startswith("1,199.") or spent == "1,200.00"
            assert remaining == ["4", "3", "2", "1", "0"]
            refused = session.get(f"{server.base_url}/accounts")
            assert refused.status_code == 429
            assert 590 <= int(refused.headers["Retry-After"]) <= 600
            assert refused.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "0"
            assert session.get(f"{server.admin_url}/stats").status_code == 200  # never limited
            shown = session.get(f"{server.admin_url}/limits").json()["limits"]
            assert shown["refused"] == 1 and shown["requests"] == 5
            session.delete(f"{server.admin_url}/limits")
            free = session.get(f"{server.base_url}/accounts")
            assert free.status_code == 200
            assert "x-ms-ratelimit-burst-remaining-xrm-requests" not in free.headers
            set_again = session.post(f"{server.admin_url}/limits", json={"requests": 2})
            assert set_again.json()["limits"]["requests"] == 2
            bad = session.post(f"{server.admin_url}/limits", json={"requestz": 2})
            assert bad.status_code == 400 and "requests" in bad.json()["error"]["message"]
    finally:
        server.stop()


def test_without_limits_no_headers_are_sent(emulator_session: requests.Session,
                                            emulator: EmulatorServer) -> None:
    reply = emulator_session.get(f"{emulator.base_url}/accounts")
    assert "x-ms-dop-hint" not in reply.headers
