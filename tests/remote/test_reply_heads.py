"""A reply's head read as headers only (worker.remote.connections) gives what
http.client's own reading gives: the same headers, in order, and the same defects of the
head; only the defects of a multipart body (which a head never has) are not looked for."""

from __future__ import annotations

import http.client
import io
from email.errors import (
    CloseBoundaryNotFoundDefect,
    MultipartInvariantViolationDefect,
    NoBoundaryInMultipartDefect,
    StartBoundaryNotFoundDefect,
)

import pytest

from tests.support.hostile import Handler, Seen, client_of, hostile
from worker.remote import connections
from worker.remote.batch import Operation

HEADS = [
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=batchresponse_1\r\nOData-Version: 4.0\r\n\r\n",
    b'Content-Type: multipart/mixed; boundary="b"\r\nX-A: 1\r\nX-A: 2\r\n\r\n',
    b"Content-Type: multipart/mixed; boundary=b\r\nnot a header\r\n--b\r\nX-B: 1\r\n\r\n",
    b"Content-Type: message/rfc822\r\nX-Folded: one\r\n two\r\n\r\n",
    b"Content-Type: text/plain\r\nX-Latin: caf\xe9\r\n : no name\r\n\r\n",
    b"Content-Type: multipart/mixed\r\n\r\n",
    b"\r\n",
]
# What the parts of a multipart body can lack: an empty body lacks them all.
BODY_DEFECTS = (StartBoundaryNotFoundDefect, MultipartInvariantViolationDefect,
                NoBoundaryInMultipartDefect, CloseBoundaryNotFoundDefect)


def _defects(message: http.client.HTTPMessage) -> list[str]:
    return [type(d).__name__ for d in message.defects if not isinstance(d, BODY_DEFECTS)]


@pytest.mark.parametrize("head", HEADS)
def test_a_head_read_as_headers_only_has_the_same_headers(head: bytes) -> None:
    ours = connections.parse_headers(io.BytesIO(head))
    theirs = http.client.parse_headers(io.BytesIO(head))
    assert ours.items() == theirs.items()
    assert _defects(ours) == _defects(theirs)


def test_the_client_s_connections_read_heads_as_headers_only() -> None:
    assert connections.HeadersOnlyResponse.begin is not http.client.HTTPResponse.begin
    assert connections.Connection.response_class is connections.HeadersOnlyResponse
    assert connections.SecureConnection.response_class is connections.HeadersOnlyResponse


def test_a_batch_reply_s_head_is_read_whole() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        body = (b"--b_1\r\nContent-Type: application/http\r\n\r\n"
                b"HTTP/1.1 204 No Content\r\nETag: W/\"7\"\r\n\r\n\r\n--b_1--\r\n")
        handler.raw(200, body, {"Content-Type": "multipart/mixed; boundary=b_1",
                                "X-Extra": "kept"})

    with hostile(respond) as crm, client_of(crm, return_representation="false") as client:
        accounts = client.entity_set("accounts", "accountid")
        [result] = client.batch([Operation("update", accounts,
                                           "00000000-0000-0000-0000-00000000000a",
                                           {"name": "a"})])
    assert result.ok and result.etag == 'W/"7"'
