"""Secrets a service echoes back — in any field of an OData error (code, message, details,
innererror) or in a form body a token endpoint repeats — never reach an error message, and
so never reach output, logs or job rows. Real HTTP on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

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
