"""A scripted stand-in for ``requests.Session`` for unit tests of the transport and the
authenticators (the integration tests use real HTTP against the emulator)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

Step = requests.Response | BaseException | Callable[[], requests.Response]


def response(status: int, body: Any = b"",
             headers: dict[str, str] | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.reason = HTTPStatus(status).phrase
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    r._content = body
    r._content_consumed = True  # a body in hand, like a read stream
    r.headers = CaseInsensitiveDict(headers or {})
    return r


class ScriptedSession(requests.Session):
    """Answers each request with the next step of the script (a response, or an exception
    to raise) and records what was sent."""

    def __init__(self, *steps: Step) -> None:
        super().__init__()
        self.steps = list(steps)
        self.sent: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def request(self, method: str | bytes, url: str | bytes,  # type: ignore[override]
                *args: Any, **kwargs: Any) -> requests.Response:
        auth = kwargs.get("auth")
        with self.lock:
            self.sent.append({"method": method, "url": url, "data": kwargs.get("data"),
                              "headers": kwargs.get("headers") or {},
                              "authorization": getattr(auth, "value", None),
                              "timeout": kwargs.get("timeout")})
            if not self.steps:
                raise AssertionError(f"unexpected request {method!r} {url!r}")
            step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step) and not isinstance(step, requests.Response):
            return step()
        return step


class Recorder:
    """A RequestObserver that remembers its calls."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.pauses: list[float] = []

    def request_finished(self, method: str, status_class: str, seconds: float) -> None:
        assert seconds >= 0
        self.requests.append((method, status_class))

    def throttled(self, seconds: float) -> None:
        self.pauses.append(seconds)
