"""The $batch wire format: encoding requests, decoding responses (CRLF or LF, change sets,
with or without Content-ID) and matching parts back to operations."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import requests

from worker.remote.batch import (
    Operation,
    OperationResult,
    Part,
    decode_batch,
    encode_batch,
    match_parts,
)
from worker.remote.client import Call, ODataClient, WriteResult
from worker.remote.config import ConnectionSettings
from worker.remote.errors import RemoteProtocolError, RemoteUnavailable
from worker.remote.transport import Reply, Transport

from .stubs import ScriptedSession, response


def _call(method: str, url: str, body: bytes | None = None) -> Call:
    def interpret(reply: Reply) -> WriteResult:
        return WriteResult(key="k", status=reply.status)

    headers = {"Content-Type": "application/json"} if body else {}
    return Call(method, url, headers, body, frozenset(), interpret)


def test_encode() -> None:
    body = encode_batch([("1", _call("PATCH", "http://h/api/accounts(1)", b'{"a":1}')),
                         ("2", _call("DELETE", "http://h/api/accounts(2)"))], "b1")
    assert body == (
        b"--b1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        b"Content-ID: 1\r\n\r\nPATCH http://h/api/accounts(1) HTTP/1.1\r\n"
        b"Content-Type: application/json\r\n\r\n"
        b'{"a":1}\r\n'
        b"--b1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        b"Content-ID: 2\r\n\r\nDELETE http://h/api/accounts(2) HTTP/1.1\r\n\r\n\r\n"
        b"--b1--\r\n")


RESPONSE = (
    b"--batchresponse_x\r\n"
    b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nETag: W/\"7\"\r\n\r\n"
    b'{"accountid":"a","@odata.etag":"W/\\"7\\""}\r\n'
    b"--batchresponse_x\r\n"
    b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n\r\n"
    b"--batchresponse_x\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_y\r\n\r\n"
    b"--changesetresponse_y\r\n"
    b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 3\r\n\r\n"
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n"
    b'{"error":{"code":"0x80044331","message":"bad"}}\r\n'
    b"--changesetresponse_y--\r\n"
    b"\r\n--batchresponse_x--\r\n"
)


def test_decode_with_change_sets() -> None:
    parts = decode_batch("multipart/mixed; boundary=batchresponse_x", RESPONSE)
    assert [(p.content_id, p.reply.status) for p in parts] == [
        (None, 201), (None, 204), ("3", 400)]
    assert parts[0].reply.headers["etag"] == 'W/"7"'
    assert parts[0].reply.body == b'{"accountid":"a","@odata.etag":"W/\\"7\\""}'
    assert parts[1].reply.body == b""
    assert b"0x80044331" in parts[2].reply.body


def test_decode_bare_lf_and_quoted_boundary() -> None:
    parts = decode_batch('multipart/mixed; boundary="b"', RESPONSE.replace(
        b"\r\n", b"\n").replace(b"batchresponse_x", b"b"))
    assert [p.reply.status for p in parts] == [201, 204, 400]


def test_decode_refuses_non_multipart() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_batch("application/json", b"{}")
    with pytest.raises(RemoteProtocolError):
        decode_batch("multipart/mixed; boundary=b",
                     b"--b\r\nContent-Type: application/http\r\n\r\nnonsense\r\n--b--")


def _reply(status: int) -> Reply:
    return Reply(status)


def test_match_by_content_id_in_any_order() -> None:
    parts = [Part("2", _reply(204)), Part("1", _reply(201))]
    assert [r.status if r else None for r in match_parts(2, parts)] == [201, 204]


def test_match_by_position_and_missing_tail() -> None:
    parts = [Part(None, _reply(201)), Part(None, _reply(400))]
    assert [r.status if r else None for r in match_parts(3, parts)] == [201, 400, None]
    with pytest.raises(RemoteProtocolError):
        match_parts(1, parts)


def _multipart(*parts: tuple[int, bytes, str]) -> requests.Response:
    chunks = b"".join(
        b"--r\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        + f"HTTP/1.1 {status} X\r\n{headers}\r\n".encode() + body + b"\r\n"
        for status, body, headers in parts)
    return response(200, chunks + b"--r--\r\n",
                    {"Content-Type": "multipart/mixed; boundary=r"})


def test_parts_answered_with_retriable_statuses_are_sent_again() -> None:
    ok = b'{"accountid":"x","@odata.etag":"W/\\"1\\""}'
    json_type = "Content-Type: application/json\r\n"
    session = ScriptedSession(
        _multipart((201, ok, json_type), (503, b"", ""), (429, b"", "Retry-After: 0\r\n")),
        _multipart((201, ok, json_type), (201, ok, json_type)),
    )
    settings = ConnectionSettings(name="crm", url="http://127.0.0.1:9/api", retry_base=0.0)
    client = ODataClient(settings, transport=Transport(settings, session=session,
                                                       sleep=lambda s: None))
    accounts = client.entity_set("accounts", "accountid")
    keys = [str(uuid.uuid4()) for _ in range(3)]
    results = client.batch([Operation("create", accounts, k, {"name": "n"}, ref=n)
                            for n, k in enumerate(keys)])
    assert [(r.ref, r.ok, r.status, r.etag) for r in results] == [
        (0, True, 201, 'W/"1"'), (1, True, 201, 'W/"1"'), (2, True, 201, 'W/"1"')]
    second = session.sent[1]["data"]
    assert keys[0].encode() not in second  # only the two refused parts went again
    assert keys[1].encode() in second and keys[2].encode() in second


def test_parts_still_failing_when_retries_run_out() -> None:
    body = b'{"error":{"code":"0x8005F103","message":"busy"}}'
    session = ScriptedSession(_multipart((503, body, "Content-Type: application/json\r\n")))
    settings = ConnectionSettings(name="crm", url="http://127.0.0.1:9/api", max_retries=0)
    client = ODataClient(settings, transport=Transport(settings, session=session))
    accounts = client.entity_set("accounts", "accountid")
    [result] = client.batch([Operation("delete", accounts, str(uuid.uuid4()), ref="d")])
    assert not result.ok and isinstance(result.error, RemoteUnavailable)
    assert result.error.code == "0x8005F103" and result.status == 503


def test_a_written_result_carries_the_write_and_the_operation_as_the_constructor_would(
) -> None:
    op = Operation("create", None, "k1", ref=("coupling", 7))  # type: ignore[arg-type]
    write = WriteResult(key="k1", status=201, etag='W/"7"', record={"a": 1},
                        already_existed=True)
    result = OperationResult.written(op, write)
    assert result == OperationResult(ref=("coupling", 7), key="k1", ok=True, status=201,
                                     etag='W/"7"', record={"a": 1}, already_existed=True)
    assert (result.error, result.unknown, result.already_gone, result.modified_on) == (
        None, False, False, None)
    assert not result.transient


def test_a_versioned_result_changes_key_and_version_only() -> None:
    op = Operation("upsert", None, "accountnumber='C1'", ref=3)  # type: ignore[arg-type]
    result = OperationResult.written(op, WriteResult(key=op.key, status=204,
                                                     already_existed=True))
    stamp = datetime(2026, 1, 2, tzinfo=UTC)
    assert result.versioned("a1", 'W/"9"', stamp) == replace(
        result, key="a1", etag='W/"9"', modified_on=stamp)
    assert result.key == "accountnumber='C1'" and result.etag is None
