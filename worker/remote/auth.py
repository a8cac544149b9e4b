"""How requests are authorised: no auth, a static bearer token, or an OAuth2 client
credentials grant (Entra ID v2.0 by default) whose access token is cached, refreshed
before it expires and re-acquired once when the service answers 401.

All authenticators are thread-safe. With client credentials exactly one thread fetches a
token while the others wait for it, and a 401 only discards the token that was refused
(so a burst of 401s from parallel requests leads to one new token, not one each)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import requests

from worker.errors import ConfigurationError
from worker.remote.classify import (
    TRANSIENT_EXCEPTIONS,
    Outcome,
    classify,
    describe_failure,
    parse_error_body,
    parse_retry_after,
    unreachable,
)
from worker.remote.config import ConnectionSettings, foreground
from worker.remote.errors import RemoteAuthError, origin_of
from worker.remote.retry import RetryPolicy
from worker.remote.secrets import Secret, scrub

log = logging.getLogger(__name__)

# Refresh this long before expiry: 10 % of the lifetime, at most 5 minutes.
REFRESH_FRACTION = 0.1
REFRESH_MAX_SECONDS = 300.0
# What an ``expires_in`` is read as: absent, not finite, or outside these bounds.
DEFAULT_LIFETIME = 3600.0
MIN_LIFETIME = 60.0
MAX_LIFETIME = 86400.0


class Authenticator(Protocol):
    """Supplies the ``Authorization`` header value of the next request."""

    def authorization(self) -> str | None:
        """The header value (``"Bearer …"``), or None to send none."""

    def invalidate(self, authorization: str | None) -> bool:
        """The service refused ``authorization`` (401). Returns True when a retry with a
        new value makes sense (a renewable token was dropped or already replaced)."""

    def secrets(self) -> list[str]:
        """Values that must never appear in a message (for scrubbing service errors)."""


class NoAuth:
    """For services on a trusted network (and the emulator) that need no token."""

    def authorization(self) -> str | None:
        return None

    def invalidate(self, authorization: str | None) -> bool:
        return False

    def secrets(self) -> list[str]:
        return []


class StaticBearer:
    """A fixed bearer token from the configuration; a 401 is final."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def authorization(self) -> str | None:
        return "Bearer " + self._token.reveal()

    def invalidate(self, authorization: str | None) -> bool:
        return False

    def secrets(self) -> list[str]:
        return [self._token.reveal()]


class ClientCredentials:
    """OAuth2 client credentials grant against ``token_url``; the token is cached until
    shortly before it expires (``min(5 min, 10 % of its lifetime)`` early)."""

    def __init__(
        self,
        session: requests.Session,
        *,
        connection: str,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        scope: str | None,
        timeout: tuple[float, float],
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._session = session
        self._connection = connection
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._timeout = timeout
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: Secret | None = None
        self._refresh_at = 0.0

    def authorization(self) -> str | None:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, self._refresh_at = self._fetch()
            return "Bearer " + self._token.reveal()

    def invalidate(self, authorization: str | None) -> bool:
        with self._lock:
            if self._token is not None and authorization == "Bearer " + self._token.reveal():
                self._token = None
                log.info("access token refused, re-acquiring",
                         extra={"connection": self._connection})
        return True

    def secrets(self) -> list[str]:
        values = [self._client_secret.reveal()]
        token = self._token
        if token is not None:
            values.append(token.reveal())
        return values

    def _fetch(self) -> tuple[Secret, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.reveal(),
        }
        if self._scope:
            form["scope"] = self._scope
        attempt = 0
        while True:
            attempt += 1
            started = self._clock()
            try:
                response = self._session.post(
                    self._token_url, data=form, timeout=self._timeout,
                    headers={"Accept": "application/json"}, allow_redirects=False)
            except TRANSIENT_EXCEPTIONS as exc:
                delay = None if foreground() and unreachable(exc) else self._policy.delay(attempt)
                if delay is None:
                    raise RemoteAuthError(
                        f"token endpoint unreachable: {describe_failure(exc)} "
                        f"({type(exc).__name__}) after {attempt} attempt(s): check token_url "
                        f"or tenant of connection {self._connection!r}",
                        method="POST", path=_path(self._token_url),
                        origin=origin_of(self._token_url)) from None
                self._sleep(delay)
                continue
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            outcome = classify(response.status_code, retry_after=retry_after)
            if outcome is Outcome.OK:
                return self._accept(response, started)
            delay = None
            if outcome in (Outcome.THROTTLED, Outcome.RETRIABLE):
                delay = self._policy.delay(attempt, retry_after)
            if delay is None:
                raise self._refusal(response)
            self._sleep(delay)

    def _accept(self, response: requests.Response, started: float) -> tuple[Secret, float]:
        try:
            doc = response.json()
            token = doc["access_token"]
            lifetime = token_lifetime(doc.get("expires_in", DEFAULT_LIFETIME))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise RemoteAuthError("token endpoint sent no access_token",
                                  status=response.status_code, method="POST",
                                  path=_path(self._token_url)) from None
        if not isinstance(token, str) or not token:
            raise RemoteAuthError("token endpoint sent an empty access_token",
                                  status=response.status_code, method="POST",
                                  path=_path(self._token_url))
        margin = min(REFRESH_MAX_SECONDS, REFRESH_FRACTION * lifetime)
        log.info("access token acquired",
                 extra={"connection": self._connection, "expires_in": lifetime})
        return Secret(token), started + lifetime - margin

    def _refusal(self, response: requests.Response) -> RemoteAuthError:
        code, message = parse_error_body(response.content)
        if message is None and code is None and response.content:
            # Not an OAuth2 error document: show the start of what came back (a proxy's
            # page, or a form echo), scrubbed like everything else.
            message = response.content[:300].decode("utf-8", "replace").strip() or None
        text = message or response.reason or "token request refused"
        known = [self._client_secret.reveal()]
        return RemoteAuthError(scrub(text, known), status=response.status_code,
                               code=scrub(code, known) if code else None,
                               method="POST", path=_path(self._token_url),
                               origin=origin_of(self._token_url))


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


def _path(url: str) -> str:
    return urlsplit(url).path or url


def authenticator_for(settings: ConnectionSettings, session: requests.Session) -> Authenticator:
    """The authenticator the settings ask for."""
    if settings.auth == "none":
        return NoAuth()
    if settings.auth == "bearer":
        if settings.token is None:
            raise ConfigurationError(f"connection {settings.name!r}: bearer auth needs a token")
        return StaticBearer(settings.token)
    if not (settings.client_id and settings.client_secret and settings.token_url):
        raise ConfigurationError(
            f"connection {settings.name!r}: oauth2 auth needs client_id, client_secret "
            "and token_url (or tenant)")
    return ClientCredentials(
        session,
        connection=settings.name,
        token_url=settings.token_url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        scope=settings.scope,
        timeout=settings.timeout,
        policy=settings.retry_policy,
    )
