"""Sorting responses into what to do next: one pure function, :func:`classify`, plus the
parsers for what a refusal carries (``Retry-After``, the service's error code and message).

=====================  ===========================================================
Outcome                When
=====================  ===========================================================
OK                     2xx
THROTTLED              429; 503 with a Retry-After (Dataverse's "server busy")
RETRIABLE              5xx, a timeout, a broken or refused connection
UNAUTHORIZED           401: the token may have expired; re-acquire once
FATAL                  any other 4xx: this request (record) is wrong and stays wrong;
                       and 3xx: the client follows no redirect, so nothing was done
=====================  ===========================================================
"""

from __future__ import annotations

import enum
import json
import re
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests


class Outcome(enum.Enum):
    """What a response (or a failure to get one) means for the request that caused it."""

    OK = "ok"
    THROTTLED = "throttled"
    RETRIABLE = "retriable"
    UNAUTHORIZED = "unauthorized"
    FATAL = "fatal"


# Failures below HTTP that say nothing about whether the server acted on the request.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


def classify(
    status: int | None,
    *,
    retry_after: float | None = None,
    error: BaseException | None = None,
) -> Outcome:
    """The outcome of one HTTP exchange: ``status`` of the response, or None with the
    ``error`` that prevented one. Unknown exceptions are FATAL (a bug is not retried)."""
    if status is None:
        if error is not None and isinstance(error, TRANSIENT_EXCEPTIONS):
            return Outcome.RETRIABLE
        return Outcome.FATAL
    if status < 300:
        return Outcome.OK
    if status < 400:
        return Outcome.FATAL
    if status == 429 or (status == 503 and retry_after is not None):
        return Outcome.THROTTLED
    if status == 401:
        return Outcome.UNAUTHORIZED
    if status >= 500 or status == 408:
        return Outcome.RETRIABLE
    return Outcome.FATAL


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and everything it wraps (requests → urllib3 → socket), outermost first."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        for attr in ("reason", "__cause__", "__context__"):
            value = getattr(current, attr, None)
            if isinstance(value, BaseException):
                wrapped.append(value)
        pending.extend(wrapped)


def describe_failure(error: BaseException | None) -> str:
    """What prevented a response, in words an operator acts on: ``connection refused``,
    ``host name not resolved``, ``TLS failed (…)``, ``timed out …``."""
    if error is None:
        return "no response"
    causes = list(_causes(error))
    for cause in causes:
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            return "host name not resolved"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
    if any(isinstance(c, requests.exceptions.SSLError | ssl.SSLError) for c in causes):
        detail = next((str(c) for c in reversed(causes) if isinstance(c, ssl.SSLError)), "")
        return f"TLS failed ({detail})" if detail else "TLS failed"
    if any(isinstance(c, requests.ConnectTimeout) for c in causes):
        return "timed out connecting (ConnectTimeout)"
    if any(isinstance(c, requests.Timeout | TimeoutError) for c in causes):
        return "timed out waiting for the response (ReadTimeout)"
    for cause in causes:
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
    if any(type(c).__name__ == "RemoteDisconnected" for c in causes):
        return "the server closed the connection without answering"
    return f"no response ({type(error).__name__})"


def failure_detail(error: BaseException) -> str:
    """:func:`describe_failure` with the exception's class when it does not already name
    it: ``connection refused (ConnectionError)``, ``timed out … (ReadTimeout)``."""
    what, kind = describe_failure(error), type(error).__name__
    return what if f"({kind})" in what else f"{what} ({kind})"


def unreachable(error: BaseException | None) -> bool:
    """The address cannot be reached at all (refused, unresolvable, TLS refused): waiting a
    few seconds rarely changes that, so a command in the foreground reports it at once."""
    text = describe_failure(error)
    return text in ("connection refused", "host name not resolved") or text.startswith("TLS")


def status_class(status: int | None) -> str:
    """``"2xx"`` … ``"5xx"`` for a status, ``"error"`` when no response arrived (a label
    of low cardinality for metrics)."""
    if status is None:
        return "error"
    return f"{status // 100}xx"


# A Retry-After longer than this is read as this: "longer than anything we would wait",
# still a finite number every clock and sleep can add.
LONGEST_RETRY_AFTER = 1e9
_DELTA_SECONDS = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds (digits, a fraction tolerated)
    or an HTTP date; None when absent or unreadable (``inf``, ``nan``, ``1e9`` are not
    delta-seconds). Always finite, at most :data:`LONGEST_RETRY_AFTER`; dates in the
    past give 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return min(max(0.0, float(text)), LONGEST_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    try:
        seconds = (when - now).total_seconds()
    except OverflowError:
        return None
    return min(max(0.0, seconds), LONGEST_RETRY_AFTER)


def _inner_messages(err: dict[str, object]) -> list[str]:
    """The messages of an OData error's ``details`` and of its ``innererror`` (not its
    stack trace), which often say which field was wrong."""
    found: list[str] = []
    details = err.get("details")
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("message"):
            target = f"{detail['target']}: " if detail.get("target") else ""
            found.append(f"{target}{detail['message']}")
    inner = err.get("innererror")
    if isinstance(inner, dict) and inner.get("message"):
        found.append(str(inner["message"]))
    return found


def parse_error_body(body: bytes | str | None) -> tuple[str | None, str | None]:
    """``(code, message)`` from an OData error body (``{"error": {"code", "message"}}``)
    or an OAuth2 one (``{"error": "invalid_client", "error_description": …}``).
    ``(None, None)`` when the body is neither."""
    if not body:
        return None, None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    err = doc.get("error")
    if isinstance(err, dict):
        code, message = err.get("code"), err.get("message")
        text = str(message) if message not in (None, "") else None
        extra = [m for m in _inner_messages(err) if m != text]
        if extra:
            text = "; ".join([text or "error", *extra])
        return (str(code) if code not in (None, "") else None, text)
    if isinstance(err, str):
        description = doc.get("error_description")
        return err, str(description) if description else None
    return None, None
