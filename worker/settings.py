"""Process settings: the database, local files, logging and the worker's own settings. Each
comes from a command-line flag, else an environment variable (``CRMSYNC_*``), else its
default, and is validated once at start, so a bad value is one line naming the flag or
variable it came from. Connection settings for the remote side live in
``worker.remote.config``."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from worker.errors import ConfigurationError

Parser = Callable[[str, str], Any]


@dataclass(frozen=True)
class Settings:
    """Where the database is and where crmsync keeps its local files."""

    database_url: str | None
    home: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = env.get("CRMSYNC_HOME") or str(Path.home() / ".local" / "share" / "crmsync")
        url = env.get("CRMSYNC_DATABASE_URL") or None
        if url is not None:
            database_url(url, "CRMSYNC_DATABASE_URL")
        return cls(database_url=url, home=Path(home).expanduser())


# ---------------------------------------------------------------------------- parsers

def count(lo: int, hi: int) -> Parser:
    def parse(raw: str, where: str) -> int:
        if not re.fullmatch(r"\s*\+?\d+\s*", raw) or not lo <= int(raw) <= hi:
            raise ConfigurationError(f"{where}: expected a whole number {lo}-{hi}, got {raw!r}")
        return int(raw)

    return parse


def seconds(lo: float, hi: float) -> Parser:
    """A duration in seconds, ``lo <= value <= hi`` with ``lo > 0``: zero and negative
    values make no sense for a lease, a poll interval or a timeout."""

    def parse(raw: str, where: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not lo <= value <= hi:  # also refuses nan and inf
            raise ConfigurationError(
                f"{where}: expected a number of seconds {lo:g}-{hi:g}, got {raw!r}")
        return value

    return parse


def switch(raw: str, where: str) -> bool:
    """on/off (also true/false, yes/no, 1/0)."""
    value = raw.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ConfigurationError(f"{where}: expected on or off, got {raw!r}")


def address(raw: str, where: str) -> str:
    """``host:port`` with a port 0-65535 (0: any free port); empty: off."""
    if not raw.strip():
        return ""
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ConfigurationError(
            f"{where}: expected host:port with a port 0-65535 (or empty: off), got {raw!r}")
    return f"{host or '127.0.0.1'}:{int(port)}"


def log_level(raw: str, where: str) -> str:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR")
    if raw.strip().upper() not in levels:
        raise ConfigurationError(f"{where}: expected one of {', '.join(levels)}, got {raw!r}")
    return raw.strip().upper()


def log_format(raw: str, where: str) -> str:
    if raw.strip().lower() not in ("auto", "json", "text"):
        raise ConfigurationError(f"{where}: expected auto, json or text, got {raw!r}")
    return raw.strip().lower()


def database_url(raw: str, where: str) -> str:
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        url = None
    if url is None or not url.drivername.startswith(("postgresql", "postgres")):
        raise ConfigurationError(
            f"{where}: expected a PostgreSQL URL such as postgresql://user@host:5432/db, "
            f"got {_without_password(raw)!r}")
    return raw


def _without_password(raw: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", raw)


def text(raw: str, where: str) -> str | None:
    return raw.strip() or None


def argument(parse: Parser) -> Callable[[str], Any]:
    """``parse`` as an argparse ``type=``: a bad value is the usage error of its flag."""

    def convert(raw: str) -> Any:
        try:
            return parse(raw, "value")
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None

    return convert


PORT = argument(count(0, 65535))


# ---------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Setting:
    """One process setting: the flag that sets it, the variable, the default, the rule."""

    dest: str
    flag: str
    env: str
    default: str
    parse: Parser
    help: str
    blank_is_value: bool = False  # an empty variable means "off", not "unset"

    def from_env(self, env: Mapping[str, str]) -> str | None:
        raw = env.get(self.env)
        return raw if raw or (raw is not None and self.blank_is_value) else None


LOGGING = (
    Setting("log_level", "--log-level", "CRMSYNC_LOG_LEVEL", "INFO", log_level,
            "DEBUG, INFO, WARNING or ERROR; DEBUG also prints the traceback of an error"),
    Setting("log_format", "--log-format", "CRMSYNC_LOG_FORMAT", "auto", log_format,
            "auto (text on a terminal and in the journal, JSON lines elsewhere), json or "
            "text; in the journal each line carries its syslog priority"),
)

WORKER = (
    Setting("concurrency", "--concurrency", "CRMSYNC_CONCURRENCY", "4", count(1, 256),
            "runs at the same time in this process (1-256)"),
    Setting("lease_seconds", "--lease-seconds", "CRMSYNC_LEASE_SECONDS", "60",
            seconds(1, 86400), "a run whose worker is silent this long is rescued "
            "(1-86400 s)"),
    Setting("poll_interval", "--poll-interval", "CRMSYNC_POLL_INTERVAL", "2",
            seconds(0.1, 3600), "seconds between polls when no notification arrives "
            "(0.1-3600)"),
    Setting("shutdown_timeout", "--shutdown-timeout", "CRMSYNC_SHUTDOWN_TIMEOUT", "30",
            seconds(0.1, 86400), "on SIGTERM, wait this long for running jobs (0.1-86400 s)"),
    Setting("change_delay", "--change-delay", "CRMSYNC_CHANGE_DELAY", "30",
            seconds(0.1, 86400), "a change to a mapped table makes its entry due within this "
            "many seconds (NAV: 30; 0.1-86400)"),
    Setting("metrics_address", "--metrics-address", "CRMSYNC_METRICS_ADDRESS",
            "127.0.0.1:9465", address, "host:port of /metrics, /healthz and /readyz "
            "(empty: off)", blank_is_value=True),
    Setting("identity", "--identity", "CRMSYNC_WORKER_ID", "", text,
            "worker identity (default host:pid:start)"),
    Setting("remote_probe", "--remote-probe", "CRMSYNC_REMOTE_PROBE", "on", switch,
            "on or off: ask the CRM whether anything changed for entries on inactivity hold "
            "(one small read per entry per run interval)"),
)


def add_options(parser: argparse.ArgumentParser, settings: tuple[Setting, ...]) -> None:
    """The flags of ``settings``; their value is resolved (and checked) by :func:`resolve`."""
    for s in settings:
        shown = s.default or "unset"
        parser.add_argument(s.flag, dest=s.dest, default=None, metavar=s.dest.upper(),
                            help=f"{s.help} (default: ${s.env} or {shown})")


def resolve(args: argparse.Namespace, settings: tuple[Setting, ...],
            env: Mapping[str, str] | None = None) -> None:
    """Replace each setting's flag value in ``args`` by the checked value of the flag, else
    of the variable, else of the default."""
    env = os.environ if env is None else env
    for s in settings:
        raw = getattr(args, s.dest, None)
        if raw is not None:
            setattr(args, s.dest, s.parse(raw, s.flag))
        elif (value := s.from_env(env)) is not None:
            setattr(args, s.dest, s.parse(value, s.env))
        else:
            setattr(args, s.dest, s.parse(s.default, s.flag))


def check_environment(env: Mapping[str, str] | None = None) -> None:
    """Refuse a bad process setting in the environment before any command runs: a wrong
    value in the shared environment file is an error for every command, not only the
    worker, so ``crmsync status`` finds it before ``crmsync run`` does."""
    env = os.environ if env is None else env
    for s in (*LOGGING, *WORKER):
        if (value := s.from_env(env)) is not None:
            s.parse(value, s.env)
    Settings.from_env(env)



# ---------------------------------------------------------------------------- --help texts
# What each command reads from the environment, shown under "environment:" in its --help.

_DATABASE = (
    "CRMSYNC_DATABASE_URL: the PostgreSQL database, postgresql://user@host:5432/db (unset: "
    "the command refuses, unless --embedded: the embedded PostgreSQL under CRMSYNC_HOME)",
    "CRMSYNC_HOME: local files, the embedded server's data (default ~/.local/share/crmsync)",
)
_CONNECTIONS = (
    "CRMSYNC_CONFIG: the TOML file of the CRM connections (also --config)",
    "CRMSYNC_<NAME>_<SETTING>: a setting of connection <name>, e.g. CRMSYNC_CRM_URL "
    "(docs/remote.md)",
)
_EMULATOR = ("CRMSYNC_EMULATOR_CLIENT_ID, CRMSYNC_EMULATOR_CLIENT_SECRET: turn on OAuth2",)
_LOGGING = tuple(f"{s.env}: {s.help}" for s in LOGGING)
_WORKER = (*(f"{s.env}: {s.help}" for s in WORKER),
           "CRMSYNC_PLUGINS: extra job handler modules, comma-separated")

COMMAND_ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "": (*_DATABASE, *_CONNECTIONS, *_LOGGING),
    "run": (*_DATABASE, *_CONNECTIONS, *_WORKER),
    "sync": (*_DATABASE, *_CONNECTIONS),
    "check": (*_DATABASE, *_CONNECTIONS),
    "audit": (*_DATABASE, *_CONNECTIONS),
    "couple": (*_DATABASE, *_CONNECTIONS),
    "emulator": _EMULATOR,
    "demo": _DATABASE,
}


def environment_help(command: str) -> str:
    """The "environment:" paragraph of ``command``'s --help (its database variables when
    the table does not name it: every other command reads the database only)."""
    lines = COMMAND_ENVIRONMENT.get(command, _DATABASE)
    if command:
        lines = (*lines, "CRMSYNC_LOG_LEVEL, CRMSYNC_LOG_FORMAT: logging (see crmsync --help)")
    return "environment:\n" + "\n".join(f"  {line}" for line in lines)
