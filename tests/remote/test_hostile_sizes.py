"""No reply can flood or freeze the worker: a body is counted while it streams in, after
decompression, and refused past ``max_reply_mib`` (a 300 KB gzip bomb never becomes 300 MB);
a server that trickles its answer is cut off at the whole-request deadline
(``connect_timeout + read_timeout``), not after every single read."""

from __future__ import annotations

import functools
import time
import zlib

import pytest

from tests.support.hostile import Handler, Seen, client_of, hostile
from worker.remote.deadlines import Watcher
from worker.remote.errors import RemoteAuthError, RemoteProtocolError, RemoteUnavailable


@functools.cache
def bomb() -> bytes:
    """300 MiB of a JSON string, gzip-compressed to about 300 KB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"0" * (1 << 20)
    parts = [packer.compress(b'{"value": ["')]
    parts += [packer.compress(zeros) for _ in range(300)]
    parts.append(packer.compress(b'"]}') + packer.flush())
    return b"".join(parts)


def test_a_gzip_bomb_is_refused_while_it_streams() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(200, bomb(), {"Content-Type": "application/json",
                                  "Content-Encoding": "gzip"})

    assert len(bomb()) < 400_000
    with hostile(respond) as crm, client_of(crm, max_reply_mib=2) as client, \
            pytest.raises(RemoteProtocolError, match="larger than max_reply_mib 2 MiB"):
        list(client.entity_set("accounts", "accountid").read())


@pytest.mark.parametrize("declared", [True, False])
def test_a_reply_larger_than_the_limit_is_refused(declared: bool) -> None:
    body = b'{"value": [], "pad": "' + b"x" * (3 << 20) + b'"}'

    def respond(handler: Handler, seen: Seen) -> None:
        if declared:
            handler.raw(200, body, {"Content-Type": "application/json"})
            return
        handler.send_response(200)  # chunked: the size is known only at the end
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for start in range(0, len(body), 1 << 16):
            piece = body[start:start + (1 << 16)]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        handler.wfile.write(b"0\r\n\r\n")

    with hostile(respond) as crm, client_of(crm, max_reply_mib=1) as client:
        with pytest.raises(RemoteProtocolError, match="max_reply_mib 1 MiB") as caught:
            list(client.entity_set("accounts", "accountid").read())
        assert "\n" not in str(caught.value)
    with hostile(respond) as crm, client_of(crm, max_reply_mib=4) as client:
        assert list(client.entity_set("accounts", "accountid").read()) == []


def _trickle(where: str, only: str = ""):  # type: ignore[no-untyped-def]
    def respond(handler: Handler, seen: Seen) -> None:
        if not seen.path.startswith(only):
            handler.json(200, {"value": []})
            return
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if where == "headers":
            handler.wfile.write(b"X-Pad: ")
        else:
            handler.wfile.write(b"Content-Type: application/json\r\n"
                                b"Content-Length: 40\r\n\r\n")
        for _ in range(40):  # 20 s in all, each byte well within the read timeout
            handler.wfile.write(b"X" if where == "headers" else b" ")
            handler.wfile.flush()
            time.sleep(0.5)
    return respond


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_server_is_cut_off_at_the_deadline(where: str) -> None:
    with hostile(_trickle(where)) as crm, \
            client_of(crm, connect_timeout=1, read_timeout=2, max_retries=0) as client, \
            pytest.raises(RemoteUnavailable, match="timed out") as caught:
        list(client.entity_set("accounts", "accountid").read())
    assert "read_timeout 2 s" in str(caught.value)


@pytest.mark.parametrize("auth", ["oauth2", "managed_identity"])
def test_a_trickling_token_endpoint_is_cut_off_at_the_deadline(
        auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with hostile(_trickle("body", only="/token")) as crm:
        if auth == "oauth2":
            signing_in = {"client_id": "app", "client_secret": "s3cret",
                          "token_url": f"{crm.origin}/token"}
        else:  # an App Service identity endpoint, msal's request
            monkeypatch.setenv("IDENTITY_ENDPOINT", f"{crm.origin}/token")
            monkeypatch.setenv("IDENTITY_HEADER", "header-value")
            signing_in = {}
        started = time.monotonic()
        with client_of(crm, auth=auth, connect_timeout=1, read_timeout=2, max_retries=0,
                       **signing_in) as client, \
                pytest.raises(RemoteAuthError, match="timed out") as caught:
            list(client.entity_set("accounts", "accountid").read())
        elapsed = time.monotonic() - started
    assert elapsed < 10  # the trickle lasts 20 s; the deadline is 3 s
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).count("ReadTimeout") == 1
    assert [s.path.partition("?")[0] for s in crm.seen] == ["/token"]  # no retry, no read


def test_a_token_reply_larger_than_the_limit_is_refused() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(200, b'{"access_token": "' + b"t" * (3 << 20) + b'"}',
                    {"Content-Type": "application/json"})

    with hostile(respond) as crm, client_of(
            crm, auth="oauth2", client_id="app", client_secret="s3cret",
            token_url=f"{crm.origin}/token", max_reply_mib=1) as client, \
            pytest.raises(RemoteProtocolError, match="larger than max_reply_mib 1 MiB"):
        list(client.entity_set("accounts", "accountid").read())


def test_an_exchange_with_a_sooner_deadline_than_those_watched_is_cut_off_at_its_own() -> None:
    watcher = Watcher()
    with watcher.watch(0.3) as finished:
        pass
    with watcher.watch(0.6) as later, watcher.watch(0.1) as sooner:
        time.sleep(0.3)
        assert sooner.expired and not later.expired
        time.sleep(0.6)
    assert later.expired and not finished.expired
