"""Each way of signing in, end to end with the installed command: ``crmsync check`` and a
sync against the emulator with authentication on (over https as an Entra authority for
msal, plain http as an Azure host's identity endpoint). A valid secret, a valid
certificate (encrypted, from systemd credentials), a managed identity; an expired
certificate, an unknown certificate and a wrong secret each fail with one line naming the
setting and Entra's code, and no secret, key or assertion reaches any output."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import crmsync_executable
from tests.support import pki
from worker.emulator import EmulatorServer, start_emulator
from worker.emulator.auth import TokenIssuer
from worker.emulator.identity import SYSTEM_ASSIGNED

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT = "contoso.onmicrosoft.com"
SECRET = "cli-s3cr3t~value"
PASSPHRASE = "cli passphrase"
REGISTERED = pki.certificate("registered")
UNKNOWN = pki.certificate("unknown", key_index=1)
EXPIRED = pki.certificate("expired", key_index=2, valid_from=pki.timedelta(days=-400),
                          valid_until=pki.timedelta(days=-2))
NEVER_SHOWN = [SECRET, PASSPHRASE, *[pem.key_pem.splitlines()[1] for pem in
                                     (REGISTERED, UNKNOWN, EXPIRED)]]


class Cli:
    """Runs crmsync with the test's environment; remembers every output."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.outputs: list[str] = []

    def __call__(self, *args: str, status: int = 0,
                 extra: dict[str, str] | None = None) -> str:
        done = subprocess.run([crmsync_executable(), *args], env={**self.env, **(extra or {})},
                              capture_output=True, text=True, timeout=300, cwd=self.cwd)
        self.outputs.append(done.stdout + done.stderr)
        assert done.returncode == status, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout + done.stderr


@pytest.fixture
def cli(database_url: str, cli_env: dict[str, str], tmp_path: Path) -> Iterator[Cli]:
    cli_env.pop("CRMSYNC_PLUGINS")
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "CREDENTIALS_DIRECTORY"):
        cli_env.pop(name, None)
    cli_env.update({"CRMSYNC_DATABASE_URL": database_url, "CRMSYNC_CRM_MAX_RETRIES": "0"})
    runner = Cli(cli_env, tmp_path)
    runner("sample-data", "--customers", "3")
    runner("setup-defaults")
    yield runner
    for output in runner.outputs:
        for value in NEVER_SHOWN:
            assert value not in output
        assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", output)  # no JWT (assertion, token)


@pytest.fixture
def entra(tmp_path: Path, cli: Cli) -> Iterator[EmulatorServer]:
    context, bundle = pki.server_tls(tmp_path)
    issuer = TokenIssuer(CLIENT_ID, SECRET, tenants=[TENANT],
                         certificates=[REGISTERED.certificate_pem, EXPIRED.certificate_pem])
    server = start_emulator(auth=issuer, tls=context, sample_users=5)
    cli.env.update({"REQUESTS_CA_BUNDLE": str(bundle), "CRMSYNC_CRM_URL": server.base_url,
                    "CRMSYNC_CRM_AUTH": "oauth2", "CRMSYNC_CRM_TENANT": TENANT,
                    "CRMSYNC_CRM_AUTHORITY": f"127.0.0.1:{server.port}",
                    "CRMSYNC_CRM_CLIENT_ID": CLIENT_ID})
    try:
        yield server
    finally:
        server.stop()


def accounts(server: EmulatorServer) -> int:
    return server.store.count("accounts")


def customers_inserted(table: str) -> int:
    row = next(line.split() for line in table.splitlines()
               if line.split()[:2] == ["CUSTOMER", "to_integration"])
    return int(row[2])


def requests_answered(server: EmulatorServer) -> int:
    return int(server.stats.snapshot()["by_status"].get("200", 0))


