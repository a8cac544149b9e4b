"""Signing in to Entra ID through Microsoft's msal: a confidential client with a client
secret or a certificate (a client assertion msal signs, its header carrying the SHA-256
thumbprint ``x5t#S256``), or a managed identity of the Azure host (App Service's identity
endpoint from ``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``, else the instance metadata
service).

msal speaks the protocol (the authority's OpenID configuration, the assertion, the
managed-identity endpoints); the token's renewal is ours (:class:`RenewingToken`), so that
the schedule, the one-fetch-for-many-threads and the 401 handling are the same for every
method. msal's own cache is emptied before each fetch: a token the service refused must
not come back from it.

Instance discovery is off: the configured authority host is trusted as written (the
sovereign clouds' hosts are in docs/remote.md), so no request goes to another host."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msal  # type: ignore[import-untyped]
import requests
from msal.exceptions import MsalServiceError  # type: ignore[import-untyped]

from worker.remote.aadsts import code_in_text, entra_code, meaning_of
from worker.remote.certificate import ClientCertificate
from worker.remote.classify import (
    TRANSIENT_EXCEPTIONS,
    failure_detail,
    parse_retry_after,
    unreachable,
)
from worker.remote.config import ConnectionSettings, foreground
from worker.remote.deadlines import DeadlineAdapter, whole_request
from worker.remote.errors import RemoteAuthError
from worker.remote.secrets import MASK, Secret, scrub
from worker.remote.tokens import DEFAULT_LIFETIME, RenewingToken, token_lifetime

log = logging.getLogger(__name__)

IMDS_HOST = "http://169.254.169.254"
# A certificate this close to its end is worth a warning at every start.
EXPIRY_WARNING_DAYS = 30


class _ScrubbingFilter(logging.Filter):
    """msal logs response bodies in some failures; a hostile endpoint could echo the form
    (the secret, the assertion) into one. Every msal record is scrubbed before a handler
    sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def _guard_msal_logs() -> None:
    """Put the filter on every msal logger there is (msal creates some only when a client
    is built, so this runs again before each token request)."""
    guard = _ScrubbingFilter()
    names = [name for name in logging.Logger.manager.loggerDict
             if name == "msal" or name.startswith("msal.")]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ScrubbingFilter) for f in logger.filters):
            logger.addFilter(guard)


_guard_msal_logs()


