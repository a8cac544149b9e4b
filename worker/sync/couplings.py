"""Every query on ``crmsync.couplings``: pairs of local and remote records, the snapshot of
their values at the last sync, and the per-direction results that drive retries and skips."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import text_array, translate_errors
from worker.sync.model import Coupling, CouplingState, Direction


def _suffix(direction: Direction) -> str:
    return "to" if direction is Direction.TO_INTEGRATION else "from"


def by_local_ids(conn: Connection, mapping: str, ids: Sequence[str]) -> dict[str, Coupling]:
    if not ids:
        return {}
    rows = conn.execute(sa.text(
        "SELECT * FROM crmsync.couplings "
        "WHERE mapping_name = :m AND local_id = ANY(CAST(:ids AS text[]))"),
        {"m": mapping, "ids": text_array(ids)}).mappings()
    return {r["local_id"]: Coupling.from_row(r) for r in rows}


def by_remote_ids(conn: Connection, mapping: str, ids: Sequence[str]) -> dict[str, Coupling]:
    if not ids:
        return {}
    rows = conn.execute(sa.text(
        "SELECT * FROM crmsync.couplings "
        "WHERE mapping_name = :m AND remote_id = ANY(CAST(:ids AS text[]))"),
        {"m": mapping, "ids": text_array(ids)}).mappings()
    return {r["remote_id"]: Coupling.from_row(r) for r in rows}


def echoes(conn: Connection, mapping: str, versions: Mapping[str, str | None]) -> set[str]:
    """Of these remote ids (with the version the service gave), those whose coupling
    already holds that version from a successful sync: crmsync's own writes read back.
    No snapshot is read (see from_remote's thin read)."""
    known = {rid: v for rid, v in versions.items() if v is not None}
    if not known:
        return set()
    # Probed by the (mapping, remote id) index, as by_remote_ids; the versions compared
    # here (a join with the ids as a set would be planned blind to their number).
    rows = conn.execute(sa.text(
        """
        SELECT remote_id, remote_version FROM crmsync.couplings
         WHERE mapping_name = :m AND remote_id = ANY(CAST(:ids AS text[]))
           AND state = 'coupled' AND last_result_from IS DISTINCT FROM 'failure'
        """), {"m": mapping, "ids": text_array(known)})
    return {rid for rid, version in rows if version is not None and known.get(rid) == version}


def to_retry(conn: Connection, mapping: str, direction: Direction) -> list[Coupling]:
    """Couplings whose last result in this direction failed (and are not skipped), and
    creates of this direction still in flight, and writes whose outcome is not known: a pass
    handles them first."""
    creating = (CouplingState.CREATING_REMOTE if direction is Direction.TO_INTEGRATION
                else CouplingState.CREATING_LOCAL)
    # Two arms, each answered by its partial index (couplings_to_retry, whose predicate
    # the first repeats word for word so the planner sees it implied; couplings_pending):
    # one OR over both would scan every coupling of the mapping, each run.
    rows = conn.execute(sa.text(
        f"""
        SELECT * FROM crmsync.couplings WHERE id IN (
            SELECT id FROM crmsync.couplings
             WHERE mapping_name = :m AND NOT skipped
               AND (last_result_to = 'failure' OR last_result_from = 'failure'
                    OR state <> 'coupled')
               AND (last_result_{_suffix(direction)} = 'failure' OR state = :creating)
            UNION ALL
            SELECT id FROM crmsync.couplings
             WHERE mapping_name = :m AND NOT skipped AND pending_values IS NOT NULL)
         ORDER BY id
        """), {"m": mapping, "creating": creating.value}).mappings()
    return [Coupling.from_row(r) for r in rows]


def settled_after(conn: Connection, mapping: str, after_id: int, limit: int) -> list[Coupling]:
    """The next ``limit`` couplings by id after ``after_id`` that nothing is about to carry:
    coupled, not skipped, no write in flight, no failure waiting for its retry (what
    ``crmsync audit`` compares, one page at a time)."""
    rows = conn.execute(sa.text(
        """
        SELECT * FROM crmsync.couplings
         WHERE mapping_name = :m AND id > :after AND state = 'coupled' AND NOT skipped
           AND pending_values IS NULL AND last_result_to IS DISTINCT FROM 'failure'
           AND last_result_from IS DISTINCT FROM 'failure'
         ORDER BY id LIMIT :n
        """), {"m": mapping, "after": after_id, "n": limit}).mappings()
    return [Coupling.from_row(r) for r in rows]


def mark_for_retry(conn: Connection, coupling_ids: Sequence[int], direction: Direction,
                   message: str) -> int:
    """Put couplings on the retry list of the pass of ``direction`` (read by key first by
    its next run, as a failed record is), with ``message`` as their last error. A coupling
    that is skipped or failing for a reason of its own is left as it is."""
    if not coupling_ids:
        return 0
    suffix = _suffix(direction)
    return conn.execute(sa.text(
        f"""
        UPDATE crmsync.couplings
           SET last_result_{suffix} = 'failure', last_error = :message
         WHERE id = ANY(:ids) AND NOT skipped
           AND (last_error IS NULL OR last_error = :message)
        """), {"ids": list(coupling_ids), "message": message}).rowcount


def add_intent(conn: Connection, mapping: str, local_id: str, remote_id: str,
               state: CouplingState) -> int:
    """Record the id chosen for a record about to be created (committed by the caller
    before the create is sent)."""
    return int(conn.scalar(sa.text(
        "INSERT INTO crmsync.couplings (mapping_name, local_id, remote_id, state) "
        "VALUES (:m, :l, :r, :s) RETURNING id"),
        {"m": mapping, "l": local_id, "r": remote_id, "s": state.value}))


def add_intents(conn: Connection, mapping: str, intents: Sequence[tuple[str, str]],
                state: CouplingState, snapshots: Mapping[str, Any] | None = None
                ) -> NewCouplings:
    """``add_intent`` for many (local id, remote id) pairs in one statement, each with the
    values its create is about to send (``snapshots`` by local id; see
    :func:`save_intent_snapshots`). Returns the new couplings by local id (their
    ``synced_values`` the snapshots given), so the caller need not read them back."""
    if not intents:
        return NewCouplings.none()
    given = snapshots or {}
    remote_ids = dict(intents)
    rows = conn.execute(sa.text(
        "INSERT INTO crmsync.couplings (mapping_name, local_id, remote_id, state, "
        "synced_values) SELECT :m, t.l, t.r, :s, t.v "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(l text, r text, v jsonb) "
        "RETURNING id, local_id"),
        {"m": mapping, "s": state.value,
         "rows": _rows({"l": key, "r": rid, "v": given.get(key)} for key, rid in intents)})
    return NewCouplings(mapping, state, remote_ids, given,
                        {local_id: coupling_id for coupling_id, local_id in rows})


class NewCouplings(Mapping[str, Coupling]):
    """The couplings ``add_intents`` inserted, by local id. A new row holds what was
    inserted and the columns' defaults (no result, no version, not skipped): only its id
    was read back, and its Coupling is made when asked for (most records of a chunk only
    need the id)."""

    def __init__(self, mapping: str, state: CouplingState, remote_ids: Mapping[str, str],
                 snapshots: Mapping[str, Any], ids: dict[str, int]) -> None:
        self.mapping, self.state = mapping, state
        self.remote_ids, self.snapshots = remote_ids, snapshots
        self.ids = ids  # coupling id by local id

    @classmethod
    def none(cls) -> NewCouplings:
        return cls("", CouplingState.CREATING_REMOTE, {}, {}, {})

    def __getitem__(self, local_id: str) -> Coupling:
        return Coupling(
            id=self.ids[local_id], mapping_name=self.mapping, local_id=local_id,
            remote_id=self.remote_ids[local_id], state=self.state, remote_version=None,
            remote_modified_on=None, synced_values=self.snapshots.get(local_id),
            last_result_to=None, last_result_from=None, last_error=None, skipped=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def save_intent_snapshots(conn: Connection, mapping: str,
                          snapshots: dict[str, dict[str, Any]]) -> set[str]:
    """The values about to be sent by the creates of records in flight (by local id). Not
    a synced snapshot: used only when a later pass finds the record in the service, to
    tell which fields changed on which side since. One statement for the chunk; returns
    the local ids whose snapshot was stored (a coupling no longer in flight keeps its
    own)."""
    if not snapshots:
        return set()
    return set(conn.execute(sa.text(
        """
        UPDATE crmsync.couplings c SET synced_values = t.s
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(l text, s jsonb)
         WHERE c.mapping_name = :m AND c.local_id = t.l AND c.state = 'creating_remote'
        RETURNING c.local_id
        """), {"m": mapping, "rows": _rows({"l": k, "s": s} for k, s in snapshots.items())}
    ).scalars())


def save_pending(conn: Connection, pending: Mapping[int, dict[str, Any]],
                 recognised: Mapping[int, Mapping[str, Any] | None] | None = None) -> set[int]:
    """The snapshots the chunk's updates leave when the service applies them (by coupling
    id), committed before they are sent; the recorded outcome clears them. ``recognised``:
    the snapshot to keep as synced for couplings whose earlier pending write the pass found
    in the CRM (``decide.settled``) — stored with the new pending values, which replace the
    earlier ones, so that write stays crmsync's own when this one's outcome is lost too.
    One statement; returns the ids of the couplings it stored pending values on."""
    if not pending:
        return set()
    kept = recognised or {}
    return set(conn.execute(sa.text(
        """
        UPDATE crmsync.couplings c SET pending_values = t.p,
               synced_values = CASE WHEN t.settled THEN t.s ELSE c.synced_values END
          FROM jsonb_to_recordset(CAST(:rows AS jsonb))
               AS t(id bigint, p jsonb, settled boolean, s jsonb)
         WHERE c.id = t.id
        RETURNING c.id
        """), {"rows": _rows({"id": k, "p": v, "settled": k in kept, "s": kept.get(k)}
                             for k, v in pending.items())}).scalars())


def add_coupled(conn: Connection, mapping: str, local_id: str, remote_id: str) -> int:
    return add_intent(conn, mapping, local_id, remote_id, CouplingState.COUPLED)


# The column of a coupling that holds the snapshot a write's intent committed.
Kept = Literal["synced_values", "pending_values"]


@dataclass(frozen=True)
class Success:
    """A record written or found in sync: its coupling becomes coupled, with this snapshot
    as its synced values, or (``snapshot`` None, ``kept`` set) with the snapshot its write's
    intent committed: ``kept`` is the column holding it (``synced_values`` of a create in
    flight, ``pending_values`` of an update), which saves encoding and sending it again."""

    coupling_id: int
    remote_version: str | None
    remote_modified_on: datetime | None
    snapshot: dict[str, Any] | None
    kept: Kept | None = None


def record_successes(conn: Connection, direction: Direction, job_id: int,
                     successes: Sequence[Success]) -> None:
    if not successes:
        return
    suffix = _suffix(direction)
    # One set-based statement per chunk, its rows one JSON parameter: not one statement
    # per record, and no per-element array escaping.
    conn.execute(sa.text(
        f"""
        UPDATE crmsync.couplings c
           SET state = 'coupled',
               remote_version = COALESCE(t.version, c.remote_version),
               remote_modified_on = COALESCE(t.modified, c.remote_modified_on),
               synced_values = CASE t.kept WHEN 'synced_values' THEN c.synced_values
                                           WHEN 'pending_values' THEN c.pending_values
                                           ELSE t.snapshot END,
               last_synced_at = now(),
               last_result_{suffix} = 'success', last_job_{suffix} = :job,
               last_error = NULL, skipped = false, pending_values = NULL
          FROM jsonb_to_recordset(CAST(:rows AS jsonb))
               AS t(id bigint, version text, modified timestamptz, snapshot jsonb, kept text)
         WHERE c.id = t.id
        """), {"job": job_id, "rows": _rows(
            {"id": s.coupling_id, "version": s.remote_version,
             "modified": s.remote_modified_on.isoformat() if s.remote_modified_on else None,
             "snapshot": s.snapshot, "kept": s.kept} for s in successes)})


def _rows(rows: Iterable[dict[str, Any]]) -> str:
    """Rows for ``jsonb_to_recordset``: one JSON array, encoded once (by orjson, about ten
    times faster than the json module here; anything but text, numbers, booleans and
    containers as its ``str()``, as the json module's ``default=str`` gives)."""
    return _json(list(rows))


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=_AS_STR).decode()
    except TypeError:  # an integer beyond 64 bits, a lone surrogate
        return json.dumps(value, default=str)


_AS_STR = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
           | orjson.OPT_NON_STR_KEYS)


