"""Signing in to Entra ID through msal, against the emulator as the authority (over https
on loopback, its certificate trusted through REQUESTS_CA_BUNDLE): a client secret, a
certificate, a managed identity; and the one line a user sees for each refusal."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import jwt
import pytest
import requests

from tests.support import pki
from worker.emulator import EmulatorServer, start_emulator
from worker.emulator.assertions import Registered
from worker.emulator.auth import TokenIssuer
from worker.emulator.identity import SYSTEM_ASSIGNED
from worker.errors import ConfigurationError
from worker.remote.auth import authenticator_for
from worker.remote.client import ODataClient
from worker.remote.config import load_connection
from worker.remote.errors import RemoteAuthError, RemoteProtocolError
from worker.remote.transport import Transport

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT = "contoso.onmicrosoft.com"
SECRET = "s3cr3t~value+/="
PASSPHRASE = "correct horse battery"
REGISTERED = pki.certificate("registered")
OTHER = pki.certificate("not registered", key_index=1)
IDENTITY = "99999999-8888-7777-6666-555555555555"


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The emulator over https with auth on: the secret and one registered certificate."""
    context, bundle = pki.server_tls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    issuer = TokenIssuer(CLIENT_ID, SECRET, certificates=[REGISTERED.certificate_pem],
                         tenants=[TENANT])
    server = start_emulator(auth=issuer, tls=context)
    try:
        yield server
    finally:
        server.stop()


def entra_env(server: EmulatorServer, **settings: str) -> dict[str, str]:
    env = {"CRMSYNC_CRM_URL": server.base_url, "CRMSYNC_CRM_TENANT": TENANT,
           "CRMSYNC_CRM_AUTHORITY": f"127.0.0.1:{server.port}",
           "CRMSYNC_CRM_CLIENT_ID": CLIENT_ID, "CRMSYNC_CRM_MAX_RETRIES": "0"}
    env.update({f"CRMSYNC_CRM_{k.upper()}": v for k, v in settings.items()})
    return env


def read_accounts(env: dict[str, str]) -> list[dict[str, object]]:
    with ODataClient(load_connection(env=env)) as client:
        return [r for page in client.entity_set("accounts", "accountid").read_pages(top=1)
                for r in page]


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(RemoteAuthError) as info:
        read_accounts(env)
    return str(info.value)


