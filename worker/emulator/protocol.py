"""The transport-free request and response the emulator's handlers work on.

The HTTP server and the ``$batch`` reader both build a ``Request`` and send back a
``Response``; nothing below them knows about sockets."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlencode

from worker.emulator import jsoncodec
from worker.emulator.errors import PAYLOAD_ERROR, ODataError
from worker.emulator.paths import SERVICE_PATH

JSON_TYPE = "application/json; odata.metadata=minimal"
# One preference of a Prefer header: a name, maybe "=value", the value maybe quoted (and
# then possibly holding commas, as odata.include-annotations="a,b" does).
_PREFERENCE = re.compile(r'([\w.-]+)\s*(?:=\s*("[^"]*"|[^,;]*))?')
ODATA_HEADERS = (("OData-Version", "4.0"),)


@dataclass
class Request:
    """One Web API request. ``headers`` has lower-case names; ``query`` the decoded
    parameters; ``root`` is ``http://host:port`` as the client addressed the server."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    root: str

    @property
    def service_root(self) -> str:
        return self.root + SERVICE_PATH

    def json(self) -> Any:
        """The body as JSON (numbers with a fraction as ``Decimal``); 400 when it is not."""
        try:
            return jsoncodec.loads(self.body or b"null")
        except ValueError as exc:
            raise ODataError(400, PAYLOAD_ERROR, f"The request body is not JSON: {exc}") from exc

    def preferences(self) -> dict[str, str]:
        """The ``Prefer`` header as name -> value ("" for flags)."""
        return {name.lower(): value.strip().strip('"')
                for name, value in _PREFERENCE.findall(self.headers.get("prefer", ""))}


@dataclass
class Response:
    """A status, headers and an already-encoded body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""


def collection_url(request: Request, set_name: str,
                   params: Iterable[tuple[str, str]]) -> str:
    """The full URL of a collection with these query parameters, encoded as Dataverse
    encodes its next and delta links (``$``, ``,``, ``(``, ``)`` and ``'`` left as they are)."""
    return (f"{request.service_root}/{set_name}?"
            + urlencode(list(params), quote_via=quote, safe="$,()'"))


def json_response(status: int, doc: Any, headers: list[tuple[str, str]] | None = None,
                  content_type: str = JSON_TYPE) -> Response:
    body = jsoncodec.dumps(doc).encode()
    return Response(status, [("Content-Type", content_type), *ODATA_HEADERS,
                             *(headers or [])], body)


def error_response(error: ODataError) -> Response:
    return json_response(error.status, error.body(), list(error.headers.items()))


def empty_response(status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [*ODATA_HEADERS, *(headers or [])])
