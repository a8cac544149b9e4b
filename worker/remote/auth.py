"""How requests are authorised: no auth, a static bearer token, an Entra ID sign-in through
msal (client secret, certificate or managed identity; see entra.py), or the OAuth2 client
credentials grant of a generic token endpoint. Every access token is cached, refreshed
before it expires and re-acquired once when the service answers 401 (tokens.py).

All authenticators are thread-safe. With client credentials exactly one thread fetches a
token while the others wait for it, and a 401 only discards the token that was refused
(so a burst of 401s from parallel requests leads to one new token, not one each)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote_plus, urlsplit

import requests

from worker.errors import ConfigurationError
from worker.remote.classify import (
    TRANSIENT_EXCEPTIONS,
    Outcome,
    classify,
    failure_detail,
    parse_error_body,
    parse_retry_after,
    unreachable,
)
from worker.remote.config import ConnectionSettings, TokenEndpointAuthMethod, foreground
from worker.remote.deadlines import whole_request
from worker.remote.errors import RemoteAuthError, origin_of
from worker.remote.retry import RetryPolicy
from worker.remote.secrets import Secret, scrub
from worker.remote.tokens import DEFAULT_LIFETIME, RenewingToken, token_lifetime


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


class ClientCredentials(RenewingToken):
    """OAuth2 client credentials grant against a generic ``token_url``. The secret goes in
    the form body (``client_secret_post``) or as HTTP Basic (``client_secret_basic``, the
    method RFC 6749 requires every server to support; the body then holds no secret)."""

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
        auth_method: TokenEndpointAuthMethod = "client_secret_post",
        where: Callable[[str], str] = str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(connection, clock)
        self._session = session
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._timeout = timeout
        self._policy = policy
        self._auth_method = auth_method
        self._where = where
        self._sleep = sleep

    def _credentials(self) -> list[str]:
        return [self._client_secret.reveal()]

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        """The form and the headers of a token request."""
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if self._auth_method == "client_secret_basic":
            # RFC 6749 2.3.1: both parts form-encoded before they are joined and encoded.
            pair = f"{quote_plus(self._client_id)}:{quote_plus(self._client_secret.reveal())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self._client_id
            form["client_secret"] = self._client_secret.reveal()
        if self._scope:
            form["scope"] = self._scope
        return form, headers

    def _fetch(self) -> tuple[Secret, float]:
        form, headers = self._request()
        attempt = 0
        while True:
            attempt += 1
            try:
                with whole_request(sum(self._timeout)):
                    response = self._session.post(
                        self._token_url, data=form, timeout=self._timeout,
                        headers=headers, allow_redirects=False)
            except TRANSIENT_EXCEPTIONS as exc:
                delay = None if foreground() and unreachable(exc) else self._policy.delay(attempt)
                if delay is None:
                    raise RemoteAuthError(
                        f"token endpoint unreachable: {failure_detail(exc)} "
                        f"after {attempt} attempt(s): check token_url "
                        f"or tenant of connection {self._connection!r}",
                        method="POST", path=_path(self._token_url),
                        origin=origin_of(self._token_url)) from None
                self._sleep(delay)
                continue
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            outcome = classify(response.status_code, retry_after=retry_after)
            if outcome is Outcome.OK:
                return self._accept(response)
            delay = None
            if outcome in (Outcome.THROTTLED, Outcome.RETRIABLE):
                delay = self._policy.delay(attempt, retry_after)
            if delay is None:
                raise self._refusal(response)
            self._sleep(delay)

    def _accept(self, response: requests.Response) -> tuple[Secret, float]:
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
        return Secret(token), lifetime

    def _refusal(self, response: requests.Response) -> RemoteAuthError:
        code, message = parse_error_body(response.content)
        if message is None and code is None and response.content:
            # Not an OAuth2 error document: show the start of what came back (a proxy's
            # page, or a form echo), scrubbed like everything else.
            message = response.content[:300].decode("utf-8", "replace").strip() or None
        said = message or response.reason or "token request refused"
        # Entra's descriptions end in trace and correlation ids no reader acts on.
        said = re.split(r"\s*(?:Trace ID:|Correlation ID:|Timestamp:)", said)[0] or said
        known = [self._client_secret.reveal()]
        text = (f"connection {self._connection!r} could not sign in at its token_url "
                f"(client id {self._client_id}, {self._auth_method}): {said[:500].rstrip('. ')}; "
                f"check {self._hint(code)}")
        return RemoteAuthError(scrub(text, known), status=response.status_code,
                               code=scrub(code, known) if code else None,
                               method="POST", path=_path(self._token_url),
                               origin=origin_of(self._token_url))

    def _hint(self, error: str | None) -> str:
        """The settings to look at for an OAuth2 ``error`` (RFC 6749 5.2), as the user
        set them."""
        if error == "invalid_scope":
            return self._where("scope")
        if error in ("unauthorized_client", "unsupported_grant_type", "invalid_grant"):
            return (f"{self._where('client_id')} (the endpoint does not let this client use "
                    "the client credentials grant)")
        method = self._where("token_endpoint_auth_method")
        other = ("client_secret_post" if self._auth_method == "client_secret_basic"
                 else "client_secret_basic")
        return (f"{self._where('client_secret')} and {self._where('client_id')} (or "
                f"{method}: the endpoint may want {other})")


def _path(url: str) -> str:
    return urlsplit(url).path or url


def authenticator_for(settings: ConnectionSettings, session: requests.Session) -> Authenticator:
    """The authenticator the settings ask for (a certificate is read and checked here)."""
    if settings.auth == "none":
        return NoAuth()
    if settings.auth == "bearer":
        if settings.token is None:
            raise ConfigurationError(f"connection {settings.name!r}: bearer auth needs a token")
        return StaticBearer(settings.token)
    if settings.auth == "managed_identity":
        # msal (and cryptography) are imported on first use: a command that never signs in
        # to Entra ID need not load them (0.1-0.2 s with a warm disk cache, more cold).
        from worker.remote.entra import ManagedIdentity

        return ManagedIdentity(settings, session=session)
    if settings.uses_entra:
        return _entra_application(settings, session)
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
        auth_method=settings.token_endpoint_auth_method,
        where=settings.source,
    )


def _entra_application(settings: ConnectionSettings,
                       session: requests.Session) -> Authenticator:
    from worker.remote.certificate import load_client_certificate
    from worker.remote.entra import EntraApplication

    if not (settings.client_id and settings.tenant and settings.scope
            and (settings.client_secret or settings.client_certificate)):
        raise ConfigurationError(
            f"connection {settings.name!r}: oauth2 auth needs client_id, tenant (or "
            "token_url), a scope and a client secret or certificate")
    certificate = None
    if settings.client_certificate is not None:
        certificate = load_client_certificate(
            settings.client_certificate, settings.client_certificate_passphrase,
            settings.source("client_certificate"),
            settings.source("client_certificate_passphrase"))
    return EntraApplication(settings, certificate, session=session)