def record_failure(conn: Connection, coupling: Coupling, direction: Direction, job_id: int,
                   message: str, *, may_skip: bool = True) -> bool:
    """Mark the coupling failed in this direction. The same error as last time in a row
    marks it skipped (excluded until ``crmsync retry-skipped``), unless ``may_skip`` is
    false (a failure that may pass by itself). Returns skipped."""
    suffix = _suffix(direction)
    skipped = may_skip and coupling.last_result(direction) == "failure" \
        and coupling.last_error == message
    # The pending values go (this write was answered); a coupling decided with pending
    # values carries the snapshot that recognised them in the CRM (``decide.settled``), and
    # that stays, so the earlier write is not taken for a CRM user's edit next time.
    recognised = coupling.pending_values is not None
    conn.execute(sa.text(
        f"""
        UPDATE crmsync.couplings
           SET last_result_{suffix} = 'failure', last_job_{suffix} = :job,
               last_error = :message, skipped = :skipped, pending_values = NULL,
               synced_values = CASE WHEN :recognised THEN CAST(:synced AS jsonb)
                                    ELSE synced_values END
         WHERE id = :id
        """), {"id": coupling.id, "job": job_id, "message": message, "skipped": skipped,
               "recognised": recognised,
               "synced": _json(coupling.synced_values) if recognised else None})
    return skipped


