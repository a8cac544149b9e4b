"""The ``crmsync`` command. Each sub-command lives in a module of ``worker.commands`` with a
``register(subparsers)`` function; adding a command is one line in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from worker import __version__, logs
from worker.errors import CrmsyncError

COMMANDS = (
    "worker.commands.db",
    "worker.commands.run",
    "worker.commands.entries",
    "worker.commands.emulator",
    "worker.commands.sync",
    "worker.commands.status",
    "worker.commands.demo",
    "worker.commands.sample",
)

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crmsync",
        description="Keep ERP tables in PostgreSQL and a CRM (Dataverse / OData v4) in sync.",
    )
    parser.add_argument("--version", action="version", version=f"crmsync {__version__}")
    parser.add_argument(
        "--config",
        default=os.environ.get("CRMSYNC_CONFIG"),
        help="TOML configuration file (default: $CRMSYNC_CONFIG)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("CRMSYNC_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: $CRMSYNC_LOG_LEVEL or INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default=os.environ.get("CRMSYNC_LOG_FORMAT", "auto"),
        help="auto: JSON lines unless stderr is a terminal",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    json_lines = {"auto": None, "json": True, "text": False}[args.log_format]
    logs.configure(args.log_level, json_lines)
    if args.config:
        # Every part that reads connection settings looks at CRMSYNC_CONFIG.
        os.environ["CRMSYNC_CONFIG"] = args.config
    try:
        return int(args.func(args) or 0)
    except CrmsyncError as exc:
        print(f"crmsync: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
