"""Keys read from a service are data, never addresses: string keys are percent-encoded in
every URL and $batch request line (so ``x/../../Orders(5)?`` addresses that record and no
other resource), and a key or etag with a control character is refused before anything is
sent (it could end a header of a $batch part)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from tests.support.hostile import Handler, Seen, client_of, hostile
from worker.remote.batch import Operation
from worker.remote.bulk import BulkRecord
from worker.remote.filters import FilterError

TRAVERSAL = "x/../../Orders(5)?"


def _ok(handler: Handler, seen: Seen) -> None:
    if seen.path.endswith("$batch"):
        handler.raw(400, b'{"error": {"code": "x", "message": "no batch"}}',
                    {"Content-Type": "application/json"})
    else:
        handler.json(200, {"value": [], "id": "k"})


@pytest.mark.parametrize("key", [TRAVERSAL, "a%27", "a'b", "#frag", "sp ace"])
def test_a_string_key_stays_inside_its_parentheses(key: str) -> None:
    with hostile(_ok) as crm, client_of(crm, key_type="string") as client:
        client.entity_set("accounts", "id").get(key)
        client.entity_set("accounts", "id").update(key, {"name": "n"})
    paths = [s.path for s in crm.seen]
    literal = "'" + key.replace("'", "''") + "'"
    for path in paths:
        head, _, rest = path.partition("(")
        assert head == "/api/accounts"
        encoded = rest.rpartition(")")[0]
        assert "/" not in encoded and "?" not in encoded and "#" not in encoded
        assert unquote(encoded) == literal  # the service reads exactly the key


def test_a_key_in_a_filter_is_encoded() -> None:
    with hostile(_ok) as crm, client_of(crm, key_type="string") as client:
        list(client.entity_set("accounts", "id").read_by_keys(["a%27", "b&$top=1"]))
    (seen,) = crm.seen
    query = seen.path.partition("?")[2]
    assert "a%2527" in query and "&$top" not in query


def test_a_batch_request_line_carries_the_encoded_key() -> None:
    with hostile(_ok) as crm, client_of(crm, key_type="string") as client:
        accounts = client.entity_set("accounts", "id")
        client.batch([Operation("update", accounts, TRAVERSAL, {"name": "n"})])
    body = crm.seen[0].body.decode()
    assert "PATCH accounts('x%2F..%2F..%2FOrders%285%29%3F') HTTP/1.1" in body


@pytest.mark.parametrize("key", ["a\r\nX-Injected: 1", "a\nb", "tab\there", "nul\x00"])
def test_a_key_with_control_characters_is_refused_before_sending(key: str) -> None:
    with hostile(_ok) as crm, client_of(crm, key_type="string") as client:
        accounts = client.entity_set("accounts", "id")
        with pytest.raises(FilterError, match="control character"):
            accounts.update(key, {"name": "n"})
        (result,) = client.batch([Operation("update", accounts, key, {"name": "n"})])
        assert not result.ok and "control character" in str(result.error)
        (result,) = client.batch([Operation("update", accounts, "ok", {"name": "n"},
                                            etag='W/"1"\r\nX-Injected: 1')])
        assert not result.ok and "control character" in str(result.error)
    assert crm.seen == []


def test_an_alternate_key_stays_inside_its_parentheses() -> None:
    with hostile(_ok) as crm, client_of(crm, bulk_messages="off") as client:
        accounts = client.entity_set("accounts", "accountid")
        accounts.upsert_multiple([BulkRecord(None, {"name": "n"},
                                             alternate={"accountnumber": TRAVERSAL})],
                                 read_back=False)
        (result,) = accounts.upsert_multiple(
            [BulkRecord(None, {"name": "n"}, alternate={"accountnumber": "a\r\nX-Injected: 1"})],
            read_back=False)
        assert not result.ok and "control character" in str(result.error)
    (seen,) = crm.seen  # the second upsert sent nothing
    assert ("PATCH accounts(accountnumber='x%2F..%2F..%2FOrders%285%29%3F') HTTP/1.1"
            in seen.body.decode())
