"""The emulator as an Entra authority: client assertions checked against registered
certificates (signature, audience, issuer, expiry, x5t / x5t#S256), refusals in Entra's
error format, the OpenID configuration msal reads, tenants, and the managed-identity
endpoints of an Azure host."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from tests.support import pki
from worker.emulator import EmulatorServer, start_emulator
from worker.emulator.assertions import ASSERTION_TYPE, Registered
from worker.emulator.auth import TokenIssuer
from worker.emulator.identity import SYSTEM_ASSIGNED

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT = "contoso.onmicrosoft.com"
SCOPE = "https://contoso.crm.dynamics.com/.default"
GOOD = pki.certificate("registered")
EXPIRED = pki.certificate("expired", key_index=2, valid_from=timedelta(days=-30),
                          valid_until=timedelta(days=-1))
STRANGER = pki.certificate("stranger", key_index=1)


@pytest.fixture
def authority() -> Iterator[EmulatorServer]:
    issuer = TokenIssuer(CLIENT_ID, certificates=[GOOD.certificate_pem,
                                                  EXPIRED.certificate_pem],
                         tenants=[TENANT], managed_identities=[SYSTEM_ASSIGNED],
                         identity_header="the-header")
    server = start_emulator(auth=issuer)
    try:
        yield server
    finally:
        server.stop()


def token_url(server: EmulatorServer, tenant: str = TENANT) -> str:
    return f"{server.root_url}/{tenant}/oauth2/v2.0/token"


def assertion(server: EmulatorServer, pair: pki.Pair = GOOD, *, sha256: bool = True,
              signer: pki.Pair | None = None, **claims: Any) -> str:
    thumbprint = Registered.from_pem(pair.certificate_pem)
    digest = thumbprint.sha256 if sha256 else thumbprint.sha1
    header = {"x5t#S256" if sha256 else "x5t":
              base64.urlsafe_b64encode(bytes.fromhex(digest)).decode().rstrip("=")}
    payload = {"aud": token_url(server), "iss": CLIENT_ID, "sub": CLIENT_ID,
               "exp": time.time() + 600, "iat": time.time(), "jti": "x", **claims}
    key = serialization.load_pem_private_key((signer or pair).key_pem.encode(), None)
    return jwt.encode(payload, key, algorithm="PS256" if sha256 else "RS256",  # type: ignore[arg-type]
                      headers=header)


def sign_in(server: EmulatorServer, client_assertion: str,
            tenant: str = TENANT) -> requests.Response:
    return requests.post(token_url(server, tenant), data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": SCOPE,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion})


def entra_code(answer: requests.Response) -> int:
    doc = answer.json()
    assert doc["error_description"].startswith(f"AADSTS{doc['error_codes'][0]}: ")
    return int(doc["error_codes"][0])


def test_a_registered_certificate_signs_in(authority: EmulatorServer) -> None:
    for sha256 in (True, False):
        answer = sign_in(authority, assertion(authority, sha256=sha256))
        assert answer.status_code == 200, answer.text
        bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        assert requests.get(f"{authority.base_url}/accounts", headers=bearer).status_code == 200


def test_each_wrong_assertion_is_refused_like_entra(authority: EmulatorServer) -> None:
    unknown = sign_in(authority, assertion(authority, STRANGER))
    assert unknown.status_code == 401 and entra_code(unknown) == 700027
    assert "The key was not found" in unknown.json()["error_description"]
    expired = sign_in(authority, assertion(authority, EXPIRED))
    assert entra_code(expired) == 700027
    assert "The key used is expired" in expired.json()["error_description"]
    forged = sign_in(authority, assertion(authority, GOOD, signer=STRANGER))
    assert entra_code(forged) == 700027 and "signature" in forged.json()["error_description"]
    stale = sign_in(authority, assertion(authority, exp=time.time() - 3600))
    assert entra_code(stale) == 700024
    elsewhere = sign_in(authority, assertion(authority, aud="https://login.example/t/token"))
    assert entra_code(elsewhere) == 700212
    impostor = sign_in(authority, assertion(authority, iss="someone", sub="someone"))
    assert entra_code(impostor) == 700021
    assert entra_code(sign_in(authority, "not-a-jwt")) == 50027


def test_openid_configuration_and_tenants(authority: EmulatorServer) -> None:
    config = requests.get(
        f"{authority.root_url}/{TENANT}/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == token_url(authority)
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    missing = requests.get(
        f"{authority.root_url}/fabrikam.example/v2.0/.well-known/openid-configuration")
    assert missing.status_code == 400 and entra_code(missing) == 90002
    assert entra_code(sign_in(authority, assertion(authority), "fabrikam.example")) == 90002


def test_managed_identity_endpoints(authority: EmulatorServer) -> None:
    imds = f"{authority.root_url}/metadata/identity/oauth2/token"
    query = {"api-version": "2018-02-01", "resource": "https://contoso.crm.dynamics.com"}
    answer = requests.get(imds, params=query, headers={"Metadata": "true"})
    assert answer.status_code == 200 and answer.json()["expires_in"].isdigit()
    bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    assert requests.get(f"{authority.base_url}/accounts", headers=bearer).status_code == 200
    assert requests.get(imds, params=query).json()["error_description"] == (
        "Required metadata header not specified")
    assert requests.get(imds, params={**query, "client_id": "nobody"},
                        headers={"Metadata": "true"}).json()["error_description"] == (
        "Identity not found")
    app_service = f"{authority.root_url}/msi/token"
    good = requests.get(app_service, params=query, headers={"X-IDENTITY-HEADER": "the-header"})
    assert good.status_code == 200 and int(good.json()["expires_on"]) > time.time()
    assert requests.get(app_service, params=query,
                        headers={"X-IDENTITY-HEADER": "wrong"}).status_code == 401
