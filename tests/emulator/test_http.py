"""The HTTP transport: keep-alive, chunked bodies, 100-continue, malformed requests."""

from __future__ import annotations

import http.client
import json
import socket

from worker.emulator import EmulatorServer


def raw_exchange(server: EmulatorServer, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_many_requests_on_one_kept_alive_connection(emulator: EmulatorServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port)
    for n in range(20):
        connection.request("POST", "/api/data/v9.2/accounts",
                           body=json.dumps({"name": f"A{n}"}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 204
        assert response.getheader("Connection") is None
    local_port = connection.sock.getsockname()[1]
    connection.request("GET", "/api/data/v9.2/accounts?$select=name")
    assert len(json.loads(connection.getresponse().read())["value"]) == 20
    assert connection.sock.getsockname()[1] == local_port  # still the same connection
    connection.close()


def test_chunked_body_and_expect_continue(emulator: EmulatorServer) -> None:
    body = b'{"name": "chunked"}'
    response = raw_exchange(emulator, (
        b"POST /api/data/v9.2/accounts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n"
        + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"))
    assert response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n")
    assert b"Connection: close" in response
    assert [r["name"] for r in emulator.store.scan("accounts", None)] == ["chunked"]


def test_malformed_requests_get_400_and_the_server_goes_on(emulator: EmulatorServer) -> None:
    assert raw_exchange(emulator, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(emulator, b"GET / HTTP/1.1\r\nno colon\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    too_long = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw_exchange(emulator, too_long).startswith(b"HTTP/1.1 431 ")
    answer = raw_exchange(emulator, b"GET /api/data/v9.2/ HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
