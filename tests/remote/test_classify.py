"""The response classifier and the parsers of what a refusal carries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from worker.remote.classify import (
    Outcome,
    classify,
    parse_error_body,
    parse_retry_after,
    status_class,
)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.OK), (201, Outcome.OK), (204, Outcome.OK), (304, Outcome.FATAL),
    (301, Outcome.FATAL),
    (400, Outcome.FATAL), (403, Outcome.FATAL), (404, Outcome.FATAL), (409, Outcome.FATAL),
    (412, Outcome.FATAL), (422, Outcome.FATAL),
    (401, Outcome.UNAUTHORIZED),
    (429, Outcome.THROTTLED),
    (408, Outcome.RETRIABLE), (500, Outcome.RETRIABLE), (502, Outcome.RETRIABLE),
    (503, Outcome.RETRIABLE), (504, Outcome.RETRIABLE),
])
def test_statuses(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_429_is_throttled_with_or_without_retry_after() -> None:
    assert classify(429, retry_after=2.0) is Outcome.THROTTLED
    assert classify(429) is Outcome.THROTTLED


def test_503_with_retry_after_is_throttling() -> None:
    assert classify(503, retry_after=5.0) is Outcome.THROTTLED


@pytest.mark.parametrize("error", [
    requests.ConnectionError("refused"),
    requests.ConnectTimeout("slow"),
    requests.ReadTimeout("slow"),
    requests.exceptions.ChunkedEncodingError("cut"),
])
def test_transport_failures_are_retriable(error: BaseException) -> None:
    assert classify(None, error=error) is Outcome.RETRIABLE


def test_unknown_failures_are_fatal() -> None:
    assert classify(None, error=ValueError("a bug")) is Outcome.FATAL
    assert classify(None) is Outcome.FATAL


def test_status_class() -> None:
    assert [status_class(s) for s in (200, 204, 404, 429, 503, None)] == [
        "2xx", "2xx", "4xx", "4xx", "5xx", "error"]


def test_retry_after_seconds_and_dates() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("-3") == 0.0
    for junk in (None, "", "soon", "Mon, 99 Foo"):
        assert parse_retry_after(junk) is None


def test_dataverse_error_body() -> None:
    body = (b'{"error":{"code":"0x80040237",'
            b'"message":"A record with matching key values already exists."}}')
    assert parse_error_body(body) == (
        "0x80040237", "A record with matching key values already exists.")


def test_oauth_error_body() -> None:
    body = b'{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret."}'
    assert parse_error_body(body) == ("invalid_client", "AADSTS7000215: Invalid client secret.")


@pytest.mark.parametrize("body", [None, b"", b"<html>Bad gateway</html>", b"[1,2]", b'{"x":1}',
                                  b"\xff\xfe"])
def test_other_bodies_give_nothing(body: bytes | None) -> None:
    assert parse_error_body(body) == (None, None)