def test_secret_and_certificate_sign_in_for_check_and_sync(
        cli: Cli, entra: EmulatorServer, tmp_path: Path) -> None:
    secret = {"CRMSYNC_CRM_CLIENT_SECRET": SECRET}
    assert "every enabled mapping is valid" in cli("check", extra=secret)
    assert customers_inserted(cli("sync", "--all", extra=secret)) == 3

    credentials = tmp_path / "credentials"  # as systemd's LoadCredential= leaves them
    credentials.mkdir()
    (credentials / "crm_client_certificate").write_text(REGISTERED.combined(PASSPHRASE))
    (credentials / "crm_client_certificate_passphrase").write_text(PASSPHRASE + "\n")
    certificate = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert "every enabled mapping is valid" in cli("check", extra=certificate)
    before = requests_answered(entra)
    cli("sync", "--all", extra=certificate)
    assert requests_answered(entra) > before


MAPPINGS = ("CURRENCY, SALESPEOPLE, UNITOFMEASURE, CUSTOMER, CONTACTS, RESOURCE-PRODUCT, "
            "ITEM-PRODUCT")


def failure(output: str, needle: str) -> str:
    """The line saying ``needle`` to the operator (``sync`` repeats it once per mapping
    run: the same words after ``<NAME>: mapping <NAME>:``; log records aside), and nothing
    spread over several lines."""
    lines = {re.sub(r"^(crmsync: error: |[A-Z-]+: )?(mapping [A-Z-]+: )?", "", line)
             for line in output.splitlines() if needle in line and not line.startswith("{")}
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines.pop()


def test_refused_credentials_fail_with_one_line(cli: Cli, entra: EmulatorServer,
                                                tmp_path: Path) -> None:
    expired, unknown = tmp_path / "expired.pem", tmp_path / "unknown.pem"
    expired.write_text(EXPIRED.combined())
    unknown.write_text(UNKNOWN.combined())
    seeded = accounts(entra)
    # check: a configuration problem per mapping (1), a refusal by the service (4);
    # sync: mappings failed (2), the service refused (4).
    for command, bad_file, refused in ((["check"], 1, 4), (["sync", "--all"], 2, 4)):
        out = cli(*command, status=bad_file,
                  extra={"CRMSYNC_CRM_CLIENT_CERTIFICATE_FILE": str(expired)})
        line = failure(out, "the certificate expired on ")
        if command == ["check"]:  # one line for the connection, naming its mappings
            assert out.count("the certificate expired on ") == 1
            line = line.removeprefix(f"mappings {MAPPINGS}: ")
        else:  # each mapping run failed with it, the mapping named once
            assert "\nCURRENCY: connection_name: connection 'crm': " in out
        assert line.startswith(f"connection_name: connection 'crm': "
                               f"CRMSYNC_CRM_CLIENT_CERTIFICATE_FILE {str(expired)!r}: ")
        out = cli(*command, status=refused,
                  extra={"CRMSYNC_CRM_CLIENT_CERTIFICATE_FILE": str(unknown)})
        line = failure(out, "AADSTS700027")
        assert "certificate is not registered on the application" in line
        assert "check CRMSYNC_CRM_CLIENT_CERTIFICATE_FILE" in line
        out = cli(*command, status=refused,
                  extra={"CRMSYNC_CRM_CLIENT_SECRET": "wrong-" + SECRET})
        line = failure(out, "AADSTS7000215")
        assert "invalid client secret" in line and "check CRMSYNC_CRM_CLIENT_SECRET" in line
    assert accounts(entra) == seeded  # nothing was written


def test_managed_identity_for_check_and_sync(cli: Cli) -> None:
    host = start_emulator(auth=TokenIssuer(managed_identities=[SYSTEM_ASSIGNED]),
                          sample_users=5)
    try:
        identity = {"CRMSYNC_CRM_URL": host.base_url, "CRMSYNC_CRM_AUTH": "managed_identity",
                    "AZURE_POD_IDENTITY_AUTHORITY_HOST": host.root_url}
        assert "every enabled mapping is valid" in cli("check", extra=identity)
        assert customers_inserted(cli("sync", "--all", extra=identity)) == 3
        assert host.stats.snapshot()["by_status"].get("401") is None
    finally:
        host.stop()
