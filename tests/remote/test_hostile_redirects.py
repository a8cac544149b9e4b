"""A redirect is never a write done: the client follows none (it would carry the token
along), and a 3xx answer to a write, to a whole ``$batch`` or to one of its parts is a
failure naming the origin the ``Location`` points at."""

from __future__ import annotations

import uuid

import pytest

from tests.support.hostile import Handler, Seen, client_of, hostile
from worker.remote.batch import Operation
from worker.remote.errors import RemoteRedirected

KEY = "00000000-0000-0000-0000-00000000000a"


def _moved(handler: Handler, seen: Seen) -> None:
    handler.raw(301, b"", {"Location": "https://crm.example.com:8443/api/accounts(1)?x=secret"})


@pytest.mark.parametrize("write", ["create", "update", "delete"])
def test_a_redirected_write_fails_naming_the_location_origin(write: str) -> None:
    with hostile(_moved) as crm, client_of(crm) as client:
        accounts = client.entity_set("accounts", "accountid")
        with pytest.raises(RemoteRedirected) as caught:
            if write == "create":
                accounts.create(KEY, {"name": "n"})
            elif write == "update":
                accounts.update(KEY, {"name": "n"})
            else:
                accounts.delete(KEY)
    message = str(caught.value)
    assert "https://crm.example.com:8443" in message and "not carried out" in message
    assert "secret" not in message and "\n" not in message
    assert len(crm.seen) == 1  # not retried, not followed


def _batch_reply(handler: Handler, seen: Seen) -> None:
    boundary = "batchresponse_" + uuid.uuid4().hex
    parts = [
        ("1", "HTTP/1.1 204 No Content\r\nOData-EntityId: x\r\n\r\n"),
        ("2", "HTTP/1.1 302 Found\r\nLocation: http://other.example.com/elsewhere\r\n\r\n"),
    ]
    body = "".join(f"--{boundary}\r\nContent-Type: application/http\r\n"
                   f"Content-Transfer-Encoding: binary\r\nContent-ID: {cid}\r\n\r\n{http}\r\n"
                   for cid, http in parts) + f"--{boundary}--\r\n"
    handler.raw(200, body.encode(), {"Content-Type": f"multipart/mixed; boundary={boundary}"})


def test_a_redirected_batch_part_is_a_failed_operation() -> None:
    with hostile(_batch_reply) as crm, client_of(crm, return_representation="false") as client:
        accounts = client.entity_set("accounts", "accountid")
        first, second = client.batch([
            Operation("update", accounts, KEY, {"name": "a"}),
            Operation("update", accounts, KEY.replace("a", "b"), {"name": "b"})])
    assert first.ok
    assert not second.ok and second.status == 302
    assert "http://other.example.com:80" in str(second.error)


def test_a_redirected_batch_writes_nothing() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(307, b"", {"Location": "https://crm.example.com/api/$batch"})

    with hostile(respond) as crm, client_of(crm) as client:
        accounts = client.entity_set("accounts", "accountid")
        results = client.batch([Operation("update", accounts, KEY, {"name": "a"})])
    assert [r.ok for r in results] == [False]
    assert "https://crm.example.com:443" in str(results[0].error)
