"""crmsync's change-tracking client (``EntitySet.read_changes``) against the emulator over
real HTTP: first read, changes and deletions since, paging, an expired delta link."""

from __future__ import annotations

from typing import Any

import pytest

from tests.remote.helpers import client_for, marker, seed_accounts
from worker.emulator.server import EmulatorServer
from worker.emulator.values import Changes
from worker.remote.changes import Change
from worker.remote.errors import RemoteDeltaExpired


def apply(replica: dict[str, dict[str, Any]], changes: list[Change]) -> None:
    for change in changes:
        if change.record is None:
            replica.pop(change.key, None)
        else:
            replica[change.key] = change.record


def test_read_changes_against_the_emulator(emulator: EmulatorServer) -> None:
    keys = seed_accounts(emulator, 5, marker())
    with client_for(emulator, change_tracking="true", page_size=2) as client:
        accounts = client.entity_set("accounts", "accountid")
        first = accounts.read_changes(select=["name"])
        pages = list(first.pages())
        assert [len(p) for p in pages] == [2, 2, 1]  # odata.maxpagesize is honoured
        assert sorted(ch.key for p in pages for ch in p) == sorted(keys)
        assert not any(ch.deleted for p in pages for ch in p)
        assert first.delta_link is not None
        assert first.delta_link.startswith(f"{emulator.base_url}/accounts?$select=")
        assert "$deltatoken=" in first.delta_link

        # Another client creates, changes and deletes; the delta link returns exactly that.
        emulator.store.upsert("accounts", keys[0], Changes(values={"name": "renamed"}))
        emulator.store.delete("accounts", keys[1])
        added = emulator.store.create("accounts", Changes(values={"name": "added"}))
        later = accounts.read_changes(first.delta_link)
        changes = list(later)
        assert [(ch.key, ch.deleted) for ch in changes] == [
            (keys[0], False), (added["accountid"], False), (keys[1], True)]
        assert changes[0].record is not None and changes[0].record["name"] == "renamed"
        assert set(changes[0].record) == {"@odata.etag", "accountid", "name"}
        assert later.delta_link is not None and later.delta_link != first.delta_link

        # Nothing changed since: no change, and a new delta link.
        quiet = accounts.read_changes(later.delta_link)
        assert list(quiet) == [] and quiet.delta_link


def test_a_replica_follows_the_emulator(emulator: EmulatorServer) -> None:
    keys = seed_accounts(emulator, 7, marker())
    with client_for(emulator, change_tracking="true", page_size=3) as client:
        accounts = client.entity_set("accounts", "accountid")
        feed = accounts.read_changes(select=["name", "description"])
        replica: dict[str, dict[str, Any]] = {}
        apply(replica, list(feed))
        for n, key in enumerate(keys):
            if n % 3 == 0:
                emulator.store.delete("accounts", key)
            else:
                emulator.store.upsert("accounts", key, Changes(values={"name": f"v{n}"}))
            emulator.store.create("accounts", Changes(values={"name": f"new {n}"}))
        feed = accounts.read_changes(feed.delta_link)
        apply(replica, list(feed))
        stored = {r["accountid"]: r["name"] for r in emulator.store.scan("accounts", None)}
        assert {k: r["name"] for k, r in replica.items()} == stored


def test_an_expired_delta_link_raises_remote_delta_expired(emulator: EmulatorServer) -> None:
    seed_accounts(emulator, 2, marker())
    with client_for(emulator, change_tracking="true") as client:
        accounts = client.entity_set("accounts", "accountid")
        feed = accounts.read_changes()
        list(feed)
        emulator.store.expire_change_tokens()
        with pytest.raises(RemoteDeltaExpired) as info:
            list(accounts.read_changes(feed.delta_link))
        assert info.value.status == 410 and info.value.code == "0x80044352"
        # The fallback: read everything again without a delta link, and go on from there.
        again = accounts.read_changes()
        assert len(list(again)) == 2
        assert list(accounts.read_changes(again.delta_link)) == []
