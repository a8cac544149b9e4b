"""Connection failures over real sockets on loopback: the error names scheme://host:port
and the cause; a foreground command fails at once on a refused or unresolvable address,
the worker keeps its backoff."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from worker.remote import config
from worker.remote.config import ConnectionSettings
from worker.remote.errors import RemoteUnavailable
from worker.remote.transport import Transport


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def foreground() -> Iterator[None]:
    config.set_foreground(True)
    yield
    config.set_foreground(False)


def send(url: str, sleeps: list[float], **settings: object) -> RemoteUnavailable:
    values: dict[str, object] = {"max_retries": 3, "retry_base": 0.01, "connect_timeout": 2.0,
                                 "read_timeout": 2.0, **settings}
    s = ConnectionSettings(name="crm", url=url, **values)  # type: ignore[arg-type]
    transport = Transport(s, sleep=sleeps.append)
    try:
        with pytest.raises(RemoteUnavailable) as info:
            transport.send("GET", url + "/$metadata")
    finally:
        transport.close()
    return info.value


def test_refused_in_the_foreground_fails_at_once(closed_port: int, foreground: None) -> None:
    sleeps: list[float] = []
    error = send(f"http://127.0.0.1:{closed_port}/api/data/v9.2", sleeps)
    assert sleeps == []
    assert str(error).startswith(
        f"GET http://127.0.0.1:{closed_port}/api/data/v9.2/$metadata: connection refused")
    assert "after 1 attempt(s)" in str(error) and "connection 'crm'" in str(error)


def test_unresolvable_in_the_foreground_fails_at_once(foreground: None) -> None:
    sleeps: list[float] = []
    error = send("https://nonexistent.invalid/api/data/v9.2", sleeps)
    assert sleeps == []
    assert "https://nonexistent.invalid:443/api/data/v9.2/$metadata: host name not resolved" \
        in str(error)


def test_the_worker_keeps_its_backoff(closed_port: int) -> None:
    assert not config.foreground()
    sleeps: list[float] = []
    error = send(f"http://127.0.0.1:{closed_port}/api/data/v9.2", sleeps)
    assert len(sleeps) == 3
    assert "connection refused after 4 attempt(s)" in str(error)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_timeout_and_tls_are_named(silent_server: int, foreground: None) -> None:
    sleeps: list[float] = []
    error = send(f"http://127.0.0.1:{silent_server}/api", sleeps, max_retries=0,
                 read_timeout=0.5)
    assert "timed out waiting for the response (ReadTimeout)" in str(error)
    error = send(f"https://127.0.0.1:{silent_server}/api", sleeps, max_retries=0,
                 read_timeout=0.5)
    # A server that never speaks TLS: the handshake times out (or fails), named either way.
    assert f"https://127.0.0.1:{silent_server}/api/$metadata:" in str(error)
    assert "timed out" in str(error) or "TLS" in str(error)


def test_tls_failure_is_named(foreground: None) -> None:
    """A plain-text HTTP server answering a TLS client hello."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    try:
        error = send(f"https://127.0.0.1:{port}/api", [], max_retries=0)
    finally:
        thread.join(5)
        server.close()
    assert f"GET https://127.0.0.1:{port}/api/$metadata: TLS failed" in str(error)
    assert ssl.OPENSSL_VERSION  # the message carries OpenSSL's reason in parentheses


def test_an_unreachable_token_endpoint_is_named(closed_port: int, foreground: None) -> None:
    from worker.remote.config import load_connection
    from worker.remote.errors import RemoteAuthError

    token_url = f"http://127.0.0.1:{closed_port}/tenant/oauth2/v2.0/token"
    settings = load_connection(env={
        "CRMSYNC_CRM_URL": "http://127.0.0.1:9/api", "CRMSYNC_CRM_CLIENT_ID": "app",
        "CRMSYNC_CRM_CLIENT_SECRET": "secret-value", "CRMSYNC_CRM_TOKEN_URL": token_url})
    transport = Transport(settings)
    with pytest.raises(RemoteAuthError) as info:
        transport.send("GET", "http://127.0.0.1:9/api/accounts")
    transport.close()
    assert str(info.value).startswith(f"POST {token_url}: token endpoint unreachable: "
                                      "connection refused")
    assert "after 1 attempt(s)" in str(info.value)
    assert "secret-value" not in str(info.value)
