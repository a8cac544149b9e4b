"""Secrets a service echoes back — in any field of an OData error (code, message, details,
innererror) or in a form body a token endpoint repeats (the client secret, the client
assertion signed with a certificate's key) — never reach an error message or a log record
(msal's included), and so never reach output, logs or job rows. Real HTTP on loopback."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import pytest

from tests.support import pki
from worker.remote.config import load_connection
from worker.remote.errors import RemoteAuthError, RemoteError
from worker.remote.secrets import scrub
from worker.remote.transport import Transport

SECRET = "s3cr+t/v@lue=="
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.payload-part.signature_part"


class EchoHandler(BaseHTTPRequestHandler):
    """The token endpoint echoes the form it got; the service puts the bearer token it got
    into every field of its error."""

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if b"echo-json" in body:
            self.answer(401, json.dumps({"error": "invalid_client", "error_description":
                                         f"bad request: {body.decode()}"}).encode())
        else:
            self.answer(400, b"could not parse " + body, "text/plain")

    def do_GET(self) -> None:  # noqa: N802
        token = self.headers.get("Authorization", "")
        error = {"code": f"0x80040220 {token}", "message": f"refused {token}",
                 "details": [{"target": "name", "message": f"with {token}"}],
                 "innererror": {"message": f"inner {token}", "stacktrace": "at X"}}
        self.answer(400, json.dumps({"error": error}).encode())

    def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def forms(secret: str) -> list[str]:
    return [secret, quote_plus(secret), quote(secret, safe="")]


def assert_clean(error: RemoteError, secret: str) -> None:
    for text in (str(error), repr(error), error.message, error.code or ""):
        for form in forms(secret):
            assert form not in text, text


def test_every_field_of_a_service_error_is_scrubbed(echo_url: str) -> None:
    settings = load_connection(env={"CRMSYNC_CRM_URL": echo_url + "/api",
                                    "CRMSYNC_CRM_TOKEN": TOKEN, "CRMSYNC_CRM_MAX_RETRIES": "0"})
    transport = Transport(settings)
    with pytest.raises(RemoteError) as info:
        transport.send("GET", echo_url + "/api/accounts")
    assert_clean(info.value, TOKEN)
    # What the service said is still there, around the hole.
    assert info.value.code == "0x80040220 Bearer ***"
    assert "refused Bearer ***" in str(info.value)
    assert "name: with Bearer ***" in str(info.value) and "inner Bearer ***" in str(info.value)
    assert "at X" not in str(info.value)  # the stack trace is not shown


@pytest.mark.parametrize("scope", ["plain-text-echo", "echo-json"])
def test_a_token_endpoint_echoing_the_form_body(echo_url: str, scope: str) -> None:
    settings = load_connection(env={
        "CRMSYNC_CRM_URL": echo_url + "/api", "CRMSYNC_CRM_AUTH": "oauth2",
        "CRMSYNC_CRM_CLIENT_ID": "client-1", "CRMSYNC_CRM_CLIENT_SECRET": SECRET,
        "CRMSYNC_CRM_TOKEN_URL": echo_url + "/token", "CRMSYNC_CRM_SCOPE": scope,
        "CRMSYNC_CRM_MAX_RETRIES": "0"})
    transport = Transport(settings)
    with pytest.raises(RemoteAuthError) as info:
        transport.send("GET", echo_url + "/api/accounts")
    assert_clean(info.value, SECRET)
    assert "client_secret=***" in str(info.value)
    assert "client_id=client-1" in str(info.value)  # the rest of the echo stays readable


def test_credentials_by_their_shape() -> None:
    assert scrub("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer ***"
    assert scrub('{"access_token": "xyz", "n": 1}') == '{"access_token": "***", "n": 1}'
    assert scrub("a=1&refresh_token=r1&b=2") == "a=1&refresh_token=***&b=2"
    assert scrub("password: hunter2, then") == "password: ***, then"
    assert scrub("token expired") == "token expired"  # words stay
    assert scrub(f"x {json.dumps(SECRET)[1:-1]} y", [SECRET]) == "x *** y"


# ----------------------------------------------------------------- Entra ID through msal

class EchoAuthority(BaseHTTPRequestHandler):
    """An https authority whose token endpoint echoes the form it got (the secret or the
    client assertion) back: as JSON error text under tenant ``json``, as a plain-text page
    (no JSON at all) under tenant ``text``."""

    bodies: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        tenant = self.path.split("/")[1]
        root = f"https://127.0.0.1:{self.server.server_address[1]}/{tenant}"
        self.answer(200, json.dumps({
            "token_endpoint": root + "/oauth2/v2.0/token",
            "authorization_endpoint": root + "/oauth2/v2.0/authorize",
            "issuer": root + "/v2.0"}).encode())

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        self.bodies.append(body)
        if self.path.startswith("/json/"):
            self.answer(401, json.dumps({
                "error": "invalid_client", "error_codes": [9999999],
                "error_description": f"AADSTS9999999: you sent {body}"}).encode())
        else:
            self.answer(400, f"could not parse {body}".encode(), "text/plain")

    answer = EchoHandler.answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    context, bundle = pki.server_tls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoAuthority)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    EchoAuthority.bodies = []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("tenant", ["json", "text"])
@pytest.mark.parametrize("credential", ["secret", "certificate"])
def test_an_authority_echoing_the_secret_or_the_assertion(
        echo_authority: str, tenant: str, credential: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pair = pki.certificate("echo")
    env = {"CRMSYNC_CRM_URL": "https://127.0.0.1:1/api", "CRMSYNC_CRM_AUTHORITY": echo_authority,
           "CRMSYNC_CRM_TENANT": tenant, "CRMSYNC_CRM_CLIENT_ID": "client-1",
           "CRMSYNC_CRM_MAX_RETRIES": "0"}
    if credential == "secret":
        env["CRMSYNC_CRM_CLIENT_SECRET"] = SECRET
    else:
        pem = tmp_path / "crm.pem"
        pem.write_text(pair.combined("pass phrase"))
        env.update({"CRMSYNC_CRM_CLIENT_CERTIFICATE_FILE": str(pem),
                    "CRMSYNC_CRM_CLIENT_CERTIFICATE_PASSPHRASE": "pass phrase"})
    transport = Transport(load_connection(env=env))
    with pytest.raises(RemoteAuthError) as info:
        transport.send("GET", "https://127.0.0.1:1/api/accounts")
    sent = dict(parse_qsl(EchoAuthority.bodies[0]))
    never = [SECRET, "pass phrase", *pair.key_pem.splitlines()[1:-1]]
    if credential == "certificate":
        never.append(sent["client_assertion"])
        never += sent["client_assertion"].split(".")  # not even a part of it
    texts = [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records),
             *(str(r.exc_info[1]) for r in caplog.records if r.exc_info)]
    for text in texts:
        for value in never:
            for form in forms(value):
                assert form not in text, text
    assert str(info.value).startswith("connection 'crm' could not sign in" if tenant == "text"
                                      else "[AADSTS9999999] connection 'crm' could not sign in")


def test_credentials_by_their_shape_jwt_and_key() -> None:
    assertion = "eyJhbGciOiJQUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"
    assert scrub(f"you sent {assertion} back") == "you sent *** back"
    pair = pki.certificate("shape")
    assert scrub(f"file: {pair.key_pem}end") == "file: ***\nend"
