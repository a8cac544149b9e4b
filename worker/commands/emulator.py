"""``crmsync emulator``: a local Dataverse-compatible (or generic OData v4) Web API server
for demos, tests and benchmarks. A test double, not a CRM."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
from types import FrameType

from worker import settings
from worker.emulator.auth import TOKEN_PATH
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
    env = os.environ.get
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=settings.PORT, default=8080,
                        help="TCP port (default 8080)")
    parser.add_argument("--client-id", default=env("CRMSYNC_EMULATOR_CLIENT_ID"),
                        help="turn on OAuth2 client credentials for this client id "
                             "(default: $CRMSYNC_EMULATOR_CLIENT_ID; none: no authentication)")
    parser.add_argument("--client-secret", default=env("CRMSYNC_EMULATOR_CLIENT_SECRET"),
                        help="the client's secret (default: $CRMSYNC_EMULATOR_CLIENT_SECRET; "
                             "prefer the variable: arguments are visible to other users)")
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
    parser.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="POST a Dataverse-style execution context to URL after every "
                             "create, update and delete (repeatable)")
    parser.add_argument("--webhook-header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a header sent with every webhook call, e.g. a shared secret "
                             "(repeatable)")
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    if (args.client_id is None) != (args.client_secret is None):
        raise ConfigurationError("crmsync emulator: --client-id and --client-secret go together")
    if args.token_lifetime < 1 or args.sample_users < 0:
        raise ConfigurationError("crmsync emulator: --token-lifetime must be at least 1 and "
                                 "--sample-users not negative")
    webhooks = _webhooks(args)
    if args.page_size is not None and not 1 <= args.page_size <= 5000:
        raise ConfigurationError(f"crmsync emulator: --page-size {args.page_size}: expected "
                                 "1-5000")
    try:
        server = EmulatorServer(args.host, args.port, client_id=args.client_id,
                                client_secret=args.client_secret,
                                token_lifetime=args.token_lifetime,
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
    log.info("emulator listening", extra={"url": server.base_url,
                                          "auth": args.client_id is not None})
    server.serve_forever()
    log.info("emulator stopped", extra={"requests": server.stats.snapshot()["requests"]})
    return 0


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
    auth = (f"on: client id {args.client_id!r}, tokens valid {args.token_lifetime} s"
            if args.client_id else "off (any request is accepted)")
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
