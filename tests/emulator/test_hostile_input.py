"""Requests the emulator cannot parse are a 4xx with an OData error body, never a 500 or a
dropped connection; long valid ``and``/``or`` chains and runs of ``not`` work."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import requests

from tests.emulator.helpers import batch, create
from worker.emulator import EmulatorServer
from worker.emulator.values import Changes


def assert_odata_error(response: requests.Response, *statuses: int) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if statuses:
        assert response.status_code in statuses, response.text[:300]
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    assert len(error["message"]) < 1000  # a readable line, not the request echoed back
    return error


NESTED = {
    "array": b"[" * 100_000 + b"]" * 100_000,
    "object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "property value": b'{"name": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
}


@pytest.mark.parametrize("body", NESTED.values(), ids=NESTED.keys())
@pytest.mark.parametrize("target", ["accounts", "$batch-part", "_admin/faults"])
def test_deeply_nested_json_is_a_400(emulator: EmulatorServer,
                                     emulator_session: requests.Session,
                                     body: bytes, target: str) -> None:
    if target == "$batch-part":
        part = (b"Content-Type: application/http\r\n\r\nPOST accounts HTTP/1.1\r\n"
                b"Content-Type: application/json\r\n\r\n") + body + b"\r\n"
        content_type, whole = batch([[part.decode()]])
        response = emulator_session.post(f"{emulator.base_url}/$batch", data=whole,
                                         headers={"Content-Type": content_type})
        assert response.status_code == 200 and "HTTP/1.1 400" in response.text
        return
    url = (f"{emulator.admin_url}/faults" if target.startswith("_admin")
           else f"{emulator.base_url}/{target}")
    response = emulator_session.post(url, data=body,
                                     headers={"Content-Type": "application/json"})
    assert_odata_error(response, 400)
    assert emulator.store.count("accounts") == 0


BAD_FILTERS = {
    "5000 nested parentheses": "(" * 5000 + "name eq 'a'" + ")" * 5000,
    "nested function calls": "contains(" * 3000 + "name,'a'" + ")" * 3000,
    "unbalanced": "((name eq 'a')",
    "dangling and": "name eq 'a' and",
    "no operand": "name eq",
    "5000-digit number": "statecode eq " + "9" * 5000,
    "huge exponent": "creditlimit gt 1e999999999",
    "date-time beyond year 9999 in UTC": "modifiedon gt 9999-12-31T23:59:59-01:00",
    "impossible date": "modifiedon gt 2026-02-30",
    "number against text": "name eq 1",
    "unknown property": "nosuchcolumn eq 1",
    "one-argument function": "contains(name)",
    "control character": "name eq \x00",
    "not of a string": "not name",
}


@pytest.mark.parametrize("text", BAD_FILTERS.values(), ids=BAD_FILTERS.keys())
def test_a_filter_that_does_not_parse_is_a_400(emulator: EmulatorServer,
                                               emulator_session: requests.Session,
                                               text: str) -> None:
    response = emulator_session.get(f"{emulator.base_url}/accounts", params={"$filter": text})
    error = assert_odata_error(response, 400)
    assert error["message"].startswith("Syntax error")


def seed(emulator: EmulatorServer) -> None:
    for n, city in enumerate(("Berlin", "Hamburg", "Munich")):
        emulator.store.create("accounts", Changes(values={
            "name": f"A{n}", "address1_city": city, "numberofemployees": n}))


def names(session: requests.Session, url: str, condition: str) -> list[str]:
    response = session.get(url, params={"$filter": condition, "$select": "name",
                                        "$orderby": "name"})
    assert response.status_code == 200, response.text[:300]
    return [r["name"] for r in response.json()["value"]]


def test_a_1500_term_and_chain_works(emulator: EmulatorServer,
                                     emulator_session: requests.Session) -> None:
    seed(emulator)
    chain = " and ".join(f"numberofemployees ne {1000 + n}" for n in range(1500))
    assert names(emulator_session, f"{emulator.base_url}/accounts", chain) == ["A0", "A1", "A2"]
    chain += " and address1_city ne 'Hamburg'"
    assert names(emulator_session, f"{emulator.base_url}/accounts", chain) == ["A0", "A2"]


def test_a_5000_term_or_chain_works_in_a_batch(emulator: EmulatorServer,
                                               emulator_session: requests.Session) -> None:
    """5,000 terms are longer than a URL may be, so the read goes in a $batch part."""
    seed(emulator)
    chain = " or ".join(f"numberofemployees eq {1000 + n}" for n in range(4999))
    chain += " or address1_city eq 'Munich'"
    query = requests.Request("GET", f"{emulator.base_url}/accounts",
                             params={"$filter": chain, "$select": "name"}).prepare().url
    assert query is not None
    relative = query.removeprefix(emulator.base_url + "/")
    content_type, body = batch([f"Content-Type: application/http\r\n\r\n"
                                f"GET {relative} HTTP/1.1\r\n\r\n"])
    response = emulator_session.post(f"{emulator.base_url}/$batch", data=body,
                                     headers={"Content-Type": content_type})
    assert "HTTP/1.1 200" in response.text
    doc = json.loads(response.text[response.text.index('{"@odata.context"'):].split("\r\n")[0])
    assert [r["name"] for r in doc["value"]] == ["A2"]


@pytest.mark.parametrize("count", [1, 2, 5000, 5001])
def test_a_run_of_nots_works(emulator: EmulatorServer, emulator_session: requests.Session,
                             count: int) -> None:
    seed(emulator)
    condition = "not " * count + "(address1_city eq 'Berlin')"
    expected = ["A1", "A2"] if count % 2 else ["A0"]
    assert names(emulator_session, f"{emulator.base_url}/accounts", condition) == expected


def test_parentheses_a_hundred_deep_still_work(emulator: EmulatorServer,
                                               emulator_session: requests.Session) -> None:
    seed(emulator)
    condition = "(" * 100 + "address1_city eq 'Munich'" + ")" * 100
    assert names(emulator_session, f"{emulator.base_url}/accounts", condition) == ["A2"]


BAD_OPTIONS = {
    "$top negative": {"$top": "-1"},
    "$top superscript digit": {"$top": "²"},
    "$top huge": {"$top": "9" * 100},
    "$count not a boolean": {"$count": "maybe"},
    "$orderby direction": {"$orderby": "name sideways"},
    "$orderby unknown": {"$orderby": "nosuchcolumn"},
    "$select unknown": {"$select": "name,nosuchcolumn"},
    "$skiptoken garbage": {"$skiptoken": "!!!"},
    "$skiptoken nested JSON": {"$skiptoken": "W1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW10"},
    "$skiptoken wrong types": {"$skiptoken": "eyJ2IjpbW11dLCJmIjoxfQ"},
    "$deltatoken garbage": {"$deltatoken": "9" * 5000 + "!01/01/2020 00:00:00"},
    "$expand": {"$expand": "primarycontactid"},
    "unknown system option": {"$foo": "1"},
}


@pytest.mark.parametrize("params", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_a_bad_query_option_is_a_400(emulator: EmulatorServer,
                                     emulator_session: requests.Session,
                                     params: dict[str, str]) -> None:
    response = emulator_session.get(f"{emulator.base_url}/accounts", params=params)
    assert_odata_error(response, 400)


@pytest.mark.parametrize("size", ["²", "-1", "0", "abc", "9" * 50])
def test_a_bad_page_size_preference_is_a_400(emulator: EmulatorServer,
                                             emulator_session: requests.Session,
                                             size: str) -> None:
    response = emulator_session.get(f"{emulator.base_url}/accounts",
                                    headers={"Prefer": f"odata.maxpagesize={size}"})
    assert_odata_error(response, 400)


BAD_KEYS = ["accounts(", "accounts()", "accounts(1)", "accounts('x')", "accounts(x=1)",
            "accounts(accountnumber=)", "accounts(accountid=1)",
            "accounts(" + "(" * 3000 + ")" * 3000 + ")",
            "accounts(00000000-0000-0000-0000-00000000000g)", "accounts(%ZZ)",
            "accounts(accountnumber='a',name='b')"]


@pytest.mark.parametrize("path", BAD_KEYS)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_a_bad_key_is_a_4xx(emulator: EmulatorServer, emulator_session: requests.Session,
                            path: str, method: str) -> None:
    response = emulator_session.request(method, f"{emulator.base_url}/{path}", json={})
    assert_odata_error(response, 400, 404)
    assert emulator.store.count("accounts") == 0


BAD_BATCHES = {
    "no boundary": ("multipart/mixed", b"x"),
    "not multipart": ("text/plain", b"x"),
    "empty part": ("multipart/mixed; boundary=b", b"--b\r\n\r\n--b--"),
    "no request line": ("multipart/mixed; boundary=b",
                        b"--b\r\nContent-Type: application/http\r\n\r\nGET\r\n\r\n--b--"),
    "bad URL": ("multipart/mixed; boundary=b", b"--b\r\nContent-Type: application/http\r\n\r\n"
                                               b"GET http://[::1 HTTP/1.1\r\n\r\n--b--"),
    "unknown Content-ID": ("multipart/mixed; boundary=b", b"--b\r\nContent-Type: "
                           b"application/http\r\n\r\nGET $9 HTTP/1.1\r\n\r\n--b--"),
    "change set without boundary": ("multipart/mixed; boundary=b",
                                    b"--b\r\nContent-Type: multipart/mixed\r\n\r\n--b--"),
    "change set in a change set": (
        "multipart/mixed; boundary=b",
        b"--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: "
        b"multipart/mixed; boundary=d\r\n\r\n--d\r\n\r\nGET accounts HTTP/1.1\r\n\r\n--d--\r\n"
        b"--c--\r\n--b--"),
    "outside the service": ("multipart/mixed; boundary=b", b"--b\r\nContent-Type: "
                            b"application/http\r\n\r\nPOST /_admin/reset HTTP/1.1\r\n\r\n--b--"),
}


@pytest.mark.parametrize(("content_type", "body"), BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_a_malformed_batch_is_a_4xx_for_the_batch_or_its_part(
        emulator: EmulatorServer, emulator_session: requests.Session,
        content_type: str, body: bytes) -> None:
    create(emulator_session, emulator, "accounts", {"name": "kept"})
    response = emulator_session.post(f"{emulator.base_url}/$batch", data=body,
                                     headers={"Content-Type": content_type})
    if response.status_code == 200:  # the batch was read; each part it had failed alone
        assert "HTTP/1.1 5" not in response.text
        for status in ("HTTP/1.1 4",):
            assert status in response.text or "--batchresponse" in response.text
    else:
        assert_odata_error(response, 400)
    assert emulator.store.count("accounts") == 1


BAD_BODIES = [b"NaN", b'{"creditlimit": NaN}', b'{"creditlimit": Infinity}', b"\xff\xfe",
              b"null", b"[]", b'"x"', b'{"name": {"a": [1]}}', b'{"ownerid@odata.bind": 5}',
              b'{"accountid": 5}', b'{"statecode": ' + b"9" * 5000 + b"}",
              b'{"creditlimit": 1' + b"0" * 5000 + b".5}", b'{"creditlimit": "1"}',
              b'{"lastonholdtime": 5}']


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_bad_body_is_a_400(emulator: EmulatorServer, emulator_session: requests.Session,
                             body: bytes) -> None:
    response = emulator_session.post(f"{emulator.base_url}/accounts", data=body,
                                     headers={"Content-Type": "application/json"})
    assert_odata_error(response, 400)
    assert emulator.store.count("accounts") == 0


RAW = {
    "garbage request line": (b"GARBAGE\r\n\r\n", 400),
    "header without colon": (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
    "URL over 64 KiB": (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    "Content-Length not a number": (b"POST /api/data/v9.2/accounts HTTP/1.1\r\n"
                                    b"Content-Length: x\r\n\r\n", 400),
    "chunk size not hex": (b"POST /api/data/v9.2/accounts HTTP/1.1\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "negative chunk size": (b"POST /api/data/v9.2/accounts HTTP/1.1\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n-5\r\n", 400),
}


@pytest.mark.parametrize(("raw", "status"), RAW.values(), ids=RAW.keys())
def test_unreadable_http_is_answered_in_the_odata_error_shape(
        emulator: EmulatorServer, raw: bytes, status: int) -> None:
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as connection:
        connection.sendall(raw)
        data = b""
        while chunk := connection.recv(65536):  # the server closes after answering
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert json.loads(body)["error"]["message"]