def delete(conn: Connection, coupling_ids: Iterable[int]) -> int:
    ids = list(coupling_ids)
    if not ids:
        return 0
    return conn.execute(sa.text("DELETE FROM crmsync.couplings WHERE id = ANY(:ids)"),
                        {"ids": ids}).rowcount


def set_remote_id(conn: Connection, coupling_id: int, remote_id: str,
                  state: CouplingState) -> None:
    conn.execute(sa.text(
        "UPDATE crmsync.couplings SET remote_id = :r, state = :s, synced_values = NULL "
        "WHERE id = :id"), {"id": coupling_id, "r": remote_id, "s": state.value})


def coupled_remote_ids(conn: Connection, mapping: str, local_ids: Sequence[str]) -> dict[str, str]:
    if not local_ids:
        return {}
    return dict(conn.execute(sa.text(
        "SELECT local_id, remote_id FROM crmsync.couplings "
        "WHERE mapping_name = :m AND state = 'coupled' AND local_id = ANY(CAST(:ids AS text[]))"),
        {"m": mapping, "ids": text_array(local_ids)}).all())


def coupled_local_ids(conn: Connection, mapping: str, remote_ids: Sequence[str]
                      ) -> dict[str, str]:
    """remote id (as given) → local id, for coupled records; GUIDs match in any case."""
    if not remote_ids:
        return {}
    given = {r.lower(): r for r in remote_ids}
    rows = conn.execute(sa.text(
        "SELECT remote_id, local_id FROM crmsync.couplings "
        "WHERE mapping_name = :m AND state = 'coupled' "
        "AND remote_id = ANY(CAST(:ids AS text[]))"),
        {"m": mapping, "ids": text_array(sorted(set(remote_ids) | set(given)))}).all()
    return {given.get(r.lower(), r): local_id for r, local_id in rows}