class _TimedSession(requests.Session):
    """The HTTP client handed to msal: our timeouts on every request (msal sets none when
    given a client), no redirects followed on a token request, and the connection
    session's response hooks (the ``max_reply_mib`` limit on a reply read whole)."""

    def __init__(self, timeout: tuple[float, float],
                 like: requests.Session | None = None) -> None:
        super().__init__()
        self._timeout = timeout
        adapter = DeadlineAdapter(max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        if like is not None:
            self.hooks["response"] = list(like.hooks.get("response", []))

    def request(self, method: str | bytes, url: str | bytes,  # type: ignore[override]
                *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        if str(method).upper() == "POST":
            kwargs.setdefault("allow_redirects", False)
        with whole_request(sum(self._timeout)):
            return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]


class _MsalToken(RenewingToken):
    """The retry loop around one msal call: outages are retried with the connection's
    policy (a refused or unresolvable address fails at once in a foreground command)."""

    def __init__(self, settings: ConnectionSettings, *, clock: Callable[[], float],
                 sleep: Callable[[float], None], session: requests.Session | None) -> None:
        super().__init__(settings.name, clock)
        self._settings = settings
        self._policy = settings.retry_policy
        self._sleep = sleep
        self._session = _TimedSession(settings.timeout, like=session)
        self._cache = msal.TokenCache()

    def _fetch(self) -> tuple[Secret, float]:
        result = self._retrying(self._acquire)
        token = result.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._refusal(result)
        try:
            lifetime = token_lifetime(result.get("expires_in", DEFAULT_LIFETIME))
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        return Secret(token), lifetime

    def _forget(self) -> None:
        kind = msal.TokenCache.CredentialType.ACCESS_TOKEN
        for item in list(self._cache.search(kind)):
            self._cache.remove_at(item)

    def _retrying(self, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            _guard_msal_logs()
            try:
                return call()
            except (requests.HTTPError, MsalServiceError) as exc:  # a 5xx or 429
                response = getattr(exc, "response", None)
                retry_after = (parse_retry_after(response.headers.get("Retry-After"))
                               if response is not None else None)
                delay = self._policy.delay(attempt, retry_after)
                status = re.search(r"\b([45]\d\d)\b", str(exc))
                detail = f"HTTP {status.group(1)}" if status else "a server error"
            except TRANSIENT_EXCEPTIONS as exc:
                delay = None if foreground() and unreachable(exc) else self._policy.delay(attempt)
                detail = failure_detail(exc)
            # msal answers a repeated request from its own memory of a 5xx or 429 for a few
            # seconds; a fresh client makes our retry policy the one that counts.
            self._reset()
            if delay is None:
                raise self._outage(detail, attempt) from None
            self._sleep(delay)

    def _acquire(self) -> dict[str, Any]:
        raise NotImplementedError

    def _reset(self) -> None:
        """Drop msal's client (built again on the next attempt)."""

    def _refusal(self, result: dict[str, Any]) -> RemoteAuthError:
        raise NotImplementedError

    def _outage(self, detail: str, attempts: int) -> RemoteAuthError:
        raise NotImplementedError


class EntraApplication(_MsalToken):
    """A confidential client of ``tenant`` at the ``authority`` host: the client secret,
    or the certificate (``certificate`` given)."""

    def __init__(self, settings: ConnectionSettings, certificate: ClientCertificate | None,
                 *, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(settings, clock=clock, sleep=sleep, session=session)
        self._certificate = certificate
        self._app: Any = None
        self._credential_key = "client_certificate" if certificate else "client_secret"
        if certificate is not None:
            _warn_near_expiry(settings, certificate)

    def _reset(self) -> None:
        self._app = None

    @property
    def authority_url(self) -> str:
        return f"https://{self._settings.authority}/{self._settings.tenant}"

    def _credentials(self) -> list[str]:
        s = self._settings
        return [x.reveal() for x in (s.client_secret, s.client_certificate_passphrase) if x]

    def _client_credential(self) -> Any:
        if self._certificate is None:
            assert self._settings.client_secret is not None
            return self._settings.client_secret.reveal()
        # The key object, not the PEM: msal then neither sees a passphrase nor parses the
        # key again; the certificate makes it send x5t#S256 (and x5c).
        return {"private_key": self._certificate.key,
                "public_certificate": self._certificate.certificate_pem}

    def _application(self) -> Any:
        # Built on first use: msal fetches the OpenID configuration in its constructor.
        if self._app is None:
            try:
                self._app = msal.ConfidentialClientApplication(
                    self._settings.client_id, client_credential=self._client_credential(),
                    authority=self.authority_url, instance_discovery=False,
                    http_client=self._session, token_cache=self._cache)
            except ValueError as exc:
                raise self._discovery_failure(exc) from None
        return self._app

    def _acquire(self) -> dict[str, Any]:
        app = self._application()
        self._forget()
        try:
            result: dict[str, Any] = app.acquire_token_for_client(
                scopes=[self._settings.scope])
        except (ValueError, RecursionError):  # msal's json.loads of a body that is no
            # JSON (a proxy's page), or JSON nested deeper than the parser's stack
            raise RemoteAuthError(
                f"{self._who()}: the token endpoint answered something that is not JSON; "
                f"check {self._settings.source('authority')} (and any proxy between)"
            ) from None
        return result

    def _who(self) -> str:
        s = self._settings
        return (f"connection {s.name!r} could not sign in to Entra ID (tenant {s.tenant}, "
                f"client id {s.client_id}, authority {s.authority})")

    def _refusal(self, result: dict[str, Any]) -> RemoteAuthError:
        code = entra_code(result)
        error = str(result.get("error") or "") or None
        meaning = meaning_of(code, error)
        key = self._credential_key if meaning.setting == "credential" else meaning.setting
        text = f"{self._who()}: {meaning.text}; check {self._settings.source(key)}"
        if self._certificate is not None and key == "client_certificate":
            text += f" ({self._certificate.describe()})"
        if code is None or meaning.setting == "credential" and code not in (7000216, 7000218):
            said = _first_sentence(str(result.get("error_description") or ""))
            if said:
                text += f"; Entra ID says: {scrub(said, self._credentials())}"
        return RemoteAuthError(_without(text, self._credentials()),
                               code=f"AADSTS{code}" if code else error)

    def _discovery_failure(self, exc: ValueError) -> RemoteAuthError:
        said = " ".join(str(e) for e in (exc, exc.__context__) if e is not None)
        code = code_in_text(said)
        if code is not None:
            return self._refusal({"error_codes": [code], "error": "invalid_tenant"})
        status = re.search(r"HTTP status: (\d+)", said)
        return RemoteAuthError(
            f"{self._who()}: the authority has no OpenID configuration at "
            f"{self.authority_url}/v2.0/.well-known/openid-configuration"
            + (f" (HTTP {status.group(1)})" if status else "")
            + f"; check {self._settings.source('tenant')} and "
              f"{self._settings.source('authority')}")

    def _outage(self, detail: str, attempts: int) -> RemoteAuthError:
        return RemoteAuthError(
            f"{self._who()}: the authority is unreachable: {detail} after {attempts} "
            f"attempt(s); check {self._settings.source('authority')} and the network")


class ManagedIdentity(_MsalToken):
    """The Azure host's managed identity: system-assigned, or user-assigned when the
    connection has a ``client_id``. Asks for a token for the service's resource (the
    scope without ``/.default``)."""

    def __init__(self, settings: ConnectionSettings, *,
                 session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(settings, clock=clock, sleep=sleep, session=session)
        self._identity = (msal.UserAssignedManagedIdentity(client_id=settings.client_id)
                          if settings.client_id else msal.SystemAssignedManagedIdentity())
        self._reset()
        scope = settings.scope or ""
        self._resource = scope.removesuffix("/.default")

    def _reset(self) -> None:
        self._client = msal.ManagedIdentityClient(
            self._identity, http_client=self._session, token_cache=self._cache)

    def _acquire(self) -> dict[str, Any]:
        self._forget()
        try:
            result: dict[str, Any] = self._client.acquire_token_for_client(
                resource=self._resource)
        except (ValueError, RecursionError):  # msal's json.loads of a body that is no JSON
            raise RemoteAuthError(
                f"{self._who()}: the endpoint answered something that is not JSON") from None
        return result

    def _who(self) -> str:
        s = self._settings
        kind = (f"user-assigned, client id {s.client_id}" if s.client_id
                else "system-assigned")
        return (f"connection {s.name!r} could not get a token from the managed identity "
                f"({kind}) at {identity_endpoint()}")

    def _refusal(self, result: dict[str, Any]) -> RemoteAuthError:
        error = str(result.get("error") or "refused")
        said = scrub(_first_sentence(str(result.get("error_description") or "")))
        # msal reports every refusal of App Service's endpoint as "invalid_scope" with
        # "<status>, <message>": show the endpoint's own status and message instead.
        status = re.match(r"(\d{3}), (.*)", said)
        code: str | None = error
        if status:
            code, said = None, f"HTTP {status.group(1)}: {status.group(2).rstrip('.')}"
        if status and status.group(1) == "401":
            hint = "IDENTITY_HEADER is not the one the host set for this process"
        elif self._settings.client_id:
            hint = (f"check {self._settings.source('client_id')} (the identity's client id) "
                    "and that the identity is assigned to this host")
        else:
            hint = ("check that this host has a system-assigned identity, or set client_id "
                    "of a user-assigned one")
        return RemoteAuthError(f"{self._who()}: {said or error}; {hint}", code=code)

    def _outage(self, detail: str, attempts: int) -> RemoteAuthError:
        return RemoteAuthError(
            f"{self._who()}: unreachable: {detail} after {attempts} attempt(s); a managed "
            "identity exists only on Azure (VM, App Service, Functions, Container Apps); "
            "elsewhere sign in with auth = \"oauth2\" and a certificate")


def identity_endpoint() -> str:
    """Where msal will ask for a managed identity's token on this host (for messages)."""
    if os.environ.get("IDENTITY_ENDPOINT") and os.environ.get("IDENTITY_HEADER"):
        return f"the App Service identity endpoint {os.environ['IDENTITY_ENDPOINT']}"
    host = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", IMDS_HOST).rstrip("/")
    return f"the instance metadata service {host}"


def _without(text: str, secrets: list[str]) -> str:
    """``text`` with every known secret value replaced (our own words are not scrubbed by
    shape: "client secret: the value…" is no credential)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def _first_sentence(description: str) -> str:
    """Entra's description without its code prefix and trace / correlation ids."""
    text = re.sub(r"^AADSTS\d+:\s*", "", description.strip())
    text = re.split(r"\s*(?:\r?\n|Trace ID:|Correlation ID:|Timestamp:)", text)[0]
    return text[:300].strip()


def _warn_near_expiry(settings: ConnectionSettings, certificate: ClientCertificate) -> None:
    days = (certificate.not_after - datetime.now(UTC)).days
    if days < EXPIRY_WARNING_DAYS:
        log.warning("client certificate expires soon",
                    extra={"connection": settings.name, "days_left": days,
                           "thumbprint": certificate.sha1,
                           "setting": settings.source("client_certificate")})
