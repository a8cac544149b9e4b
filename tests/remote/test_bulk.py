"""The bulk-message client against the emulator over real HTTP: CreateMultiple,
UpdateMultiple and UpsertMultiple with per-record results, the per-record fallback when the
service refuses a request as a whole, unknown outcomes, and where the messages are used."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from tests.fixtures.emulator import start_emulator_for
from worker.emulator.server import EmulatorServer
from worker.remote.batch import Operation, connection_failure
from worker.remote.bulk import BulkRecord
from worker.remote.errors import RemoteNotFound

from .helpers import client_for


def _stats(server: EmulatorServer) -> dict:
    return server.stats.snapshot()


def test_create_multiple_writes_every_record_in_one_request(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        assert accounts.supports_bulk()
        keys = [str(uuid.uuid4()) for _ in range(30)]
        results = accounts.create_multiple(
            [BulkRecord(k, {"name": f"bulk {n}"}, ref=n) for n, k in enumerate(keys)])
        assert [r.ref for r in results] == list(range(30))
        assert all(r.ok and not r.unknown for r in results)
        assert [r.key for r in results] == keys
        assert all(r.etag and isinstance(r.modified_on, datetime) for r in results)
        assert emulator.store.require("accounts", keys[7])["name"] == "bulk 7"
        stats = _stats(emulator)
        assert stats["by_message"] == {"CreateMultiple": 1}
        assert "$batch" not in stats["by_set"]


def test_one_bad_record_fails_alone_after_the_request_is_refused(
        emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        keys = [str(uuid.uuid4()) for _ in range(5)]
        records = [BulkRecord(k, {"name": f"ok {n}"}) for n, k in enumerate(keys)]
        records[2] = BulkRecord(keys[2], {"name": "x" * 500})  # longer than name's 160
        results = accounts.create_multiple(records)
        assert [r.ok for r in results] == [True, True, False, True, True]
        assert results[2].status == 400 and "name" in str(results[2].error)
        assert not results[2].unknown
        assert emulator.store.get("accounts", keys[2]) is None
        assert emulator.store.count("accounts") == 4
        stats = _stats(emulator)
        assert stats["by_message"] == {"CreateMultiple": 1} and stats["by_set"]["$batch"] >= 1


def test_update_multiple_and_a_missing_record(emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        keys = [str(uuid.uuid4()) for _ in range(3)]
        accounts.create_multiple([BulkRecord(k, {"name": "before"}) for k in keys])
        version = emulator.store.require("accounts", keys[0])["versionnumber"]
        results = accounts.update_multiple([BulkRecord(k, {"name": "after"}) for k in keys])
        assert all(r.ok for r in results)
        now = emulator.store.require("accounts", keys[0])["versionnumber"]
        assert results[0].etag == f'W/"{now}"' and now > version
        gone = str(uuid.uuid4())
        results = accounts.update_multiple([BulkRecord(keys[1], {"name": "again"}),
                                            BulkRecord(gone, {"name": "nobody"})])
        assert results[0].ok and not results[1].ok
        assert isinstance(results[1].error, RemoteNotFound)
        assert emulator.store.require("accounts", keys[1])["name"] == "again"
        assert _stats(emulator)["by_message"] == {"CreateMultiple": 1, "UpdateMultiple": 2}


def test_upsert_multiple_by_alternate_key_creates_and_updates(
        emulator: EmulatorServer) -> None:
    with client_for(emulator) as client:
        accounts = client.entity_set("accounts", "accountid")
        existing = str(uuid.uuid4())
        accounts.create(existing, {"name": "old", "accountnumber": "K1"})
        results = accounts.upsert_multiple([
            BulkRecord(None, {"name": "updated"}, alternate={"accountnumber": "K1"}),
            BulkRecord(None, {"name": "created"}, alternate={"accountnumber": "K2"})])
        assert all(r.ok for r in results)
        assert results[0].key == existing and results[0].etag
        created = emulator.store.alternate_owner("accounts", "accountnumber", "K2")
        assert results[1].key == created
        assert emulator.store.require("accounts", existing)["name"] == "updated"
        assert _stats(emulator)["by_message"] == {"UpsertMultiple": 1}


def test_no_answer_leaves_the_outcome_unknown(emulator: EmulatorServer) -> None:
    with client_for(emulator, max_retries=1) as client:
        accounts = client.entity_set("accounts", "accountid")
        accounts.supports_bulk()  # $metadata read before the faults
        emulator.faults.drop_after_write(count=None, methods=["POST"])
        keys = [str(uuid.uuid4()) for _ in range(4)]
        results = accounts.create_multiple([BulkRecord(k, {"name": "lost?"}) for k in keys])
        assert all(r.unknown and not r.ok for r in results)
        assert emulator.store.count("accounts") == 4  # it was written: only the answer was lost
        emulator.faults.clear()
        again = accounts.create_multiple([BulkRecord(k, {"name": "lost?"}) for k in keys])
        assert all(r.ok and r.already_existed for r in again)  # refused as duplicates; per record


@pytest.mark.parametrize("emulator_profile", ["odata"], indirect=True)
def test_a_service_without_the_messages_writes_per_record(emulator: EmulatorServer) -> None:
    with client_for(emulator, dialect="odata") as client:
        accounts = client.entity_set("accounts", "ID")
        assert not accounts.supports_bulk()
        keys = [str(uuid.uuid4()) for _ in range(3)]
        results = accounts.create_multiple([BulkRecord(k, {"name": "one"}) for k in keys])
        assert all(r.ok for r in results) and emulator.store.count("accounts") == 3
        assert _stats(emulator)["by_message"] == {}


def test_a_table_that_refuses_the_messages_is_remembered() -> None:
    server = start_emulator_for("dataverse", bulk_unsupported=["contacts"])
    try:
        with client_for(server) as client:
            contacts = client.entity_set("contacts", "contactid")
            assert contacts.supports_bulk()  # $metadata declares them for every table
            for _ in range(2):
                results = contacts.create_multiple(
                    [BulkRecord(str(uuid.uuid4()), {"lastname": "x"}) for _ in range(3)])
                assert all(r.ok for r in results)
            assert not contacts.supports_bulk()
            assert _stats(server)["by_message"] == {"CreateMultiple": 1}
            assert server.store.count("contacts") == 6
    finally:
        server.stop()


def test_bulk_messages_off_by_setting(emulator: EmulatorServer) -> None:
    with client_for(emulator, bulk_messages="off") as client:
        accounts = client.entity_set("accounts", "accountid")
        assert not accounts.supports_bulk()
        results = accounts.create_multiple([BulkRecord(str(uuid.uuid4()), {"name": "a"})])
        assert results[0].ok and results[0].etag
        assert _stats(emulator)["by_message"] == {}


# -- the seam the passes use: ODataClient.batch ----------------------------------------
def _creates(accounts: Any, names: list[str]) -> list[Operation]:
    return [Operation("create", accounts, str(uuid.uuid4()), {"name": name}, ref=n)
            for n, name in enumerate(names)]


def test_batch_sends_creates_as_create_multiple_when_bulk_messages_are_on(
        emulator: EmulatorServer) -> None:
    with client_for(emulator, bulk_messages="on", bulk_size=10) as client:
        accounts = client.entity_set("accounts", "accountid")
        creates = _creates(accounts, [f"bulk {n}" for n in range(25)])
        first = creates[0].key
        update = Operation("update", accounts, first, {"name": "later"}, ref="u")
        results = client.batch(creates)
        assert [r.ref for r in results] == list(range(25))
        assert all(r.ok and r.etag and r.modified_on for r in results)
        stats = _stats(emulator)
        assert stats["by_message"] == {"CreateMultiple": 3}
        assert "$batch" not in stats["by_set"]
        # An update with If-Match and a delete go in $batch, in the same call.
        etag = results[0].etag
        mixed = [replace(update, etag=etag),
                 Operation("delete", accounts, creates[1].key, ref="d")]
        done = client.batch(mixed)
        assert [r.ok for r in done] == [True, True]
        assert emulator.store.require("accounts", first)["name"] == "later"
        assert _stats(emulator)["by_set"]["$batch"] == 1


def test_batch_with_bulk_messages_fails_one_bad_record_alone(
        emulator: EmulatorServer) -> None:
    with client_for(emulator, bulk_messages="on") as client:
        accounts = client.entity_set("accounts", "accountid")
        names = ["ok 0", "ok 1", "x" * 500, "ok 3"]  # name holds 160 characters
        results = client.batch(_creates(accounts, names))
        assert [r.ok for r in results] == [True, True, False, True]
        assert results[2].status == 400 and not results[2].unknown
        assert emulator.store.count("accounts") == 3
        assert _stats(emulator)["by_message"] == {"CreateMultiple": 1}


def test_batch_with_bulk_messages_reports_an_unanswered_request_as_unknown(
        emulator: EmulatorServer) -> None:
    with client_for(emulator, bulk_messages="on", max_retries=1) as client:
        accounts = client.entity_set("accounts", "accountid")
        accounts.supports_bulk()  # $metadata read before the faults
        emulator.faults.drop_after_write(count=None, methods=["POST"])
        creates = _creates(accounts, ["lost?"] * 4)
        delete = Operation("delete", accounts, str(uuid.uuid4()), ref="d")
        results = client.batch([*creates, delete])
        assert all(r.unknown and not r.ok for r in results)  # the delete was not sent
        assert connection_failure(results) is not None
        assert emulator.store.count("accounts") == 4  # written: only the answer was lost


def test_refused_bulk_requests_in_parallel_fall_back_without_freezing(
        emulator: EmulatorServer) -> None:
    """Every bulk request of a call refused at once, each falling back to $batch on the
    client's threads: the fallbacks run on the thread that holds them, so the call cannot
    wait on a pool its own requests have filled."""
    with client_for(emulator, bulk_messages="on", bulk_size=2, batch_size=1,
                    concurrency=2) as client:
        accounts = client.entity_set("accounts", "accountid")
        names = [name for n in range(4) for name in (f"ok {n}", "x" * 500)]
        done: list[Any] = []
        caller = threading.Thread(target=lambda: done.append(
            client.batch(_creates(accounts, names))), daemon=True)
        caller.start()
        caller.join(120)
        if not done:  # free the pool's threads, so that closing the client returns
            client.executor().shutdown(wait=False, cancel_futures=True)
            pytest.fail("the call never returned (its fallbacks waited on a full pool)")
        assert [r.ok for r in done[0]] == [True, False] * 4
        assert emulator.store.count("accounts") == 4
        assert _stats(emulator)["by_message"] == {"CreateMultiple": 4}