def test_client_secret(authority: EmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert read_accounts(entra_env(authority, client_secret=SECRET)) == []
    assert authority.stats.snapshot()["by_status"].get("401") is None
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_certificate_with_passphrase(authority: EmulatorServer, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pem = tmp_path / "crm.pem"
    pem.write_text(REGISTERED.combined(PASSPHRASE))
    env = entra_env(authority, client_certificate_file=str(pem),
                    client_certificate_passphrase=PASSPHRASE)
    assert read_accounts(env) == []
    for record in caplog.records:
        text = record.getMessage()
        assert PASSPHRASE not in text and "PRIVATE KEY" not in text and "eyJ" not in text


def test_wrong_secret_is_one_line_with_code_meaning_and_setting(
        authority: EmulatorServer) -> None:
    line = refusal(entra_env(authority, client_secret="not-the-secret"))
    assert line.startswith("[AADSTS7000215] connection 'crm' could not sign in to Entra ID")
    assert "invalid client secret" in line and "check CRMSYNC_CRM_CLIENT_SECRET" in line
    assert "not-the-secret" not in line and "\n" not in line


def test_unknown_certificate(authority: EmulatorServer) -> None:
    env = entra_env(authority, client_certificate=OTHER.combined())
    line = refusal(env)
    assert line.startswith("[AADSTS700027] ")
    assert "certificate is not registered on the application" in line
    assert "check CRMSYNC_CRM_CLIENT_CERTIFICATE" in line
    assert "PRIVATE KEY" not in line and "\n" not in line


def test_unknown_application_and_tenant(authority: EmulatorServer) -> None:
    line = refusal(entra_env(authority, client_secret=SECRET,
                             client_id="00000000-0000-0000-0000-000000000000"))
    assert line.startswith("[AADSTS700016] ") and "check CRMSYNC_CRM_CLIENT_ID" in line
    line = refusal(entra_env(authority, client_secret=SECRET, tenant="fabrikam.example"))
    assert line.startswith("[AADSTS90002] ") and "check CRMSYNC_CRM_TENANT" in line


def test_expired_certificate_is_refused_before_anything_is_sent(
        authority: EmulatorServer) -> None:
    expired = pki.certificate("expired", valid_from=pki.timedelta(days=-30),
                              valid_until=pki.timedelta(days=-1))
    with pytest.raises(ConfigurationError) as info:
        read_accounts(entra_env(authority, client_certificate=expired.combined()))
    assert str(info.value).startswith("CRMSYNC_CRM_CLIENT_CERTIFICATE: the certificate "
                                      "expired on ")
    assert authority.stats.snapshot()["requests"] == 0


def test_a_refused_token_is_replaced(authority: EmulatorServer,
                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.remote")
    with ODataClient(load_connection(env=entra_env(authority, client_secret=SECRET))) as c:
        accounts = c.entity_set("accounts", "accountid")
        list(accounts.read_pages(top=1))
        authority.emulator.auth.revoke_all()
        list(accounts.read_pages(top=1))
    assert [r.message for r in caplog.records].count("access token acquired") == 2


@pytest.fixture
def identity_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The emulator as the Azure host's identity endpoints (plain http, as IMDS is)."""
    issuer = TokenIssuer(managed_identities=[SYSTEM_ASSIGNED, IDENTITY],
                         identity_header="header-value")
    server = start_emulator(auth=issuer)
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
                 "IMDS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield server
    finally:
        server.stop()


def identity_env(server: EmulatorServer, **settings: str) -> dict[str, str]:
    env = {"CRMSYNC_CRM_URL": server.base_url, "CRMSYNC_CRM_AUTH": "managed_identity",
           "CRMSYNC_CRM_MAX_RETRIES": "0"}
    env.update({f"CRMSYNC_CRM_{k.upper()}": v for k, v in settings.items()})
    return env


def test_managed_identity_on_a_vm(identity_host: EmulatorServer,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", identity_host.root_url)
    assert read_accounts(identity_env(identity_host)) == []
    assert read_accounts(identity_env(identity_host, client_id=IDENTITY)) == []
    line = refusal(identity_env(identity_host, client_id="12345678-0000-0000-0000-0000000000ff"))
    assert line.startswith("[invalid_request] connection 'crm' could not get a token from "
                           "the managed identity (user-assigned, client id 12345678-")
    assert "Identity not found" in line and "check CRMSYNC_CRM_CLIENT_ID" in line


def test_managed_identity_on_app_service(identity_host: EmulatorServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity_host.root_url + "/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header-value")
    assert read_accounts(identity_env(identity_host, client_id=IDENTITY)) == []
    monkeypatch.setenv("IDENTITY_HEADER", "stale-header")
    line = refusal(identity_env(identity_host))
    assert "the App Service identity endpoint http://127.0.0.1:" in line
    assert "stale-header" not in line


def test_a_lifetime_too_short_is_clamped(monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    # A token said to live 30 s is kept 60 s less 10 %: a lifetime of a few seconds
    # would mean a token request for nearly every data request.
    caplog.set_level(logging.INFO, logger="worker.remote")
    host = start_emulator(auth=TokenIssuer(managed_identities=[SYSTEM_ASSIGNED],
                                           lifetime=30))
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", host.root_url)
    try:
        with ODataClient(load_connection(env=identity_env(host))) as client:
            accounts = client.entity_set("accounts", "accountid")
            for _ in range(3):
                list(accounts.read_pages(top=1))
    finally:
        host.stop()
    acquired = [r for r in caplog.records if r.message == "access token acquired"]
    assert [getattr(r, "expires_in", None) for r in acquired] == [60.0]


class FlakyAuthority(BaseHTTPRequestHandler):
    """An https authority whose token endpoint fails once with 503, then grants."""

    posts = 0

    def do_GET(self) -> None:  # noqa: N802
        root = f"https://127.0.0.1:{self.server.server_address[1]}/{TENANT}"
        self.answer(200, {"token_endpoint": root + "/oauth2/v2.0/token",
                          "authorization_endpoint": root + "/oauth2/v2.0/authorize"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).posts += 1
        if type(self).posts == 1:
            self.answer(503, {"error": "temporarily_unavailable"})
        else:
            self.answer(200, {"token_type": "Bearer", "expires_in": 3600,
                              "access_token": "granted-token"})

    def answer(self, status: int, doc: dict[str, object]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def https_authority(handler: type[BaseHTTPRequestHandler], tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An https authority served by ``handler`` on a loopback port, trusted by requests;
    yields the connection settings that sign in against it (tenant, authority, client id)."""
    context, bundle = pki.server_tls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"CRMSYNC_CRM_URL": "https://127.0.0.1:1/api", "CRMSYNC_CRM_TENANT": TENANT,
               "CRMSYNC_CRM_AUTHORITY": f"127.0.0.1:{server.server_address[1]}",
               "CRMSYNC_CRM_CLIENT_ID": CLIENT_ID}
    finally:
        server.shutdown()
        server.server_close()


def test_an_authority_outage_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FlakyAuthority.posts = 0
    with https_authority(FlakyAuthority, tmp_path, monkeypatch) as env:
        settings = load_connection(env={
            **env, "CRMSYNC_CRM_CLIENT_SECRET": SECRET,
            "CRMSYNC_CRM_MAX_RETRIES": "1", "CRMSYNC_CRM_RETRY_BASE": "0"})
        with requests.Session() as session:
            assert authenticator_for(settings, session).authorization() == "Bearer granted-token"
        assert FlakyAuthority.posts == 2


def test_a_certificate_near_its_end_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    ending = pki.certificate("ending", valid_until=pki.timedelta(days=10, hours=1))
    settings = load_connection(env={
        "CRMSYNC_CRM_URL": "https://127.0.0.1:1/api", "CRMSYNC_CRM_TENANT": TENANT,
        "CRMSYNC_CRM_CLIENT_ID": CLIENT_ID, "CRMSYNC_CRM_CLIENT_CERTIFICATE": ending.combined()})
    with requests.Session() as session:
        authenticator_for(settings, session)  # nothing is sent yet
    warning = next(r for r in caplog.records if r.message == "client certificate expires soon")
    assert warning.levelno == logging.WARNING
    assert getattr(warning, "days_left", None) == 10
    assert getattr(warning, "setting", None) == "CRMSYNC_CRM_CLIENT_CERTIFICATE"


class RecordingAuthority(FlakyAuthority):
    """An https authority that grants every token request and keeps the forms it got."""

    forms: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        type(self).forms.append(dict(parse_qsl(body)))
        self.answer(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": "t"})


def test_the_assertion_names_the_certificate_by_its_sha256_thumbprint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Entra ID deprecates the SHA-1 thumbprint (x5t); msal sends x5t#S256 (and PS256) only
    # when it is given the certificate and no SHA-1 thumbprint.
    RecordingAuthority.forms = []
    with https_authority(RecordingAuthority, tmp_path, monkeypatch) as env:
        settings = load_connection(env={
            **env, "CRMSYNC_CRM_CLIENT_CERTIFICATE": REGISTERED.combined()})
        with requests.Session() as session:
            assert authenticator_for(settings, session).authorization() == "Bearer t"
    header = jwt.get_unverified_header(RecordingAuthority.forms[0]["client_assertion"])
    sha256 = Registered.from_pem(REGISTERED.certificate_pem).sha256
    assert header["alg"] == "PS256" and "x5t" not in header
    sent = str(header["x5t#S256"]).rstrip("=")  # msal writes it padded with "="
    assert sent == base64.urlsafe_b64encode(bytes.fromhex(sha256)).decode().rstrip("=")


class HugeAuthority(FlakyAuthority):
    """An https authority whose token reply is 3 MiB."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.answer(200, {"token_type": "Bearer", "access_token": "t" * (3 << 20)})


def test_an_authority_reply_larger_than_the_limit_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with https_authority(HugeAuthority, tmp_path, monkeypatch) as env:
        settings = load_connection(env={
            **env, "CRMSYNC_CRM_CLIENT_SECRET": SECRET, "CRMSYNC_CRM_MAX_REPLY_MIB": "1"})
        transport = Transport(settings)
        with pytest.raises(RemoteProtocolError, match="larger than max_reply_mib 1 MiB"):
            transport.auth.authorization()
        transport.close()
