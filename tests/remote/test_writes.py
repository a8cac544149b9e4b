"""Writes against the emulator over real HTTP: idempotent creates, updates with etags,
deletes, lookups, and $batch with one result per record."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from worker.emulator.server import EmulatorServer
from worker.remote.batch import Operation
from worker.remote.errors import RemoteConflict, RemoteError, RemoteNotFound
from worker.remote.filters import eq

from .helpers import client_for, marker


def test_create_returns_the_new_version_and_is_idempotent(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        first = accounts.create(key, {"name": "Contoso", "creditlimit": 1000})
        assert (first.status, first.already_existed) == (201, False)
        assert first.etag and first.etag.startswith('W/"')
        assert isinstance(first.modified_on, datetime)
        assert first.record is not None and first.record["versionnumber"] > 0
        again = accounts.create(key, {"name": "Contoso again"})
        assert (again.status, again.already_existed) == (412, True)
        record = accounts.get(key)
        assert record is not None and record["name"] == "Contoso"


def test_generic_odata_create_posts_the_key(emulator: EmulatorServer) -> None:
    with client_for(emulator, dialect="odata") as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        posts = emulator.stats.snapshot()["by_method"].get("POST", 0)
        first = accounts.create(key, {"name": "Posted"})
        assert (first.status, first.already_existed) == (201, False)
        assert accounts.create(key, {"name": "Posted"}).already_existed
        assert emulator.stats.snapshot()["by_method"]["POST"] - posts == 2


def test_update_with_and_without_etag(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        created = accounts.create(key, {"name": "v1"})
        updated = accounts.update(key, {"name": "v2"}, etag=created.etag)
        assert updated.status == 200 and updated.etag != created.etag
        with pytest.raises(RemoteConflict) as info:
            accounts.update(key, {"name": "stale"}, etag=created.etag)
        assert info.value.status == 412 and info.value.code
        blind = accounts.update(key, {"telephone1": "555"})  # If-Match: *
        assert blind.record is not None and blind.record["name"] == "v2"
        with pytest.raises(RemoteNotFound):
            accounts.update(str(uuid.uuid4()), {"name": "nobody"})
        nothing = accounts.update(key, {})
        assert nothing.status == 304


def test_delete_reports_already_gone(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        key = str(uuid.uuid4())
        accounts.create(key, {"name": "short-lived"})
        assert accounts.delete(key).status == 204
        gone = accounts.delete(key)
        assert (gone.status, gone.already_gone) == (404, True)
        assert accounts.get(key) is None


def test_lookups_through_odata_bind(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        contacts = client.entity_set("contacts", "contactid")
        account = str(uuid.uuid4())
        accounts.create(account, {"name": "Parent"})
        contact = str(uuid.uuid4())
        result = contacts.create(contact, {
            "lastname": "Child",
            "parentcustomerid_account@odata.bind": contacts.bind("accounts", account)})
        assert result.record is not None
        assert result.record["_parentcustomerid_value"] == account
        assert client.bind("accounts", account.upper()) == f"/accounts({account})"


def test_service_errors_carry_code_and_message(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        with pytest.raises(RemoteError) as info:
            accounts.create(str(uuid.uuid4()), {"name": "x" * 500})
    err = info.value
    assert err.status == 400
    assert err.code and err.code.startswith("0x")
    assert "maximum allowed length" in err.message


def test_batch_of_100_with_one_invalid_part_fails_exactly_that_one(
        emulator: EmulatorServer) -> None:
    tag = marker()
    with client_for(emulator, batch_size=1000) as client:
        accounts = client.entity_set("accounts", "accountid")
        ops = [Operation("create", accounts, str(uuid.uuid4()),
                         {"name": f"r{i}", "description": tag}, ref=i) for i in range(100)]
        ops[37] = Operation("create", accounts, str(uuid.uuid4()),
                            {"name": "bad", "description": tag, "nosuchcolumn": 1}, ref=37)
        before = emulator.stats.snapshot()["requests"]
        results = client.batch(ops)
        assert emulator.stats.snapshot()["requests"] - before == 1  # one $batch request
        stored = {r["accountid"] for r in accounts.read(filter=eq("description", tag))}
    assert [r.ref for r in results] == list(range(100))
    failed = [r for r in results if not r.ok]
    assert [r.ref for r in failed] == [37]
    error = failed[0].error
    assert isinstance(error, RemoteError)
    assert error.status == 400 and error.code and "nosuchcolumn" in error.message
    assert all(r.status == 201 and r.etag and r.modified_on for r in results if r.ok)
    assert stored == {op.key for op in ops if op.ref != 37}


def test_batch_mixes_kinds_and_reports_each(emulator: EmulatorServer) -> None:
    with client_for(emulator, batch_size=3) as client:
        accounts = client.entity_set("accounts", "accountid")
        existing = str(uuid.uuid4())
        created = accounts.create(existing, {"name": "old"})
        fresh, ghost = str(uuid.uuid4()), str(uuid.uuid4())
        results = client.batch([
            Operation("create", accounts, fresh, {"name": "new"}, ref="new"),
            Operation("create", accounts, existing, {"name": "dup"}, ref="dup"),
            Operation("update", accounts, existing, {"name": "upd"}, etag=created.etag,
                      ref="upd"),
            Operation("update", accounts, existing, {"name": "stale"}, etag=created.etag,
                      ref="stale"),
            Operation("delete", accounts, ghost, ref="ghost"),
            Operation("update", accounts, "not-a-guid", {"name": "x"}, ref="badkey"),
        ])
    by_ref = {r.ref: r for r in results}
    assert by_ref["new"].ok and by_ref["new"].status == 201
    assert by_ref["dup"].ok and by_ref["dup"].already_existed
    assert by_ref["upd"].ok and by_ref["upd"].record is not None
    assert not by_ref["stale"].ok and isinstance(by_ref["stale"].error, RemoteConflict)
    assert by_ref["ghost"].ok and by_ref["ghost"].already_gone
    assert not by_ref["badkey"].ok and "not a GUID" in str(by_ref["badkey"].error)


def test_batch_without_dollar_batch_sends_one_request_each(emulator: EmulatorServer) -> None:
    tag = marker()
    with client_for(emulator, batch="false", concurrency=4) as client:
        accounts = client.entity_set("accounts", "accountid")
        ops = [Operation("create", accounts, str(uuid.uuid4()), {"name": f"s{i}",
                                                                 "description": tag}, ref=i)
               for i in range(20)]
        ops.append(Operation("update", accounts, str(uuid.uuid4()), {"name": "x"}, ref="miss"))
        before = emulator.stats.snapshot()
        results = client.batch(ops)
        after = emulator.stats.snapshot()
    assert after["requests"] - before["requests"] == 21
    assert after["by_method"].get("POST", 0) == before["by_method"].get("POST", 0)
    assert [r.ref for r in results] == [*range(20), "miss"]
    assert all(r.ok for r in results[:20])
    assert isinstance(results[20].error, RemoteNotFound)


def test_empty_batch(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        assert client.batch([]) == []
