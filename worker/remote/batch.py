"""Many writes at once: ``$batch`` (multipart/mixed, ``Prefer: odata.continue-on-error``)
with each result mapped back to its operation, or one request per operation when the
service has no $batch.

Each operation is its own part, outside any change set, so one refused record fails only
that record. Batches of one call go out in parallel (up to the connection's concurrency)
unless a record appears twice among the operations; then they go one after the other, so
its operations apply in the order given. Parts are matched to operations by ``Content-ID``
(echoed by the service) or, failing that, by position (OData returns parts in request
order). Parts answered with a retriable status (429, 5xx) and parts the service skipped are
sent again in a later batch; the writes are idempotent, so that is safe. Part URLs are
relative to the service root (``accounts(…)``): every OData v4 service resolves those, while
some refuse absolute ones.

Connection-level failures (retries exhausted with no answer, throttling, credentials
refused) are not failures of a record: the operations they hit come back with
``unknown=True`` (the write may or may not have been applied), the operations not sent yet
after one come back ``unknown`` too, and every result the service did answer is returned
as it is, so the caller can record what was confirmed before it ends the pass
(:func:`connection_failure`). A request answered with the same 5xx every time while other
requests of the call succeed is that record's failure, not the connection's.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from requests.structures import CaseInsensitiveDict

from worker.errors import CrmsyncError
from worker.remote import filters, wire
from worker.remote.calls import Call, WriteResult
from worker.remote.classify import Outcome, classify, parse_retry_after
from worker.remote.errors import (
    RemoteAuthError,
    RemoteError,
    RemoteProtocolError,
    RemoteThrottled,
    RemoteUnavailable,
)
from worker.remote.transport import Reply

if TYPE_CHECKING:
    from worker.remote.client import EntitySet, ODataClient

log = logging.getLogger(__name__)

Kind = Literal["create", "update", "upsert", "delete"]
T = TypeVar("T")
R = TypeVar("R")
# Failures of the connection, not of a record: they propagate out of run_batch.
CONNECTION_ERRORS = (RemoteThrottled, RemoteUnavailable, RemoteAuthError)


@dataclass(frozen=True)
class Operation:
    """One write for :meth:`ODataClient.batch`. ``ref`` is the caller's own handle (a
    coupling id, a row number), handed back in the result untouched. An ``upsert`` creates
    or updates the record named by ``key``, or by ``alternate`` (``{"accountnumber":
    "C1"}``) when given (then ``key`` is only what the result carries)."""

    kind: Kind
    entity_set: EntitySet
    key: str
    values: Mapping[str, Any] = field(default_factory=dict)
    etag: str | None = None
    ref: Any = None
    alternate: Mapping[str, Any] | None = None

    def call(self) -> Call:
        if self.kind == "create":
            return self.entity_set.create_call(self.key, self.values)
        if self.kind == "update":
            return self.entity_set.update_call(self.key, self.values, etag=self.etag)
        if self.kind == "upsert":
            return upsert_call(self.entity_set, self.key, self.values, self.alternate)
        if self.kind == "delete":
            return self.entity_set.delete_call(self.key, etag=self.etag)
        raise ValueError(f"unknown operation kind {self.kind!r}")


@dataclass(frozen=True)
class OperationResult:
    """The outcome of one Operation: ``ok`` with the post-write version (``etag``,
    ``modified_on``, ``record`` when the service returned it), or not ok with ``error``
    (a RemoteError carrying the service's code and message; a CrmsyncError when the
    operation could not even be built, e.g. a malformed key)."""

    ref: Any
    key: str
    ok: bool
    status: int | None
    etag: str | None = None
    modified_on: datetime | None = None
    record: dict[str, Any] | None = None
    error: CrmsyncError | None = None
    already_existed: bool = False
    already_gone: bool = False
    unknown: bool = False

    @classmethod
    def written(cls, op: Operation, result: WriteResult) -> OperationResult:
        # One per written record: filled in without the frozen __init__'s setattr per
        # field (a third of the cost), every field given, as the __init__ would set them.
        written = object.__new__(cls)
        written.__dict__.update(
            ref=op.ref, key=op.key, ok=True, status=result.status, etag=result.etag,
            modified_on=result.modified_on, record=result.record, error=None,
            already_existed=result.already_existed, already_gone=result.already_gone,
            unknown=False)
        return written

    def versioned(self, key: str, etag: str | None,
                  modified_on: datetime | None) -> OperationResult:
        """This result with the record's key and version as read back after the write
        (``dataclasses.replace`` without its per-field work: one per written record)."""
        versioned = object.__new__(OperationResult)
        versioned.__dict__.update(self.__dict__, key=key, etag=etag, modified_on=modified_on)
        return versioned

    @classmethod
    def failed(cls, op: Operation, error: CrmsyncError, *,
               unknown: bool = False) -> OperationResult:
        status = error.status if isinstance(error, RemoteError) else None
        return cls(ref=op.ref, key=op.key, ok=False, status=status, error=error,
                   unknown=unknown)

    @classmethod
    def not_answered(cls, op: Operation, error: CrmsyncError) -> OperationResult:
        """Not sent, or sent in a request that got no usable answer, because of the
        connection-level ``error``: its outcome is unknown."""
        return cls(ref=op.ref, key=op.key, ok=False, status=None, error=error, unknown=True)

    @property
    def transient(self) -> bool:
        """Failed for a reason on the service's side that may pass (429, 5xx, no answer):
        retried by later passes, never a reason to skip the record."""
        return not self.ok and (self.unknown or self.status is None or self.status >= 500
                                or self.status == 429)


def upsert_call(entity_set: EntitySet, key: str, values: Mapping[str, Any],
                alternate: Mapping[str, Any] | None = None) -> Call:
    """``PATCH set(key)`` (or ``set(name='value')``) without preconditions: Dataverse's
    upsert, which creates the record when it is missing and updates it otherwise."""
    url = (alternate_url(entity_set, alternate) if alternate
           else entity_set.record_url(key))
    headers = entity_set._write_headers()

    def interpret(reply: Reply) -> WriteResult:
        return entity_set._result(key, reply)

    return Call("PATCH", url, headers, wire.dumps(dict(values)),
                frozenset(), interpret)


def alternate_url(entity_set: EntitySet, alternate: Mapping[str, Any]) -> str:
    """``…/accounts(accountnumber='C1')``: a record by its alternate key."""
    return f"{entity_set.url}({filters.alternate_segment(alternate)})"


def connection_failure(results: Sequence[OperationResult]) -> CrmsyncError | None:
    """The connection-level failure that hit some of ``results``, if any: the caller
    records every other result, then raises it to end the pass."""
    for result in results:
        if result.unknown and result.error is not None:
            return result.error
    return None


def run_batch(client: ODataClient, operations: Sequence[Operation]) -> list[OperationResult]:
    """Results of ``operations`` in their order (see the module docstring)."""
    ops = list(operations)
    results: list[OperationResult | None] = [None] * len(ops)
    calls: dict[int, Call] = {}
    for i, op in enumerate(ops):
        try:
            calls[i] = op.call()
        except CrmsyncError as exc:  # a malformed key fails that record only
            results[i] = OperationResult.failed(op, exc)
    # Requests run in parallel, so two operations on one record could overtake each other;
    # when a record appears twice, requests go one after the other instead.
    ordered = len({(op.entity_set.name, str(op.key).lower()) for op in ops}) < len(ops)
    if client.settings.dialect.batch:
        _run_batched(client, ops, calls, results, ordered)
    else:
        _run_single(client, ops, calls, results, ordered)
    done = [r for r in results if r is not None]
    assert len(done) == len(ops)
    return _answered_failures_are_records(done)


def _answered_failures_are_records(results: list[OperationResult]) -> list[OperationResult]:
    """A request of its own (no $batch) that the service answered with a 5xx on every
    attempt is the failure of its record when other requests of the same call went
    through: the service is up, and that record is what it refuses."""
    if not any(r.ok for r in results):
        return results
    return [replace(r, unknown=False) if r.unknown and r.status is not None
            and r.status >= 500 and not isinstance(r.error, RemoteThrottled) else r
            for r in results]


def _run_single(client: ODataClient, ops: list[Operation], calls: dict[int, Call],
                results: list[OperationResult | None], ordered: bool) -> None:
    down: list[CrmsyncError] = []  # the first connection-level failure stops the sending

    def one(i: int) -> tuple[int, OperationResult]:
        call = calls[i]
        if down:
            return i, OperationResult.not_answered(ops[i], down[0])
        try:
            reply = client.transport.send(call.method, call.url, body=call.body,
                                          headers=call.headers, accept=call.accept)
            return i, OperationResult.written(ops[i], call.interpret(reply))
        except CONNECTION_ERRORS as exc:
            down.append(exc)
            return i, OperationResult.failed(ops[i], exc, unknown=True)
        except RemoteError as exc:
            return i, OperationResult.failed(ops[i], exc)

    for i, result in parallel(client, one, list(calls), ordered):
        results[i] = result


def _run_batched(client: ODataClient, ops: list[Operation], calls: dict[int, Call],
                 results: list[OperationResult | None], ordered: bool) -> None:
    settings = client.settings
    pending = sorted(calls)
    attempt = 0
    down: list[CrmsyncError] = []  # the first connection-level failure stops the sending

    def send(chunk: list[int]) -> list[tuple[int, Reply | None]] | CrmsyncError:
        if down:
            return down[0]
        try:
            return _send_chunk(client, chunk, calls)
        except CONNECTION_ERRORS as exc:
            down.append(exc)
            return exc

    while pending:
        attempt += 1
        chunks = [pending[i:i + settings.batch_size]
                  for i in range(0, len(pending), settings.batch_size)]
        rounds = list(zip(chunks, parallel(client, send, chunks, ordered), strict=True))
        again, pause, throttled = _take_round(client, ops, calls, results, rounds, attempt)
        if again and down:
            for i in again:
                results[i] = OperationResult.not_answered(ops[i], down[0])
            again = []
        if again:
            log.warning("batch parts to send again", extra={
                "connection": settings.name, "operations": len(again),
                "attempt": attempt, "delay": pause})
            if throttled:
                client.transport.gate.close_for(pause)
                client.transport.observer.throttled(pause)
            else:
                client.transport.sleep(pause)
        pending = again


def _take_round(client: ODataClient, ops: list[Operation], calls: dict[int, Call],
                results: list[OperationResult | None],
                rounds: list[tuple[list[int], list[tuple[int, Reply | None]] | CrmsyncError]],
                attempt: int) -> tuple[list[int], float, bool]:
    """Record the results of one round of $batch requests; returns the operations to send
    again (429, 5xx, parts skipped, while the retry policy allows), the pause before, and
    whether the service throttled."""
    again: list[int] = []
    pause, throttled = 0.0, False
    for chunk, chunk_replies in rounds:
        if isinstance(chunk_replies, CrmsyncError):
            for i in chunk:
                results[i] = OperationResult.not_answered(ops[i], chunk_replies)
            continue
        for i, reply in chunk_replies:
            outcome, retry_after = _outcome(calls[i], reply)
            if outcome in (Outcome.THROTTLED, Outcome.RETRIABLE):
                delay = client.transport.policy.delay(attempt, retry_after)
                if delay is not None:
                    again.append(i)
                    pause = max(pause, delay)
                    throttled = throttled or outcome is Outcome.THROTTLED
                    continue
            results[i] = _interpret(client, ops[i], calls[i], reply, outcome)
    return again, pause, throttled


def _outcome(call: Call, reply: Reply | None) -> tuple[Outcome, float | None]:
    """What one part's reply means; a part the service skipped (None) is retriable."""
    if reply is None:
        return Outcome.RETRIABLE, None
    retry_after = parse_retry_after(reply.headers.get("Retry-After"))
    if reply.status in call.accept:
        return Outcome.OK, retry_after
    return classify(reply.status, retry_after=retry_after), retry_after


