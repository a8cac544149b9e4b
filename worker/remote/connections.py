"""The HTTP connections of the client's pools: urllib3's, with a reply's head read as
headers only.

http.client reads a reply's head with the email parser as a whole message, body
included; for a ``multipart/mixed`` head (every ``$batch`` reply) it goes on to look for
parts in the empty body, compiling a regular expression for the reply's boundary, which
is new in every reply. That is a fifth of the CPU urllib3 spends on a $batch request, and
each pattern takes a place in the ``re`` module's cache, pushing out the patterns other
code compiles there. Read as headers only, the head gives the same headers (names,
values, order, defects of the head); only the empty body is no longer searched for parts
(so urllib3 no longer logs "Failed to parse headers" for a multipart head that names no
boundary: the $batch decoding refuses such a reply as before).
"""

from __future__ import annotations

import email.parser
import http.client
import types
from typing import Any, BinaryIO

from urllib3.connection import HTTPConnection, HTTPSConnection


def parse_headers(fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
                  ) -> http.client.HTTPMessage:
    """``http.client.parse_headers``, the head parsed as headers only."""
    headers = http.client._read_headers(fp)  # type: ignore[attr-defined]
    text = b"".join(headers).decode("iso-8859-1")
    return email.parser.Parser(_class=_class).parsestr(text, headersonly=True)  # type: ignore[return-value]


def _begin() -> Any:
    """``HTTPResponse.begin`` calling :func:`parse_headers`: the same code, run with
    http.client's globals but that one (the code is not copied, so it stays the running
    Python's). None when this Python's ``begin`` does not read the head that way."""
    begin = http.client.HTTPResponse.begin
    code = getattr(begin, "__code__", None)
    if code is None or "parse_headers" not in code.co_names or begin.__closure__:
        return None
    namespace = dict(vars(http.client), parse_headers=parse_headers)
    return types.FunctionType(code, namespace, begin.__name__, begin.__defaults__)


class HeadersOnlyResponse(http.client.HTTPResponse):
    """An http.client reply whose head is read by :func:`parse_headers`."""


_BEGIN = _begin()
if _BEGIN is not None:
    HeadersOnlyResponse.begin = _BEGIN  # type: ignore[method-assign]


class Connection(HTTPConnection):
    response_class = HeadersOnlyResponse


class SecureConnection(HTTPSConnection):
    response_class = HeadersOnlyResponse
