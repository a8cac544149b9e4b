"""Secrets (client secrets, bearer tokens): where they may come from and how they are kept
out of logs. A secret is read from an environment variable, from a file, or from a systemd
credential (``$CREDENTIALS_DIRECTORY/<name>``, see ``LoadCredential=``) — never from a
database row — and is held in a :class:`Secret`, whose ``repr``/``str`` is ``***``."""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

from worker.errors import ConfigurationError

MASK = "***"

# Credentials by their shape, whoever's they are: ``Bearer <token>``, and a value after a
# credential-like key in a form body (``client_secret=…&``), a query, JSON (``"token": "…"``)
# or prose (``password: …``).
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}")
# A JWT (a client assertion, an access or id token) wherever it stands, and a PEM block
# of a private key.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY"
                          r"-----|\Z)", re.S)
_KEYED = re.compile(
    r"(?i)\b(client_secret|client_assertion|assertion|access_token|refresh_token|id_token"
    r"|password|passwd|secret|token|api[_-]?key)"
    r"(\\?\"?\s*[=:]\s*\\?\"?)([^&\s\"'\\,;]+)")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret (as written, form- or URL-encoded, JSON-escaped)
    and every credential-shaped value replaced by ``***``. For anything a service sends
    back that may reach output, logs or database rows."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote_plus(secret), quote(secret, safe=""),
                     json.dumps(secret)[1:-1]}:
            text = text.replace(form, MASK)
    text = _PRIVATE_KEY.sub(MASK, text)
    text = _JWT.sub(MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _KEYED.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


class Secret:
    """A string that does not show itself: ``str()``, ``repr()`` and f-strings give ``***``.
    Call :meth:`reveal` at the one place the value goes on the wire."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret value must be a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not picklable")


def read_secret_file(path: str | Path, setting: str) -> Secret:
    """The content of ``path`` without its trailing newline. ``setting`` names where the path
    came from, for the error message (the message never contains the content)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{setting}: secret file {str(path)!r} does not exist") from exc
    except OSError as exc:
        raise ConfigurationError(
            f"{setting}: cannot read secret file {str(path)!r} ({exc.strerror or exc})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{setting}: secret file {str(path)!r} is not UTF-8") from exc
    value = text.rstrip("\r\n")
    if not value.strip():
        raise ConfigurationError(f"{setting}: secret file {str(path)!r} is empty")
    return Secret(value)


def credential_path(name: str, env: Mapping[str, str] | None = None) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/<name>`` when systemd passed such a credential, else None."""
    directory = (os.environ if env is None else env).get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    return path if path.is_file() else None