def _interpret(client: ODataClient, op: Operation, call: Call, reply: Reply | None,
               outcome: Outcome) -> OperationResult:
    if reply is None:
        return OperationResult.failed(op, RemoteProtocolError(
            "the $batch response has no part for this operation",
            method=call.method, path=call.url))
    if outcome is not Outcome.OK:
        return OperationResult.failed(op, client.transport.error(
            reply, call.method, call.url, outcome))
    try:
        return OperationResult.written(op, call.interpret(reply))
    except RemoteError as exc:
        return OperationResult.failed(op, exc)


def _send_chunk(client: ODataClient, chunk: list[int],
                calls: dict[int, Call]) -> list[tuple[int, Reply | None]]:
    """One $batch request; a reply (None: no part came back) per operation index."""
    boundary = f"batch_{uuid.uuid4().hex}"
    numbered = [(str(n), calls[i]) for n, i in enumerate(chunk, start=1)]
    url = f"{client.base_url}/$batch"
    try:
        envelope = client.transport.send("POST", url,
                                         body=encode_batch(numbered, boundary, client.base_url),
                                         headers={
            "Content-Type": f"multipart/mixed; boundary={boundary}",
            "Accept": "multipart/mixed",
            "Prefer": "odata.continue-on-error",
        })
    except CONNECTION_ERRORS:
        raise
    except RemoteError as exc:  # the service refused the whole batch: every part shares it
        reply = Reply(exc.status or 400, CaseInsensitiveDict(),
                      _error_body(exc))
        return [(i, reply) for i in chunk]
    parts = decode_batch(envelope.headers.get("Content-Type", ""), envelope.body)
    return list(zip(chunk, match_parts(len(chunk), parts), strict=True))


