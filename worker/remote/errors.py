"""Errors of the remote (OData / Dataverse) side. Every one is a CrmsyncError carrying the
HTTP status, the service's own error code and message; none ever contains a secret, a token
or a request body."""

from __future__ import annotations

from urllib.parse import urlsplit

from worker.errors import EXIT_REMOTE, CrmsyncError


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL, the port written out even when it is the default."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"{parts.scheme}://{parts.hostname or ''}"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}"


class RemoteError(CrmsyncError):
    """The service refused a request, or could not be reached.

    ``status`` is the HTTP status (None when no response arrived), ``code`` the service's
    error code (Dataverse: ``0x8004…``; None when it sent none) and ``message`` its message.
    ``origin`` is ``scheme://host:port`` of the service. ``str()`` of the error names the
    request (method, origin and path, never the query or a header).
    """

    exit_status = EXIT_REMOTE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
        path: str | None = None,
        origin: str | None = None,
    ) -> None:
        self.status = status
        self.origin = origin
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        super().__init__(self._render())

    def _render(self) -> str:
        parts: list[str] = []
        if self.method or self.path:
            target = f"{self.origin or ''}{self.path or ''}"
            parts.append(f"{self.method or ''} {target}".strip() + ":")
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"[{self.code}]")
        parts.append(self.message)
        return " ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return (
            _rebuild,
            (type(self), self.message, self.status, self.code, self.method, self.path,
             self.origin),
        )


def _rebuild(
    cls: type[RemoteError],
    message: str,
    status: int | None,
    code: str | None,
    method: str | None,
    path: str | None,
    origin: str | None = None,
) -> RemoteError:
    return cls(message, status=status, code=code, method=method, path=path, origin=origin)


class RemoteNotFound(RemoteError):
    """The record (or entity set) does not exist (HTTP 404)."""


class RemoteConflict(RemoteError):
    """An optimistic-concurrency check failed: the record changed since the etag was read
    (HTTP 412 on ``If-Match: <etag>``)."""


class RemoteThrottled(RemoteError):
    """The service kept throttling (429 / 503 with Retry-After) until the retries ran out."""


class RemoteUnavailable(RemoteError):
    """Server errors, timeouts or connection failures persisted until the retries ran out
    (or the request was not safe to repeat)."""


class RemoteRedirected(RemoteUnavailable):
    """The service answered a redirect (3xx). The client follows none (a redirect would
    carry the credentials to wherever it points), so the request was not carried out: a
    write answered 3xx wrote nothing. Usually the connection's URL is wrong (http for
    https, a moved organisation)."""


class RemoteAuthError(RemoteError):
    """Authentication failed: the token endpoint refused the credentials, or the service
    answered 401 even with a freshly acquired token. (403, a missing privilege on one
    record, is an ordinary RemoteError of that record.)"""


class RemoteProtocolError(RemoteError):
    """The service answered something the OData protocol does not allow: a repeated
    ``@odata.nextLink``, a body that is not JSON, a $batch response that does not match
    the request."""


class RemoteDeltaExpired(RemoteError):
    """A change-tracking delta link is no longer valid (HTTP 410): read everything again
    (a full reconcile) and start over without a delta link."""
