"""``crmsync db upgrade`` / ``crmsync db current``: the schema's alembic revisions."""

from __future__ import annotations

import argparse

from alembic.util import CommandError

from worker.commands.common import open_engine
from worker.db import migrate
from worker.db.engine import translate_errors
from worker.errors import EXIT_DATABASE, EXIT_OK, ConfigurationError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("db", help="database schema: upgrade, current revision")
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = actions.add_parser("upgrade", help="apply the schema revisions (idempotent)")
    up.add_argument("revision", nargs="?", default="head",
                    help="the revision to upgrade to, e.g. 0005_administration (default: head)")
    up.set_defaults(func=_upgrade)
    cur = actions.add_parser("current", help="print the applied and the expected revision")
    cur.set_defaults(func=_current)


def _upgrade(args: argparse.Namespace) -> int:
    engine = open_engine(require_schema=False)
    with translate_errors():
        try:
            migrate.upgrade(engine, args.revision)
        except CommandError as exc:  # an unknown revision argument
            raise ConfigurationError(
                f"revision {args.revision!r}: {exc}; this version's newest is "
                f"{migrate.head_revision()}") from exc
        print(f"crmsync schema at revision {migrate.current_revision(engine)}")
    return 0


def _current(args: argparse.Namespace) -> int:
    engine = open_engine(require_schema=False)
    with translate_errors():
        current = migrate.current_revision(engine)
    head = migrate.head_revision()
    print(f"applied: {current or '(none)'}\nexpected: {head}")
    return EXIT_OK if current == head else EXIT_DATABASE