def _error_body(exc: RemoteError) -> bytes:
    return json.dumps({"error": {"code": exc.code or "", "message": exc.message}}).encode()


_pool_thread = threading.local()  # set while a thread runs an item of ``parallel``


def parallel(client: ODataClient, fn: Callable[[T], R], items: list[T],
              sequential: bool = False) -> Iterator[R]:
    """``map(fn, items)`` on the client's threads (at most its concurrency at a time),
    results in order; the first exception propagates once every item has finished. Called
    from one of those threads (a refused bulk request falling back to $batch), the items
    run on that thread: waiting on the pool from inside it could wait forever once its
    own requests fill it."""
    if sequential or len(items) <= 1 or client.settings.concurrency <= 1 \
            or getattr(_pool_thread, "busy", False):
        yield from map(fn, items)
        return

    def run(item: T) -> R:
        _pool_thread.busy = True
        try:
            return fn(item)
        finally:
            _pool_thread.busy = False

    futures = [client.executor().submit(run, item) for item in items]
    wait(futures)
    for future in futures:
        yield future.result()


# ---------------------------------------------------------------------------- wire format

def encode_batch(calls: Sequence[tuple[str, Call]], boundary: str,
                 service_root: str | None = None) -> bytes:
    """The multipart/mixed body of a $batch: one ``application/http`` part per call, each
    with its Content-ID, request URL (relative to ``service_root`` when it is under it),
    headers and body."""
    out = bytearray()
    for content_id, call in calls:
        target = relative_url(call.url, service_root)
        head = [
            f"--{boundary}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {content_id}",
            "",
            f"{call.method} {target} HTTP/1.1",
            *(f"{name}: {value}" for name, value in call.headers.items()),
            "",
            "",
        ]
        out += "\r\n".join(head).encode("utf-8")
        if call.body:
            out += call.body
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def relative_url(url: str, service_root: str | None) -> str:
    """``url`` relative to the service root (``accounts(…)?…``) when it lies under it."""
    if service_root:
        root = service_root.rstrip("/") + "/"
        if url.startswith(root):
            return url[len(root):]
    return url


