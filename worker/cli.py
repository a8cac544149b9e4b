"""The ``crmsync`` command. Each sub-command lives in a module of ``worker.commands`` with a
``register(subparsers)`` function; adding a command is one line in COMMANDS.

This is also the one place where failures become what the user sees: every exception that
reaches :func:`main` is one line ``crmsync: error: <object>: <what is wrong, what to do>``
on stderr and an exit status of ``worker.errors`` (the traceback only at
``--log-level debug``), and the process settings are checked before any command runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

import requests
from sqlalchemy import exc as sa_exc

from worker import __version__, collector, envfile, logs, settings
from worker.commands import common, helptext
from worker.commands.output import clean
from worker.db.engine import describe_db_error, describe_unavailable, normalize_url, redacted
from worker.errors import (
    EXIT_DATABASE,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_REMOTE,
    EXIT_USAGE,
    CrmsyncError,
)
from worker.remote import config as remote_config
from worker.remote.classify import describe_failure
from worker.remote.errors import origin_of

COMMANDS = (
    "worker.commands.db",
    "worker.commands.run",
    "worker.commands.entries",
    "worker.commands.emulator",
    "worker.commands.sync",
    "worker.commands.mappings",
    "worker.commands.errors",
    "worker.commands.records",
    "worker.commands.audit",
    "worker.commands.status",
    "worker.commands.demo",
    "worker.commands.sample",
)

# Commands that run for long and keep retrying an unreachable CRM with backoff; every
# other command reports a refused or unresolvable address at once.
BACKGROUND_COMMANDS = ("run", "demo")

log = logging.getLogger(__name__)


class _Formatter(argparse.HelpFormatter):
    """Wraps each line of a description or epilog on its own (argparse would join them)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            textwrap.fill(line, width, initial_indent=indent,
                          subsequent_indent=indent + " " * (len(line) - len(line.lstrip()) + 2))
            for line in text.splitlines())


class _Parser(argparse.ArgumentParser):
    """A usage error is one line naming the command, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("crmsync").strip() or "arguments"
        self.exit(EXIT_USAGE, f"crmsync: error: {where}: {message}; see "
                              f"{self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crmsync", formatter_class=_Formatter,
        description="Keep ERP tables in PostgreSQL and a CRM (Dataverse / OData v4) in sync.",
        epilog=settings.environment_help("") + "\nexit statuses: 0 done, 1 records failed, "
        "2 bad argument or setting, 3 database unusable, 4 CRM unreachable, 5 internal error")
    parser.add_argument("--version", action="version", version=f"crmsync {__version__}")
    parser.add_argument("--config", default=None,
                        help="TOML configuration file (default: $CRMSYNC_CONFIG)")
    _add_common_options(parser, top=True)
    settings.add_options(parser, settings.LOGGING)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(name).register(commands)
    _add_environment_help(commands)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command takes, before or after its name (after it, an option left out
    does not reset what was given before)."""
    suppress = argparse.SUPPRESS
    parser.add_argument(
        "--env-file", metavar="FILE", default=None if top else suppress,
        help="read settings from FILE first: NAME=VALUE lines as in systemd's "
             "EnvironmentFile=, e.g. the service's own /etc/crmsync/crmsync.env; its values "
             "win over the environment")
    parser.add_argument(
        "--embedded", action="store_true", default=False if top else suppress,
        help="use the embedded PostgreSQL under $CRMSYNC_HOME when CRMSYNC_DATABASE_URL is "
             "unset (without it, a command refuses to run; one process on one host only)")


def _add_environment_help(commands: argparse._SubParsersAction, top: str = "") -> None:
    """Every sub-command's --help ends with the environment variables it reads."""
    for name, sub in commands.choices.items():
        command = top or name
        sub.formatter_class = _Formatter
        _add_common_options(sub, top=False)
        sub.description, sub.epilog = helptext.describe(
            f"{top} {name}".strip(), sub.description, sub.epilog)
        sub.epilog = "\n".join(filter(None, (sub.epilog, settings.environment_help(command))))
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_environment_help(action, command)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _dispatch(argv)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # The output was piped into a reader that stopped early (`| head`): not a failure
        # of crmsync. Further writes (the final flush) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _dispatch(argv: Sequence[str] | None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return report(CrmsyncError(str(exc.code).removeprefix("crmsync ")))
    except BrokenPipeError:
        raise  # see main()
    except BaseException as exc:  # noqa: BLE001 - the one place that reports failures
        return report(exc)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.env_file:
        envfile.load(args.env_file)
    common.allow_embedded(args.embedded or args.command == "demo")
    settings.resolve(args, settings.LOGGING)
    logs.configure(args.log_level, {"auto": None, "json": True, "text": False}[args.log_format])
    settings.check_environment()
    config = args.config or os.environ.get("CRMSYNC_CONFIG")
    if config:
        remote_config.validate_file(config)
        # Every part that reads connection settings looks at CRMSYNC_CONFIG.
        os.environ["CRMSYNC_CONFIG"] = config
    remote_config.set_foreground(args.command not in BACKGROUND_COMMANDS)
    collector.tune()
    return int(args.func(args) or 0)


def report(exc: BaseException) -> int:
    """Print ``exc`` as the one error line; its traceback goes to the debug log only."""
    status, message = describe(exc)
    log.debug("the error below came from here", exc_info=exc)
    priority = "<3>" if logs.stderr_is_journal() else ""  # journalctl -p err shows it
    print(f"{priority}crmsync: error: {clean(' '.join(message.split()))}", file=sys.stderr,
          flush=True)
    return status


def _database() -> str:
    """The database the settings point at, for an error that escaped open_engine."""
    url = os.environ.get("CRMSYNC_DATABASE_URL")
    try:
        return f"database {redacted(normalize_url(url))}" if url else "database"
    except Exception:  # noqa: BLE001 - a URL bad enough to fail here was refused earlier
        return "database"


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit status and the message of an exception: the project's own errors say what
    they are; a few foreign ones that escaped a translation are named here."""
    if isinstance(exc, CrmsyncError):
        return exc.exit_status, str(exc) or type(exc).__name__
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return EXIT_DATABASE, f"{_database()}: {describe_unavailable(exc)}"
    if isinstance(exc, sa_exc.DBAPIError):
        return EXIT_USAGE, f"{_database()}: {describe_db_error(exc)}"
    if isinstance(exc, requests.RequestException):
        url = getattr(exc.request, "url", None)
        where = origin_of(url) if isinstance(url, str) else "CRM connection"
        return EXIT_REMOTE, f"{where}: {describe_failure(exc)}"
    if isinstance(exc, OSError) and exc.filename:
        return EXIT_USAGE, f"{exc.filename}: {exc.strerror or exc}"
    return EXIT_INTERNAL, (f"internal error: {type(exc).__name__}: {exc}; run again with "
                           "--log-level debug for the traceback and report it")