# -- user actions ------------------------------------------------------------------------

def retry_skipped(engine: Engine, mapping: str | None = None,
                  local_id: str | None = None) -> int:
    """Let skipped couplings (of a mapping, of one record) be synchronized again."""
    with translate_errors(), engine.begin() as conn:
        return conn.execute(sa.text(
            "UPDATE crmsync.couplings SET skipped = false "
            "WHERE skipped AND (CAST(:m AS text) IS NULL OR mapping_name = :m) "
            "AND (CAST(:l AS text) IS NULL OR local_id = :l)"),
            {"m": mapping, "l": local_id}).rowcount


def uncouple(engine: Engine, mapping: str, local_ids: Sequence[str] | None = None) -> int:
    with translate_errors(), engine.begin() as conn:
        return conn.execute(sa.text(
            "DELETE FROM crmsync.couplings WHERE mapping_name = :m "
            "AND (CAST(:ids AS text[]) IS NULL OR local_id = ANY(:ids))"),
            {"m": mapping, "ids": list(local_ids) if local_ids else None}).rowcount


def clear_stamps(engine: Engine, mappings: Sequence[str]) -> None:
    """Unconditional full synchronization: forget what was synced, so every coupled record
    counts as changed on the next pass."""
    with translate_errors(), engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE crmsync.couplings SET synced_values = NULL, remote_version = NULL, "
            "local_version = NULL WHERE mapping_name = ANY(:m)"), {"m": list(mappings)})


