"""Fault injection, in-process and through the admin endpoints, seen by a real client."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from worker.emulator import EmulatorServer


def test_throttle_for_the_next_requests(emulator: EmulatorServer,
                                        emulator_session: requests.Session) -> None:
    emulator.faults.throttle(retry_after=7, count=2)
    url = f"{emulator.base_url}/accounts"
    for _ in range(2):
        response = emulator_session.get(url)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert response.json()["error"]["code"] == "0x80072322"
    assert emulator_session.get(url).status_code == 200


def test_throttle_for_a_duration(emulator: EmulatorServer,
                                 emulator_session: requests.Session) -> None:
    emulator.faults.throttle(duration=0.3)
    url = f"{emulator.base_url}/accounts"
    throttled = emulator_session.get(url)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"  # what is left of the duration, rounded up
    time.sleep(0.35)
    assert emulator_session.get(url).status_code == 200


def test_unavailable_only_for_chosen_methods(emulator: EmulatorServer,
                                             emulator_session: requests.Session) -> None:
    emulator.faults.unavailable(count=1, methods=["POST"])
    url = f"{emulator.base_url}/accounts"
    assert emulator_session.get(url).status_code == 200
    assert emulator_session.post(url, json={"name": "A"}).status_code == 503
    assert emulator.store.count("accounts") == 0  # refused before anything was written
    assert emulator_session.post(url, json={"name": "A"}).status_code == 204


def test_slow_responses(emulator: EmulatorServer, emulator_session: requests.Session) -> None:
    emulator.faults.slow(200, count=1)
    url = f"{emulator.base_url}/accounts"
    began = time.monotonic()
    assert emulator_session.get(url).status_code == 200
    assert time.monotonic() - began >= 0.2  # held back at least the delay asked for
    # count=1: the fault is used up, the next request is not held back.
    assert emulator.faults.active() == []
    assert emulator_session.get(url).status_code == 200


def test_lost_response_after_the_write_was_applied(emulator: EmulatorServer,
                                                   emulator_session: requests.Session) -> None:
    emulator.faults.drop_after_write(count=1)
    key = str(uuid.uuid4())
    url = f"{emulator.base_url}/accounts"
    assert emulator_session.get(url).status_code == 200  # reads are not affected
    with pytest.raises(requests.ConnectionError):
        emulator_session.post(url, json={"accountid": key, "name": "Applied"})
    # The write happened: a client retrying blindly would now meet a duplicate.
    assert emulator.store.get("accounts", key) is not None
    assert emulator_session.post(url, json={"accountid": key}).status_code == 412


def test_error_rate_is_seeded(emulator: EmulatorServer) -> None:
    def failures() -> list[int]:
        emulator.faults.clear()
        emulator.faults.error_rate(0.3, seed=42)
        with requests.Session() as session:
            return [n for n in range(60)
                    if session.get(f"{emulator.base_url}/accounts").status_code == 500]

    first = failures()
    assert 8 <= len(first) <= 30
    assert failures() == first


def test_admin_endpoints_over_http(emulator: EmulatorServer,
                                   emulator_session: requests.Session) -> None:
    admin = emulator.admin_url
    added = emulator_session.post(f"{admin}/faults", json=[
        {"kind": "throttle", "count": 1, "retry_after": 3},
        {"kind": "slow", "delay_ms": 1, "count": 5}])
    assert added.status_code == 201
    assert [f["kind"] for f in added.json()["faults"]] == ["throttle", "slow"]
    assert emulator_session.post(f"{admin}/faults", json={"kind": "meteor"}).status_code == 400

    emulator_session.post(f"{emulator.base_url}/accounts", json={"name": "A"})  # 429
    emulator_session.post(f"{emulator.base_url}/accounts", json={"name": "B"})  # 204
    stats = emulator_session.get(f"{admin}/stats").json()
    assert stats["requests"] == 2
    assert stats["by_status"] == {"429": 1, "204": 1}
    assert stats["faults_injected"] == {"throttle": 1}
    assert stats["records"]["accounts"] == 1
    records = emulator_session.get(f"{admin}/records/accounts").json()["value"]
    assert [r["name"] for r in records] == ["B"]

    assert emulator_session.delete(f"{admin}/faults").json() == {"faults": []}
    emulator_session.post(f"{admin}/reset")
    assert emulator_session.get(f"{admin}/stats").json()["records"]["accounts"] == 0
