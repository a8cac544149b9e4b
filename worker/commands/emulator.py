"""``crmsync emulator``: a local Dataverse-compatible (or generic OData v4) Web API server
for demos, tests and benchmarks. A test double, not a CRM."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import ssl
from pathlib import Path
from types import FrameType

from worker import settings
from worker.emulator.auth import TOKEN_PATH, TokenIssuer
from worker.emulator.identity import SYSTEM_ASSIGNED
from worker.emulator.profiles import PROFILES
from worker.emulator.server import EmulatorServer
from worker.emulator.webhooks import Webhook, parse_header
from worker.errors import ConfigurationError

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "emulator", help="serve a local Dataverse Web API test double (not a CRM)",
        description="Serve a local, in-memory test double of the Dataverse Web API "
                    "(OData v4) for demos, tests and benchmarks. It is not a CRM.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=settings.PORT, default=8080,
                        help="TCP port (default 8080)")
    _sign_in_options(parser)
    parser.add_argument("--token-lifetime", type=int, default=3600,
                        help="seconds an access token is valid (default 3600)")
    parser.add_argument("--sample-users", type=int, default=0, metavar="N",
                        help="seed N system users with deterministic names (default 0)")
    parser.add_argument("--data-file", help="JSON file to load at start and save at exit "
                                            "(default: data in memory only)")
    parser.add_argument("--change-retention-seconds", type=float, default=7 * 24 * 3600,
                        help="how long change-tracking tokens stay valid (default 7 days, "
                             "as on Dataverse)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="dataverse",
                        help="the server imitated: dataverse (default) or odata, a generic "
                             "OData v4 service (key ID, modifiedAt, POST creates, a duplicate "
                             "key answered 500, its own page size, relative $batch URLs only)")
    parser.add_argument("--page-size", type=int, metavar="N",
                        help="the server's own page size (default: 5000 for dataverse, "
                             "1000 for odata, which ignores odata.maxpagesize)")
    _repeatable(parser, "--webhook", "POST a Dataverse-style execution context to URL after "
                "every create, update and delete (repeatable)", metavar="URL")
    _repeatable(parser, "--webhook-header", "a header sent with every webhook call, e.g. a "
                "shared secret (repeatable)", metavar="'NAME: VALUE'")
    parser.set_defaults(func=_serve)


def _sign_in_options(parser: argparse.ArgumentParser) -> None:
    """How clients sign in: OAuth2 client credentials (secret or certificate), Entra-like
    tenants, Azure identity endpoints, https."""
    _from_env(parser, "--client-id", "turn on OAuth2 client credentials for this client id",
              "none: no authentication")
    _from_env(parser, "--client-secret", "the client's secret",
              "prefer the variable: arguments are visible to other users")
    _repeatable(parser, "--client-certificate", "a certificate (its public part) registered on "
                "the client: it signs in with a client assertion signed by the certificate's "
                "key, checked as Entra ID does (repeatable; with --client-id)", metavar="PEM")
    _repeatable(parser, "--tenant", "a tenant that exists (repeatable; default: any); others "
                "are refused with AADSTS90002")
    _repeatable(parser, "--managed-identity", "answer as an Azure host's identity endpoints for "
                "this identity: 'system' (system-assigned) or a user-assigned client id "
                "(repeatable)", metavar="ID")
    _from_env(parser, "--identity-header",
              "App Service's IDENTITY_HEADER the /msi/token endpoint expects")
    parser.add_argument("--tls-certificate", metavar="PEM",
                        help="serve https with this certificate (with --tls-key): msal signs "
                             "in only against an https authority")
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-certificate")


def _from_env(parser: argparse.ArgumentParser, flag: str, help: str,
              note: str | None = None) -> None:
    """An option whose default is the variable ``CRMSYNC_EMULATOR_<FLAG>`` (``--client-id``:
    ``CRMSYNC_EMULATOR_CLIENT_ID``), named in its help with ``note``."""
    variable = "CRMSYNC_EMULATOR_" + flag.removeprefix("--").replace("-", "_").upper()
    default = f"default: ${variable}" + (f"; {note}" if note else "")
    parser.add_argument(flag, default=os.environ.get(variable), help=f"{help} ({default})")


def _repeatable(parser: argparse.ArgumentParser, flag: str, help: str,
                metavar: str | None = None) -> None:
    """An option that may be given several times: the list of its values (empty: none)."""
    parser.add_argument(flag, action="append", default=[], metavar=metavar, help=help)


def _serve(args: argparse.Namespace) -> int:
    if args.client_secret is not None and args.client_id is None:
        raise ConfigurationError("crmsync emulator: --client-id and --client-secret go together")
    if args.client_id is not None and args.client_secret is None and not args.client_certificate:
        raise ConfigurationError("crmsync emulator: --client-id needs --client-secret or "
                                 "--client-certificate")
    if args.token_lifetime < 1 or args.sample_users < 0:
        raise ConfigurationError("crmsync emulator: --token-lifetime must be at least 1 and "
                                 "--sample-users not negative")
    webhooks = _webhooks(args)
    if args.page_size is not None and not 1 <= args.page_size <= 5000:
        raise ConfigurationError(f"crmsync emulator: --page-size {args.page_size}: expected "
                                 "1-5000")
    issuer, tls = _issuer(args), _tls(args)
    try:
        server = EmulatorServer(args.host, args.port, auth=issuer, tls=tls,
                                sample_users=args.sample_users, data_file=args.data_file,
                                change_retention=args.change_retention_seconds,
                                profile=args.profile, page_size=args.page_size,
                                webhooks=webhooks)
    except OSError as exc:
        raise ConfigurationError(f"crmsync emulator: cannot listen on {args.host}:{args.port}: "
                                 f"{exc.strerror or exc}") from exc
    except ValueError as exc:  # an unreadable --data-file
        raise ConfigurationError(f"crmsync emulator: --data-file {args.data_file}: {exc}") from exc

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(_banner(server, args), flush=True)
    log.info("emulator listening", extra={"url": server.base_url, "auth": issuer.required})
    server.serve_forever()
    log.info("emulator stopped", extra={"requests": server.stats.snapshot()["requests"]})
    return 0


def _issuer(args: argparse.Namespace) -> TokenIssuer:
    """The sign-in the options ask for: a client (secret and / or certificates), tenants,
    managed identities; none of them: no authentication."""
    if args.client_certificate and args.client_id is None:
        raise ConfigurationError("crmsync emulator: --client-certificate needs --client-id")
    certificates = [_certificate(path) for path in args.client_certificate]
    identities = [SYSTEM_ASSIGNED if i == "system" else i for i in args.managed_identity]
    return TokenIssuer(args.client_id, args.client_secret, args.token_lifetime,
                       certificates=certificates, tenants=args.tenant,
                       managed_identities=identities, identity_header=args.identity_header)


def _certificate(path: str) -> str:
    from cryptography import x509

    where = f"crmsync emulator: --client-certificate {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
        x509.load_pem_x509_certificate(text.encode())
    except OSError as exc:
        raise ConfigurationError(f"{where}: {exc.strerror or exc}") from None
    except ValueError:  # not UTF-8, or no PEM certificate at its start
        raise ConfigurationError(f"{where}: not a PEM certificate (-----BEGIN "
                                 "CERTIFICATE-----)") from None
    return text


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if (args.tls_certificate is None) != (args.tls_key is None):
        raise ConfigurationError("crmsync emulator: --tls-certificate and --tls-key go "
                                 "together")
    if args.tls_certificate is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(args.tls_certificate, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"crmsync emulator: --tls-certificate {args.tls_certificate} "
                                 f"/ --tls-key {args.tls_key}: {exc.strerror or exc}") from None
    return context


def _webhooks(args: argparse.Namespace) -> list[Webhook]:
    """The ``--webhook`` receivers, each with every ``--webhook-header``."""
    try:
        headers = dict(parse_header(text) for text in args.webhook_header)
        if headers and not args.webhook:
            raise ValueError("--webhook-header needs a --webhook")
        return [Webhook(url, headers) for url in args.webhook]
    except ValueError as exc:
        raise ConfigurationError(f"crmsync emulator: {exc}") from exc


def _banner(server: EmulatorServer, args: argparse.Namespace) -> str:
    auth = _describe_auth(args)
    data = (f"in memory, loaded from and saved to {args.data_file}" if args.data_file
            else "in memory only (lost at exit)")
    kind = ("the Dataverse Web API" if server.profile.name == "dataverse"
            else "a generic OData v4 service")
    lines = [
        f"crmsync emulator: a local TEST DOUBLE of {kind}. It is NOT a CRM.",
        f"  profile        {server.profile.name} (pages of {server.profile.page_size})",
        f"  service root   {server.base_url}",
        f"  token endpoint {server.root_url}{TOKEN_PATH}",
        f"  authentication {auth}",
        *([f"  authority      {server.host}:{server.port} (msal's authority host: "
           "instance discovery off)"] if args.tls_certificate else []),
        f"  admin          {server.admin_url}/stats | /reset | /faults | /webhooks"
        " | /records/<set>",
        f"  data           {data}; {args.sample_users} sample users",
    ]
    for hook in server.webhooks.hooks:
        lines.append(f"  webhook        {hook.address} (headers: "
                     f"{', '.join(sorted(hook.headers)) or 'none'})")
    if not _is_loopback(args.host):
        lines.append(f"  WARNING: listening on {args.host}: anyone who can reach this port can "
                     "read and change the data.")
    lines.append("Stop with Ctrl-C.")
    return "\n".join(lines)


def _describe_auth(args: argparse.Namespace) -> str:
    parts = []
    if args.client_id:
        ways = [*(["secret"] if args.client_secret else []),
                *([f"{len(args.client_certificate)} certificate(s)"]
                  if args.client_certificate else [])]
        parts.append(f"client id {args.client_id!r} ({', '.join(ways)})")
    if args.managed_identity:
        parts.append(f"managed identities {', '.join(args.managed_identity)}")
    if args.tenant:
        parts.append(f"tenants {', '.join(args.tenant)}")
    if not parts:
        return "off (any request is accepted)"
    return f"on: {'; '.join(parts)}; tokens valid {args.token_lifetime} s"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
