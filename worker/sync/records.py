"""Actions on one record, as NAV's "Synchronize Now" and "Couple to…": find the record a
user names (local key, business key such as a customer number, or remote id), couple it
to a chosen CRM record, and synchronize it now."""

from __future__ import annotations

from collections import Counter
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.errors import ConfigurationError
from worker.sync import couplings as coupling_store
from worker.sync import joblog, mappings
from worker.sync.clients import Clients
from worker.sync.local import LocalTable
from worker.sync.model import Direction, TableMapping


class RecordNotFound(ConfigurationError):
    """The record a user named is not there (or the name is ambiguous)."""


@dataclass(frozen=True)
class RecordRef:
    """A record of a mapping as found: its local key and its coupled remote id (either
    may be None), and how the user named it."""

    mapping: str
    local_id: str | None
    remote_id: str | None
    named: str


def find(engine: Engine, name: str, key: str) -> RecordRef:
    """The record ``key`` names in mapping ``name``: a local key, a value of the mapping's
    business key column, or the remote id of a coupled record."""
    mapping = mappings.load(engine, name)
    table = LocalTable(engine, mapping.local_table, mapping.local_key, mapping.name)
    with translate_errors(), engine.connect() as conn:
        local_ids = _local_ids(conn, table, mapping, key)
        if len(local_ids) > 1:
            raise RecordNotFound(f"mapping {name}: {key!r} names {len(local_ids)} records of "
                                 f"{mapping.local_table}; name one by its {mapping.local_key}")
        if local_ids:
            coupling = coupling_store.by_local_ids(conn, name, local_ids).get(local_ids[0])
            return RecordRef(name, local_ids[0], coupling.remote_id if coupling else None, key)
        by_remote = coupling_store.by_remote_ids(conn, name, [key, key.lower()])
        for coupling in by_remote.values():
            return RecordRef(name, coupling.local_id, coupling.remote_id, key)
    shown = f"{mapping.local_key}" + (f" or {mapping.business_key_column}"
                                      if mapping.business_key_column else "")
    raise RecordNotFound(f"mapping {name}: no record {key!r} in {mapping.local_table} "
                         f"(by {shown}) and no coupling to a CRM record {key!r}")


def _local_ids(conn: Connection, table: LocalTable, mapping: TableMapping, key: str) -> list[str]:
    found: list[str] = []
    with suppress(ConfigurationError):  # not a value of the key's type: a business key?
        found.extend(table.fetch(conn, [key]))
    if not found and mapping.business_key_column:
        matches = table.find_by(conn, mapping.business_key_column, [key], True)
        found.extend(matches.get(key, []))
    return list(dict.fromkeys(found))


def couple(engine: Engine, clients: Clients, name: str, key: str, remote_id: str) -> RecordRef:
    """Couple the local record ``key`` to the CRM record ``remote_id`` (NAV's "Couple
    to…"), logged as a coupling job. Both must exist and neither be coupled elsewhere. The
    coupling starts with no snapshot: the next pass compares every field (the ERP's values
    win unless the record is then synchronized with the CRM's taken)."""
    ref = find(engine, name, key)
    if ref.local_id is None:
        raise RecordNotFound(f"mapping {name}: no local record {key!r}")
    mapping = mappings.load(engine, name)
    if ref.remote_id is not None:
        if ref.remote_id.lower() == remote_id.lower():
            return ref
        raise ConfigurationError(
            f"mapping {name}: {key!r} is already coupled to {mapping.entity_set}"
            f"({ref.remote_id}); run `crmsync uncouple {name} --local-id {ref.local_id}` first")
    client = clients.get(mapping.connection_name)
    remote = client.entity_set(mapping.entity_set, mapping.remote_key,
                               mapping.remote_modified_on)
    if remote.get(remote_id, select=[mapping.remote_key]) is None:
        raise RecordNotFound(f"mapping {name}: the CRM has no {mapping.entity_set}({remote_id})")
    with translate_errors(), engine.begin() as conn:
        taken = coupling_store.by_remote_ids(conn, name, [remote_id, remote_id.lower()])
        if taken:
            other = next(iter(taken.values()))
            raise ConfigurationError(
                f"mapping {name}: {mapping.entity_set}({remote_id}) is already coupled to "
                f"local record {other.local_id}")
        coupling_store.add_coupled(conn, name, ref.local_id, remote_id)
    job = joblog.start(engine, name, Direction.TO_INTEGRATION, None, job_type="coupling")
    with translate_errors(), engine.begin() as conn:
        joblog.add(conn, job, Counter(coupled=1))
    joblog.finish(engine, job, f"{key} coupled to {mapping.entity_set}({remote_id})")
    return RecordRef(name, ref.local_id, remote_id, key)
