"""Sending one HTTP request to the service: authorisation, the shared throttle gate, the
concurrency limit, timeouts, retries and the observer calls all happen here, so the
client above deals only in OData.

A request is retried when :func:`~worker.remote.classify.classify` says so and the request
is idempotent (every request the client builds is: reads, creates with a client-chosen
key, updates and deletes with preconditions). 429 is retried even for a request that is
not, because the service did not act on it. One 401 leads to a new token and one more try.
In a foreground command (:func:`~worker.remote.config.foreground`) an address that refuses
connections or does not resolve fails at once; the worker keeps backing off, since a
service that restarts refuses connections for a while.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict

from worker import __version__
from worker.remote.auth import Authenticator, authenticator_for
from worker.remote.classify import (
    TRANSIENT_EXCEPTIONS,
    Outcome,
    classify,
    describe_failure,
    parse_error_body,
    parse_retry_after,
    status_class,
    unreachable,
)
from worker.remote.config import ConnectionSettings, foreground
from worker.remote.deadlines import WATCHER, DeadlineAdapter, ReplyTooLarge, read_body
from worker.remote.errors import (
    RemoteAuthError,
    RemoteConflict,
    RemoteError,
    RemoteNotFound,
    RemoteProtocolError,
    RemoteRedirected,
    RemoteThrottled,
    RemoteUnavailable,
    origin_of,
)
from worker.remote.observer import RequestObserver, SafeObserver
from worker.remote.pacing import Pacer
from worker.remote.retry import RetryPolicy, ThrottleGate
from worker.remote.secrets import scrub

log = logging.getLogger(__name__)

BASE_HEADERS = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "User-Agent": f"crmsync/{__version__}",
}


@dataclass(frozen=True)
class Reply:
    """A response reduced to what the client interprets: also what one part of a $batch
    response becomes, so single requests and batch parts share their interpretation."""

    status: int
    headers: Mapping[str, str] = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""

    @classmethod
    def of(cls, response: requests.Response, limit: int) -> Reply:
        """The reply of a streamed response, its body read (at most ``limit`` bytes after
        decompression, else ReplyTooLarge) and the connection released."""
        try:
            body = read_body(response, limit)
        finally:
            response.close()
        return cls(response.status_code, CaseInsensitiveDict(response.headers), body)


class _Bearer(requests.auth.AuthBase):
    # Passing auth explicitly also stops requests from applying ~/.netrc credentials.
    def __init__(self, value: str | None) -> None:
        self.value = value

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.value is not None:
            request.headers["Authorization"] = self.value
        return request


class _Session(requests.Session):
    """A requests session that reads what the environment configures for an origin (the
    proxies of ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY``, the CA bundle
    of ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) at its first request to that origin, not
    at every request: requests scans the whole process environment twice a request for
    them. Settings given to the request itself go through requests as before."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], dict[str, Any]] = {}

    def merge_environment_settings(self, url: str, proxies: dict[str, str] | None,
                                   stream: bool | None, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if proxies or verify is not None or cert is not None or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        known = self._environment.get(origin)
        if known is None:  # two threads may both read it: the same answer
            known = super().merge_environment_settings(url, {}, None, None, None)
            self._environment[origin] = known
        return {"proxies": dict(known["proxies"]), "stream": merge_setting(stream, self.stream),
                "verify": known["verify"], "cert": known["cert"]}


def new_session(settings: ConnectionSettings) -> requests.Session:
    """One session per connection, its pool as large as the allowed concurrency; urllib3
    does not retry (this module does)."""
    session = _Session()
    adapter = DeadlineAdapter(pool_connections=2, pool_maxsize=settings.concurrency,
                              max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(BASE_HEADERS)
    session.hooks["response"].append(_size_limit(settings))
    return session


def _size_limit(settings: ConnectionSettings) -> Callable[..., requests.Response]:
    """A response hook that reads a reply not streamed (a token request made with the same
    session) under ``max_reply_mib`` too: requests would read it whole right after."""

    def hook(response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        if kwargs.get("stream") or response._content_consumed:
            return response  # Transport reads streamed replies itself (Reply.of)
        try:
            body = read_body(response, settings.max_reply_bytes)
        except ReplyTooLarge:
            response.close()
            raise RemoteProtocolError(
                f"the reply is larger than max_reply_mib {settings.max_reply_mib} MiB",
                status=response.status_code, method=response.request.method,
                path=urlsplit(response.url).path, origin=origin_of(response.url)) from None
        response._content, response._content_consumed = body, True
        return response

    return hook


class Transport:
    """Sends requests of one connection. Thread-safe: share one per connection."""

    def __init__(
        self,
        settings: ConnectionSettings,
        observer: RequestObserver | None = None,
        *,
        session: requests.Session | None = None,
        auth: Authenticator | None = None,
        gate: ThrottleGate | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.session = session or new_session(settings)
        self.auth = auth or authenticator_for(settings, self.session)
        self.gate = gate or ThrottleGate(sleep=sleep)
        self.policy = policy or settings.retry_policy
        self.observer = SafeObserver(observer)
        self.sleep = sleep
        # The concurrency limit and pace follow the service's hints (x-ms-dop-hint, …).
        self._slots = Pacer(settings.concurrency, follow=settings.follow_service_hints,
                            window=settings.rate_limit_window)

    def close(self) -> None:
        self.session.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        accept: Collection[int] = (),
        idempotent: bool = True,
    ) -> Reply:
        """The reply to ``method url``: a 2xx, or a status in ``accept``; anything else
        raises the matching RemoteError once retries are spent or not allowed."""
        attempt = 0
        renewed = False
        path = urlsplit(url).path
        while True:
            attempt += 1
            self.gate.wait()
            authorization = self.auth.authorization()
            try:
                reply = self._exchange(method, url, body, headers, authorization)
            except TRANSIENT_EXCEPTIONS as exc:
                if not idempotent or (foreground() and unreachable(exc)):
                    raise self._no_response(exc, method, url, attempt) from None
                self._back_off(method, url, attempt, error=exc)
                continue
            if reply.status in accept:
                return reply
            retry_after = parse_retry_after(reply.headers.get("Retry-After"))
            outcome = classify(reply.status, retry_after=retry_after)
            if outcome is Outcome.OK:
                return reply
            if outcome is Outcome.UNAUTHORIZED and not renewed:
                renewed = True
                if self.auth.invalidate(authorization):
                    attempt -= 1  # a renewed token is not a retry of a failure
                    continue
            if outcome is Outcome.THROTTLED:
                self._throttle(method, path, attempt, retry_after, reply,
                               retriable=idempotent or reply.status == 429)
                continue
            if outcome is Outcome.RETRIABLE and idempotent:
                self._back_off(method, url, attempt, reply=reply, retry_after=retry_after)
                continue
            raise self.error(reply, method, url, outcome)

    def _back_off(self, method: str, url: str, attempt: int, *,
                  error: BaseException | None = None, reply: Reply | None = None,
                  retry_after: float | None = None) -> None:
        """Sleep before the next attempt of a failed idempotent request (this thread
        only), or raise when the attempts are spent."""
        path = urlsplit(url).path
        delay = self.policy.delay(attempt, retry_after)
        if delay is None:
            if reply is not None:
                raise self.error(reply, method, url, Outcome.RETRIABLE)
            raise self._no_response(error, method, url, attempt) from None
        log.warning("remote request failed, retrying", extra={
            "connection": self.settings.name, "method": method, "origin": origin_of(url),
            "path": path, "status": reply.status if reply is not None else None,
            "error": describe_failure(error) if error is not None else None,
            "attempt": attempt, "delay": round(delay, 3)})
        self.sleep(delay)

    def _no_response(self, error: BaseException | None, method: str, url: str,
                     attempt: int) -> RemoteUnavailable:
        """'connection refused', 'host name not resolved', … with the attempts made and
        what to check (the connection's URL setting)."""
        what = describe_failure(error)
        advice = ""
        if what.startswith("connection refused"):
            advice = "is the service running at that address? "
        elif what.startswith("timed out"):
            advice = (f"no answer within connect_timeout {self.settings.connect_timeout:g} s / "
                      f"read_timeout {self.settings.read_timeout:g} s; ")
        return RemoteUnavailable(
            f"{what} after {attempt} attempt(s): {advice}check the URL of connection "
            f"{self.settings.name!r}", method=method, path=urlsplit(url).path,
            origin=origin_of(url))

    def _exchange(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        authorization: str | None,
    ) -> Reply:
        started = time.monotonic()
        status: int | None = None
        settings = self.settings
        try:
            with self._slots as slot_started, WATCHER.watch(settings.connect_timeout
                                                            + settings.read_timeout) as watch:
                try:
                    response = self.session.request(
                        method, url, data=body, headers=dict(headers or {}),
                        auth=_Bearer(authorization), timeout=settings.timeout,
                        allow_redirects=False, stream=True)
                    reply = Reply.of(response, settings.max_reply_bytes)  # inside the slot
                except TRANSIENT_EXCEPTIONS:
                    if watch.expired:
                        raise requests.ReadTimeout("the reply did not complete in time") from None
                    raise
                except ReplyTooLarge:
                    raise self._too_large(method, url) from None
            # A reply cut off at the deadline may look complete (headers ended by EOF).
            if watch.expired:
                raise requests.ReadTimeout("the reply did not complete in time")
            self._slots.observe(reply.headers, slot_started, counted=reply.status != 429)
            status = reply.status
            return reply
        finally:
            self.observer.request_finished(method, status_class(status),
                                           time.monotonic() - started)

    def _too_large(self, method: str, url: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"the reply is larger than max_reply_mib {self.settings.max_reply_mib} MiB "
            f"(counted after decompression); raise max_reply_mib of connection "
            f"{self.settings.name!r} if the service really sends that much",
            method=method, path=urlsplit(url).path, origin=origin_of(url))

    def _throttle(
        self,
        method: str,
        path: str,
        attempt: int,
        retry_after: float | None,
        reply: Reply,
        *,
        retriable: bool,
    ) -> None:
        """Close the gate for every thread of the connection, or raise when the retries are
        spent (the gate still closes: the next request would be refused just the same).
        The gate never closes for longer than ``max_retry_after``: a service asking for
        more fails this request instead of freezing the connection."""
        longest = self.policy.max_retry_after
        delay = self.policy.delay(attempt, retry_after) if retriable else None
        pause = delay if delay is not None else min(retry_after or 0.0, longest)
        if pause > 0:
            self.gate.close_for(pause)
            self.observer.throttled(pause)
        log.warning("remote service throttling", extra={
            "connection": self.settings.name, "method": method, "path": path,
            "status": reply.status, "retry_after": retry_after, "attempt": attempt})
        if retry_after is not None and retry_after > longest:
            raise RemoteThrottled(
                f"the service asked to wait {retry_after:.0f} s (Retry-After), longer than "
                f"max_retry_after {longest:g} s of connection {self.settings.name!r}",
                status=reply.status, method=method, path=path,
                origin=origin_of(self.settings.url))
        if delay is None:
            raise self.error(reply, method, path, Outcome.THROTTLED,
                             origin=origin_of(self.settings.url))

    def error(self, reply: Reply, method: str, url: str, outcome: Outcome | None = None,
              *, cls: type[RemoteError] | None = None,
              origin: str | None = None) -> RemoteError:
        """The RemoteError for a refused request, with the service's code and message
        (secrets scrubbed). Its class follows the outcome: throttled → RemoteThrottled,
        retriable → RemoteUnavailable, 401 → RemoteAuthError, 404 → RemoteNotFound,
        412 → RemoteConflict; ``cls`` overrides the choice."""
        code, message = parse_error_body(reply.body)
        if 300 <= reply.status < 400:
            code, message = None, redirect_message(reply, url, self.settings.name)
        message = self.scrub(message or _reason(reply.status))
        code = self.scrub(code) if code is not None else None
        if outcome is None:
            outcome = classify(reply.status, retry_after=parse_retry_after(
                reply.headers.get("Retry-After")))
        if cls is None and 300 <= reply.status < 400:
            cls = RemoteRedirected
        if cls is None:
            cls = _ERROR_CLASSES.get(outcome) or _FATAL_CLASSES.get(reply.status, RemoteError)
        if origin is None and urlsplit(url).netloc:
            origin = origin_of(url)
        return cls(message, status=reply.status, code=code, method=method,
                   path=urlsplit(url).path, origin=origin)

    def scrub(self, text: str) -> str:
        """``text`` without this connection's secrets (raw or form-encoded) and without
        anything shaped like a credential (see :func:`worker.remote.secrets.scrub`)."""
        return scrub(text, self.auth.secrets())


_ERROR_CLASSES: dict[Outcome, type[RemoteError]] = {
    Outcome.THROTTLED: RemoteThrottled,
    Outcome.RETRIABLE: RemoteUnavailable,
    Outcome.UNAUTHORIZED: RemoteAuthError,
}
_FATAL_CLASSES: dict[int, type[RemoteError]] = {404: RemoteNotFound, 412: RemoteConflict}


def redirect_message(reply: Reply, url: str, connection: str) -> str:
    """What a 3xx means here, naming the origin of its ``Location`` (never its path or
    query, which may carry anything)."""
    location = reply.headers.get("Location")
    target = "no Location"
    if location:
        try:
            target = f"a redirect to {origin_of(urljoin(url, location.strip()))}"
        except ValueError:
            target = "an unreadable Location"
    return (f"the service answered with {target}; redirects are not followed, so the "
            f"request was not carried out (check the URL of connection {connection!r})")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "refused"
