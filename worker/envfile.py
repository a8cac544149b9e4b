"""``--env-file FILE``: settings read the way systemd's ``EnvironmentFile=`` reads them, so
an administrator's shell can use the service's own file (``/etc/crmsync/crmsync.env``)
instead of ``set -a; . FILE``. NAME=VALUE lines; blank lines and lines starting with ``#``
or ``;`` are skipped; a value in single or double quotes is taken without them (and, in
double quotes, ``\\"`` ``\\\\`` ``\\$`` stand for the character)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from worker.errors import ConfigurationError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPE = re.compile(r'\\(["\\$`])')


def read(path: str) -> dict[str, str]:
    """The variables of the file; ConfigurationError naming the file (and line) otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"--env-file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"--env-file {path}: not UTF-8 text") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"--env-file {path}: line {number}: expected NAME=VALUE, got {raw.strip()!r}"
                if "SECRET" not in raw.upper() and "PASSWORD" not in raw.upper()
                else f"--env-file {path}: line {number}: expected NAME=VALUE")
        values[name] = _unquote(value.strip())
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return _ESCAPE.sub(r"\1", inner) if value[0] == '"' else inner
    return value


def load(path: str) -> None:
    """Put the file's variables into this process' environment; they win over variables
    already set, as in the service (EnvironmentFile= over Environment=)."""
    os.environ.update(read(path))
