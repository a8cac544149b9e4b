"""The renewal of a bearer token, whatever issues it: cached until shortly before it
expires, fetched by exactly one thread while the others wait, and dropped when the service
refuses it (so a burst of 401s from parallel requests leads to one new token, not one
each)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from worker.remote.secrets import Secret

log = logging.getLogger(__name__)

# Refresh this long before expiry: 10 % of the lifetime, at most 5 minutes.
REFRESH_FRACTION = 0.1
REFRESH_MAX_SECONDS = 300.0
# What an ``expires_in`` is read as: absent, not finite, or outside these bounds.
DEFAULT_LIFETIME = 3600.0
MIN_LIFETIME = 60.0
MAX_LIFETIME = 86400.0


class RenewingToken:
    """A bearer token fetched on demand, cached until shortly before it expires
    (``min(5 min, 10 % of its lifetime)`` early), fetched by one thread while the others
    wait, and dropped when the service refuses it. Subclasses say how to fetch one."""

    def __init__(self, connection: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._connection = connection
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Secret | None = None
        self._refresh_at = 0.0

    def authorization(self) -> str | None:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                started = self._clock()
                self._token, lifetime = self._fetch()
                self._refresh_at = started + lifetime - min(
                    REFRESH_MAX_SECONDS, REFRESH_FRACTION * lifetime)
                log.info("access token acquired",
                         extra={"connection": self._connection, "expires_in": lifetime})
            return "Bearer " + self._token.reveal()

    def invalidate(self, authorization: str | None) -> bool:
        with self._lock:
            if self._token is not None and authorization == "Bearer " + self._token.reveal():
                self._token = None
                self._forget()
                log.info("access token refused, re-acquiring",
                         extra={"connection": self._connection})
        return True

    def secrets(self) -> list[str]:
        values = self._credentials()
        token = self._token
        if token is not None:
            values.append(token.reveal())
        return values

    def _fetch(self) -> tuple[Secret, float]:
        """A new token and its lifetime in seconds; raises RemoteAuthError."""
        raise NotImplementedError

    def _forget(self) -> None:
        """Drop whatever a library caches besides our token (called on a refusal)."""

    def _credentials(self) -> list[str]:
        """The credential values that must never appear in a message."""
        return []

def token_lifetime(expires_in: object) -> float:
    """``expires_in`` as seconds, clamped to 1 minute - 1 day: 0 or a negative value would
    fetch a token per request, ``inf`` or ``nan`` never refresh one early. (A token that
    really dies sooner is renewed at its first 401.)"""
    if isinstance(expires_in, bool):
        raise TypeError("expires_in is not a number")
    lifetime = float(expires_in)  # type: ignore[arg-type]  # ValueError / TypeError: refused
    if not math.isfinite(lifetime):
        return DEFAULT_LIFETIME
    return min(max(lifetime, MIN_LIFETIME), MAX_LIFETIME)
