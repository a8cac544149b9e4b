"""Proxies configured by the environment (``HTTP_PROXY``, ``NO_PROXY``, …) carry the
client's requests as requests reads them; the connection reads them at its first request
to an origin, not at every request."""

from __future__ import annotations

import pytest

from tests.support.hostile import Handler, Seen, client_of, hostile

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _empty(handler: Handler, seen: Seen) -> None:
    handler.json(200, {"value": []})


def test_requests_go_through_the_proxy_of_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with hostile(_empty) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        # The service's name never resolves: only the proxy can answer for it.
        with client_of(proxy, url="http://crm.example.invalid/api",
                       allow_http="true") as client:
            accounts = client.entity_set("accounts", "accountid")
            assert list(accounts.read()) == []
            assert list(accounts.read()) == []
    assert [s.path for s in proxy.seen] == ["http://crm.example.invalid/api/accounts"] * 2


def test_no_proxy_sends_the_origin_s_requests_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with hostile(_empty) as crm, client_of(crm) as client:
        assert list(client.entity_set("accounts", "accountid").read()) == []
    assert [s.path for s in crm.seen] == ["/api/accounts"]


def test_a_proxy_set_later_is_used_by_the_next_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with hostile(_empty) as crm, hostile(_empty) as proxy:
        with client_of(crm) as client:
            assert list(client.entity_set("accounts", "accountid").read()) == []
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        with client_of(crm) as client:
            assert list(client.entity_set("accounts", "accountid").read()) == []
    assert [s.path for s in crm.seen] == ["/api/accounts"]
    assert [s.path for s in proxy.seen] == [f"{crm.origin}/api/accounts"]