@dataclass(frozen=True)
class Part:
    """One response of a $batch response: its Content-ID (when echoed) and its reply."""

    content_id: str | None
    reply: Reply


def decode_batch(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/mixed $batch response, change sets flattened."""
    boundary = _boundary(content_type)
    parts: list[Part] = []
    for raw in _split(body, boundary):
        headers, payload = _split_head(raw, _mime_headers)
        inner_type = dict.get(headers, "content-type", "")  # names are kept lower-case
        if inner_type.lower().startswith("multipart/mixed"):
            parts.extend(decode_batch(inner_type, payload))
            continue
        parts.append(_http_part(headers, payload))
    return parts


def match_parts(count: int, parts: list[Part]) -> list[Reply | None]:
    """Replies for request parts 1..count: by Content-ID when every part has one of
    ours, else by position. Missing ones are None."""
    ids = [p.content_id for p in parts]
    wanted = {str(n) for n in range(1, count + 1)}
    if parts and all(i in wanted for i in ids) and len(set(ids)) == len(ids):
        by_id = {p.content_id: p.reply for p in parts}
        return [by_id.get(str(n)) for n in range(1, count + 1)]
    if len(parts) > count:
        raise RemoteProtocolError(
            f"the $batch response has {len(parts)} parts for {count} requests")
    replies: list[Reply | None] = [p.reply for p in parts]
    return replies + [None] * (count - len(parts))


def _boundary(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value:
            return value.strip().strip('"')
    raise RemoteProtocolError(f"the $batch response is not multipart ({content_type!r})")


def _split(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode()
    segments = body.split(delimiter)
    if len(segments) < 2:
        raise RemoteProtocolError("the $batch response has no parts")
    parts = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):  # the close delimiter
            break
        segment = segment.split(b"\n", 1)[1] if b"\n" in segment else b""
        if segment.endswith(b"\r\n"):
            segment = segment[:-2]
        elif segment.endswith(b"\n"):
            segment = segment[:-1]
        parts.append(segment)
    return parts


class PartHeaders(dict[str, str]):
    """The headers of a $batch part, looked up in any case (names kept lower-case): a
    plain dict, as a batch response holds hundreds of parts and each part two heads."""

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


def _split_head(raw: bytes, read: Callable[[bytes], PartHeaders] | None = None
                ) -> tuple[PartHeaders, bytes]:
    """Headers and body of a MIME part or an HTTP message (CRLF or LF line ends), the
    headers read by ``read`` (default :func:`_headers`)."""
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n", 0, crlf if crlf >= 0 else len(raw))
    if crlf >= 0 and lf < 0:
        head, body = raw[:crlf], raw[crlf + 4:]
    elif lf >= 0:
        head, body = raw[:lf], raw[lf + 2:]
    else:
        head, body = raw, b""
    return (read or _headers)(head), body


@functools.lru_cache(maxsize=4096)
def _mime_headers(head: bytes) -> PartHeaders:
    """The headers of a part's MIME head, read once per distinct head: every part of a
    response has the same two lines and its Content-ID, the same in every response. Only
    the batch decoding looks at them, and never changes them."""
    return _headers(head)


def _headers(head: bytes) -> PartHeaders:
    headers = PartHeaders()
    for line in head.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _http_part(mime: PartHeaders, payload: bytes) -> Part:
    line, _, rest = payload.lstrip(b"\r\n").partition(b"\n")
    fields = line.decode("latin-1").split()
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise RemoteProtocolError("a $batch response part has no HTTP status line")
    headers: PartHeaders
    if rest.startswith(b"\r\n"):  # no headers
        headers, body = PartHeaders(), rest[2:]
    elif rest.startswith(b"\n"):
        headers, body = PartHeaders(), rest[1:]
    else:
        headers, body = _split_head(rest)
    content_id = dict.get(mime, "content-id") or dict.get(headers, "content-id")
    return Part(content_id, Reply(int(fields[1]), headers, body))