def all_coupled_remote_ids(conn: Connection, mapping: str) -> list[str]:
    """The CRM ids of the mapping's completed couplings."""
    return list(conn.execute(sa.text(
        "SELECT remote_id FROM crmsync.couplings WHERE mapping_name = :m "
        "AND state = 'coupled'"), {"m": mapping}).scalars())


def recent_local_ids(conn: Connection, mapping: str, limit: int = 20) -> list[str]:
    """Local ids of the mapping's newest completed couplings."""
    return list(conn.scalars(sa.text(
        "SELECT local_id FROM crmsync.couplings WHERE mapping_name = :m "
        "AND state = 'coupled' ORDER BY id DESC LIMIT :l"), {"m": mapping, "l": limit}))


def coupled_ids(conn: Connection, mapping: str) -> tuple[set[str], set[str]]:
    """(local ids, lower-case CRM ids) of every coupling of the mapping."""
    rows = conn.execute(sa.text(
        "SELECT local_id, lower(remote_id) FROM crmsync.couplings WHERE mapping_name = :m"),
        {"m": mapping}).all()
    return {r[0] for r in rows}, {r[1] for r in rows}


def count(conn: Connection, mapping: str) -> int:
    return int(conn.scalar(sa.text(
        "SELECT count(*) FROM crmsync.couplings WHERE mapping_name = :n"),
        {"n": mapping}) or 0)



def analyze(engine: Engine) -> bool:
    """ANALYZE what the planner weighs of the couplings (the columns of their keys and
    state) after a pass added many: an initial sync grows a mapping's couplings from none
    in minutes, faster than autovacuum comes by (or at all, where it is off), and with the
    statistics of a mapping that had none, each chunk's lookup of its couplings by key is
    planned as a scan of all of them (O(n) a chunk). Another worker analyzing meanwhile is
    left to it (False); a role that does not own the table only gets the server's warning."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '100ms'"))
            # A sample of 3,000 rows (not 30,000) is enough to tell the planner how many
            # couplings a mapping has and that keys are unique, at a tenth of the cost;
            # autovacuum's own ANALYZE later takes its usual sample.
            conn.execute(sa.text("SET LOCAL default_statistics_target = 10"))
            conn.execute(sa.text(
                "ANALYZE crmsync.couplings (mapping_name, local_id, remote_id, state)"))
    except sa.exc.OperationalError as exc:
        if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise
        return False
    return True
