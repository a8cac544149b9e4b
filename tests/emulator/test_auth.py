"""OAuth2 client credentials: off by default; when on, every data request needs a token."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from worker.emulator import EmulatorServer, start_emulator

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "s3cr3t~value"
SCOPE = "https://contoso.crm.dynamics.com/.default"


@pytest.fixture
def secured() -> Iterator[EmulatorServer]:
    server = start_emulator(client_id=CLIENT_ID, client_secret=SECRET, token_lifetime=0.2)
    try:
        yield server
    finally:
        server.stop()


def token_request(server: EmulatorServer, **overrides: str) -> requests.Response:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID,
            "client_secret": SECRET, "scope": SCOPE}
    form.update(overrides)
    return requests.post(server.token_url, data=form)


def test_off_by_default(emulator: EmulatorServer) -> None:
    assert requests.get(f"{emulator.base_url}/accounts").status_code == 200
    # a client configured for authentication still works against it
    assert token_request(emulator).status_code == 200


def test_data_requests_need_a_valid_token(secured: EmulatorServer) -> None:
    url = f"{secured.base_url}/accounts"
    refused = requests.get(url)
    assert refused.status_code == 401
    assert "Bearer" in refused.headers["WWW-Authenticate"]
    assert requests.get(url, headers={"Authorization": "Bearer forged"}).status_code == 401

    grant = token_request(secured)
    assert grant.status_code == 200
    doc = grant.json()
    assert doc["token_type"] == "Bearer" and doc["expires_in"] == 1
    bearer = {"Authorization": f"Bearer {doc['access_token']}"}
    assert requests.get(url, headers=bearer).status_code == 200
    # the tenant-qualified token URL of Entra works as well
    tenant_url = secured.token_url.replace("/oauth2", "/my-tenant/oauth2")
    assert requests.post(tenant_url, data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET,
        "scope": SCOPE}).status_code == 200


def test_expired_token_is_refused(secured: EmulatorServer) -> None:
    token = token_request(secured).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{secured.base_url}/accounts", headers=bearer).status_code == 200
    time.sleep(0.25)
    expired = requests.get(f"{secured.base_url}/accounts", headers=bearer)
    assert expired.status_code == 401
    assert "expired" in expired.headers["WWW-Authenticate"]


def test_bad_credentials_are_refused_like_entra(secured: EmulatorServer) -> None:
    bad_secret = token_request(secured, client_secret="wrong")
    assert bad_secret.status_code == 401
    assert bad_secret.json()["error"] == "invalid_client"
    assert SECRET not in bad_secret.text
    assert token_request(secured, client_id="someone-else").json()["error"] == (
        "unauthorized_client")
    assert token_request(secured, grant_type="password").json()["error"] == (
        "unsupported_grant_type")
    assert token_request(secured, scope="https://contoso.crm.dynamics.com").json()["error"] == (
        "invalid_scope")


def test_admin_endpoints_need_no_token(secured: EmulatorServer) -> None:
    assert requests.get(f"{secured.admin_url}/stats").status_code == 200
