"""``crmsync emulator`` as a user runs it: the installed command in a subprocess."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import requests

from tests.emulator.helpers import Receiver
from tests.support import pki
from worker.cli import build_parser
from worker.emulator import start_emulator
from worker.errors import ConfigurationError
from worker.remote.client import ODataClient
from worker.remote.config import load_connection


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("the emulator did not start")


@pytest.mark.slow
def test_command_serves_until_sigterm_and_keeps_its_data_file(tmp_path: Path) -> None:
    port = free_port()
    data_file = tmp_path / "crm.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "--log-format", "text", "emulator", "--port", str(port),
         "--sample-users", "3", "--data-file", str(data_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/api/data/v9.2"
    try:
        wait_until_serving(f"{base}/", process)
        created = requests.post(f"{base}/accounts", json={"name": "Persisted"})
        assert created.status_code == 204
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "TEST DOUBLE" in stdout and "NOT a CRM" in stdout
    assert f"http://127.0.0.1:{port}/api/data/v9.2" in stdout

    # the data file brings the records back in the next run
    server = start_emulator(data_file=data_file)
    try:
        names = {r["name"] for r in server.store.scan("accounts", None)}
        assert "Persisted" in names
        assert server.store.count("systemusers") == 3
    finally:
        server.stop()


def test_half_configured_authentication_is_an_error() -> None:
    args = build_parser().parse_args(["emulator", "--client-id", "x"])
    with pytest.raises(ConfigurationError, match="--client-secret"):
        args.func(args)


@pytest.mark.parametrize(("argv", "said"), [
    (["--client-certificate", "/nonexistent.pem"], "--client-certificate needs --client-id"),
    (["--client-id", "x", "--client-certificate", "/nonexistent.pem"],
     "--client-certificate /nonexistent.pem: No such file"),
    (["--client-id", "x", "--client-certificate", "KEY"], "not a PEM certificate"),
    (["--tls-certificate", "CERT"], "--tls-certificate and --tls-key go together"),
    (["--tls-certificate", "KEY", "--tls-key", "KEY"], "--tls-certificate KEY / --tls-key"),
])
def test_bad_sign_in_options_are_errors(argv: list[str], said: str, tmp_path: Path) -> None:
    pair = pki.certificate("option")
    (tmp_path / "key.pem").write_text(pair.key_pem)
    (tmp_path / "cert.pem").write_text(pair.certificate_pem)
    argv = [{"KEY": str(tmp_path / "key.pem"), "CERT": str(tmp_path / "cert.pem")}.get(a, a)
            for a in argv]
    said = said.replace("KEY", str(tmp_path / "key.pem"))
    args = build_parser().parse_args(["emulator", *argv])
    with pytest.raises(ConfigurationError, match=re.escape(said)):
        args.func(args)


@pytest.mark.slow
def test_command_as_an_entra_authority_and_an_identity_endpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What msal needs of an authority (https, the OpenID configuration, client assertions
    # checked against the registered certificate) and an Azure host's identity endpoint,
    # from the command alone: crmsync signs in both ways and reads a page.
    client, server = pki.certificate("client"), pki.certificate("127.0.0.1", key_index=9,
                                                                 ip="127.0.0.1")
    files = {name: tmp_path / f"{name}.pem" for name in ("client", "server", "server-key")}
    files["client"].write_text(client.certificate_pem)
    files["server"].write_text(server.certificate_pem)
    files["server-key"].write_text(server.key_pem)
    port, tenant, client_id = free_port(), "contoso.onmicrosoft.com", "11111111-2222-3333-4444-5"
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "--log-format", "text", "emulator", "--port", str(port),
         "--client-id", client_id, "--client-certificate", str(files["client"]),
         "--tenant", tenant, "--managed-identity", "system",
         "--tls-certificate", str(files["server"]), "--tls-key", str(files["server-key"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(files["server"]))
    base = f"https://127.0.0.1:{port}/api/data/v9.2"
    try:
        wait_until_serving(f"https://127.0.0.1:{port}/_admin/stats", process)
        certificate = {"CRMSYNC_CRM_URL": base, "CRMSYNC_CRM_TENANT": tenant,
                       "CRMSYNC_CRM_AUTHORITY": f"127.0.0.1:{port}",
                       "CRMSYNC_CRM_CLIENT_ID": client_id,
                       "CRMSYNC_CRM_CLIENT_CERTIFICATE": client.combined()}
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"https://127.0.0.1:{port}")
        monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
        identity = {"CRMSYNC_CRM_URL": base, "CRMSYNC_CRM_AUTH": "managed_identity"}
        for env in (certificate, identity):
            with ODataClient(load_connection(env=env)) as crm:
                assert list(crm.entity_set("accounts", "accountid").read_pages(top=1)) == [[]]
        assert requests.get(f"{base}/accounts").status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert (f"on: client id '{client_id}' (1 certificate(s)); managed identities system; "
            f"tenants {tenant}") in stdout
    assert f"authority      127.0.0.1:{port}" in stdout
    assert "PRIVATE KEY" not in stdout + stderr


@pytest.mark.parametrize(("argv", "said"), [
    (["--webhook-header", "X-Key: v"], "needs a --webhook"),
    (["--webhook", "ftp://example.org/hook"], "expected http"),
    (["--webhook", "http://127.0.0.1:1/h", "--webhook-header", "no colon"], "'Name: value'"),
    (["--page-size", "0"], "--page-size 0"),
])
def test_bad_profile_and_webhook_options_are_errors(argv: list[str], said: str) -> None:
    args = build_parser().parse_args(["emulator", *argv])
    with pytest.raises(ConfigurationError, match=said):
        args.func(args)


@pytest.mark.slow
def test_command_serves_the_odata_profile_and_calls_its_webhook() -> None:
    port, receiver = free_port(), Receiver()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "--log-format", "text", "emulator", "--port", str(port),
         "--profile", "odata", "--page-size", "10", "--webhook", receiver.url,
         "--webhook-header", "X-Key: s3cret"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/api/data/v9.2"
    key = "5b1d1c57-1f3c-4a52-9e43-0c0c5e0d0a01"
    try:
        wait_until_serving(f"{base}/", process)
        assert requests.post(f"{base}/accounts", json={"ID": key}).status_code == 204
        assert requests.post(f"{base}/accounts", json={"ID": key}).status_code == 500
        headers, call = receiver.next_call()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        receiver.close()
    assert process.returncode == 0, stderr
    assert "generic OData v4" in stdout and "pages of 10" in stdout
    assert "s3cret" not in stdout + stderr  # a header value may be a secret
    assert (call["MessageName"], call["PrimaryEntityId"]) == ("Create", key)
    assert headers["X-Key"] == "s3cret"
