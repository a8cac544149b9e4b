"""What several emulator tests share: URLs, record creation and $batch bodies."""

from __future__ import annotations

import json
import queue
import re
import threading
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from worker.emulator import EmulatorServer
from worker.emulator.values import Changes

GUID = re.compile(r"\(([0-9a-f-]{36})\)$")
WAIT = 10.0  # seconds a test waits for a webhook call it expects (a bound, not a measurement)


def entity_key(response: requests.Response) -> str:
    """The id in a create response's ``OData-EntityId`` header."""
    match = GUID.search(response.headers["OData-EntityId"])
    assert match, response.headers
    return match.group(1)


def create(session: requests.Session, server: EmulatorServer, set_name: str,
           body: dict[str, Any]) -> str:
    response = session.post(f"{server.base_url}/{set_name}", json=body)
    assert response.status_code == 204, response.text
    return entity_key(response)


def seed_accounts(server: EmulatorServer, count: int) -> list[str]:
    """``count`` accounts written straight into the store (the read path is what is tested)."""
    keys = []
    for n in range(count):
        record = server.store.create("accounts", Changes(values={
            "name": f"Account {n:05d}", "accountnumber": f"C{n:05d}",
            "address1_city": ("Berlin", "Hamburg", "Munich")[n % 3],
            "creditlimit": Decimal(n * 10)}))
        keys.append(record["accountid"])
    return keys


def read_all(session: requests.Session, url: str, page_size: int,
             params: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Every page of a collection, following ``@odata.nextLink`` exactly."""
    headers = {"Prefer": f"odata.maxpagesize={page_size}"}
    pages = []
    response = session.get(url, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        doc = response.json()
        pages.append(doc["value"])
        if "@odata.nextLink" not in doc:
            return pages
        response = session.get(doc["@odata.nextLink"], headers=headers)


def http_part(method: str, url: str, body: dict[str, Any] | None = None,
              content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    request = f"{method} {url} HTTP/1.1\r\n"
    if body is not None:
        request += f"Content-Type: application/json\r\n\r\n{json.dumps(body)}"
    else:
        request += "Accept: application/json\r\n\r\n"
    return head + "\r\n" + request + "\r\n"


def batch(parts: list[str | list[str]]) -> tuple[str, bytes]:
    """A $batch body: each item is a part, or a list of parts forming one change set."""
    boundary = f"batch_{uuid.uuid4()}"
    chunks = []
    for part in parts:
        if isinstance(part, list):
            changeset = f"changeset_{uuid.uuid4()}"
            inner = "".join(f"--{changeset}\r\n{p}" for p in part) + f"--{changeset}--\r\n"
            part = f"Content-Type: multipart/mixed; boundary={changeset}\r\n\r\n{inner}"
        chunks.append(f"--{boundary}\r\n{part}")
    body = "".join(chunks) + f"--{boundary}--\r\n"
    return f"multipart/mixed; boundary={boundary}", body.encode()


def batch_statuses(response: requests.Response) -> list[int]:
    """The status of every answered request in a $batch response, in order."""
    return [int(code) for code in re.findall(r"^HTTP/1\.1 (\d{3})", response.text, re.M)]


class Receiver:
    """A webhook receiver: every call's headers and JSON body land on ``calls``; while
    ``hold`` is clear, the receiver keeps the caller waiting for its answer."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[dict[str, str], dict[str, Any]]] = queue.Queue()
        self.hold = threading.Event()
        self.hold.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.put((dict(self.headers), json.loads(body)))
                receiver.hold.wait(WAIT)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def next_call(self) -> tuple[dict[str, str], dict[str, Any]]:
        return self.calls.get(timeout=WAIT)

    def close(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
