"""``$batch``: multipart/mixed requests with atomic change sets, as Dataverse runs them.

Parts run in order. A change set runs under the store's ``atomic()`` block: when one of its
requests fails, every write of the change set is undone and the failing response is the change
set's only answer. Without ``Prefer: odata.continue-on-error`` the batch stops at the first
failure; with it every part gets its own answer. ``Content-ID`` values name created records:
a later request may use ``$1`` as (the start of) its URL or as an ``@odata.bind`` value.

Part URLs may be relative to the service root (``accounts(…)``), absolute paths
(``/api/data/v9.2/accounts``) or absolute URLs; a server that takes relative ones only
(``absolute_urls=False``, the generic OData profile) answers the others with a 404 part."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from worker.emulator import errors, jsoncodec
from worker.emulator.paths import SERVICE_PATH
from worker.emulator.protocol import Request, Response, error_response
from worker.emulator.store import Store
from worker.emulator.values import BIND_SUFFIX

MAX_REQUESTS = 1000
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)

Dispatch = Callable[[Request], Response]


@dataclass
class _Part:
    headers: dict[str, str]
    content: bytes


class _ChangeSetFailed(Exception):
    def __init__(self, response: Response, content_id: str | None) -> None:
        super().__init__(response.status)
        self.response = response
        self.content_id = content_id


class BatchRunner:
    """Runs one ``$batch`` request through ``dispatch`` (the data API without auth/faults)."""

    def __init__(self, store: Store, dispatch: Dispatch, *, absolute_urls: bool = True) -> None:
        self.store = store
        self.dispatch = dispatch
        self.absolute_urls = absolute_urls

    def run(self, request: Request) -> Response:
        boundary = _boundary(request.headers.get("content-type", ""))
        parts = _split(request.body, boundary)
        total = sum(len(_split(p.content, _boundary(p.headers.get("content-type", ""))))
                    if _is_multipart(p) else 1 for p in parts)
        if total > MAX_REQUESTS:
            raise errors.bad_query(f"The batch has {total} requests; at most {MAX_REQUESTS}.")
        keep_going = "odata.continue-on-error" in request.preferences()
        references: dict[str, str] = {}
        out_boundary = f"batchresponse_{uuid.uuid4()}"
        chunks: list[bytes] = []
        for part in parts:
            if _is_multipart(part):
                body, failed = self._change_set(request, part, references)
            else:
                response = self._one(request, part, references)
                body, failed = _http_part(response, None), response.status >= 400
            chunks.append(body)
            if failed and not keep_going:
                break
        headers = [("Content-Type", f"multipart/mixed; boundary={out_boundary}"),
                   ("OData-Version", "4.0")]
        if keep_going:
            headers.append(("Preference-Applied", "odata.continue-on-error"))
        return Response(200, headers, _join(chunks, out_boundary))

    def _change_set(self, batch: Request, part: _Part,
                    references: dict[str, str]) -> tuple[bytes, bool]:
        inner = _split(part.content, _boundary(part.headers.get("content-type", "")))
        boundary = f"changesetresponse_{uuid.uuid4()}"
        answers: list[bytes] = []
        try:
            with self.store.atomic():
                for item in inner:
                    content_id = item.headers.get("content-id")
                    response = self._one(batch, item, references)
                    if response.status >= 400:
                        raise _ChangeSetFailed(response, content_id)
                    answers.append(_http_part(response, content_id))
        except _ChangeSetFailed as failure:
            return _http_part(failure.response, failure.content_id), True
        multipart = _join(answers, boundary)
        head = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
        return head + multipart, False

    def _one(self, batch: Request, part: _Part, references: dict[str, str]) -> Response:
        try:
            request = _inner_request(batch, part.content, references, self.absolute_urls)
        except errors.ODataError as exc:
            return error_response(exc)
        if request.path.rstrip("/").endswith("/$batch"):
            return error_response(errors.bad_query("A $batch cannot contain a $batch."))
        response = self.dispatch(request)
        content_id = part.headers.get("content-id")
        entity_id = dict(response.headers).get("OData-EntityId")
        if content_id and entity_id:
            # Kept relative to the service root, which every server takes.
            references[content_id] = entity_id.removeprefix(batch.service_root + "/")
        return response


def _inner_request(batch: Request, content: bytes, references: dict[str, str],
                   absolute_urls: bool) -> Request:
    head, _, body = _partition(content)
    lines = head.decode("utf-8", "replace").splitlines()
    try:
        method, target, _version = lines[0].split(" ", 2)
    except (IndexError, ValueError) as exc:
        raise errors.bad_query("A batch part does not start with an HTTP request line.") from exc
    headers = _headers(lines[1:])
    target = _resolve_reference(target, references)
    try:
        url = urlsplit(target)
    except ValueError as exc:
        raise errors.bad_query(f"A batch part's URL does not parse: {exc}") from exc
    if not absolute_urls and (url.scheme or url.netloc or url.path.startswith("/")):
        raise errors.ODataError(404, errors.RESOURCE_NOT_FOUND,
                                f"Invalid resource path '{target[:200]}': a batch part must "
                                "address its resource relative to the service root.")
    path = url.path if url.path.startswith("/") else f"{SERVICE_PATH}/{url.path}"
    if body.strip() and references and "json" in headers.get("content-type", "json"):
        body = _bind_references(body, references)
    return Request(method.upper(), path, dict(parse_qsl(url.query, keep_blank_values=True)),
                   headers, body.strip(), batch.root)


def _resolve_reference(target: str, references: dict[str, str]) -> str:
    if target.startswith("$"):
        name, _, rest = target[1:].partition("/")
        if name not in references:
            raise errors.bad_query(f"Content-ID reference '${name}' names no earlier request.")
        return references[name] + (f"/{rest}" if rest else "")
    return target


def _bind_references(body: bytes, references: dict[str, str]) -> bytes:
    try:
        doc = jsoncodec.loads(body)
    except ValueError:
        return body  # the data API reports the malformed body itself
    if not isinstance(doc, dict):
        return body
    for name, value in doc.items():
        if name.endswith(BIND_SUFFIX) and isinstance(value, str) and value.startswith("$"):
            doc[name] = references.get(value[1:], value)
    return jsoncodec.dumps(doc).encode()


def _boundary(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or match is None:
        raise errors.bad_query("A $batch needs Content-Type: multipart/mixed; boundary=...")
    return match.group(1)


def _is_multipart(part: _Part) -> bool:
    return part.headers.get("content-type", "").lower().startswith("multipart/mixed")


def _split(body: bytes, boundary: str) -> list[_Part]:
    """The parts between ``--boundary`` lines (CRLF or bare LF line ends both accepted)."""
    delimiter = b"--" + boundary.encode()
    parts: list[_Part] = []
    for segment in body.split(delimiter)[1:]:
        if segment.startswith(b"--"):
            break
        segment = segment.split(b"\n", 1)[1] if b"\n" in segment else b""
        segment = segment.removesuffix(b"\n").removesuffix(b"\r")
        head, _, content = _partition(segment)
        parts.append(_Part(_headers(head.decode("utf-8", "replace").splitlines()), content))
    return parts


def _partition(data: bytes) -> tuple[bytes, bytes, bytes]:
    match = _BLANK_LINE.search(data)
    if match is None:
        return data, b"", b""
    return data[: match.start()], match.group(), data[match.end():]


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _http_part(response: Response, content_id: str | None) -> bytes:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        head.append(f"Content-ID: {content_id}")
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    text = "\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    return text.encode() + response.body


def _join(chunks: list[bytes], boundary: str) -> bytes:
    delimiter = f"--{boundary}\r\n".encode()
    closing = f"--{boundary}--\r\n".encode()
    return b"".join(delimiter + chunk + b"\r\n" for chunk in chunks) + closing

