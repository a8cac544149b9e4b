"""Local change capture.

Default ('trigger' mode): statement-level triggers on the mapped table write each changed
key to ``crmsync.local_changes`` with the writer's transaction id. A pass takes
``pg_current_snapshot()`` and reads the changes visible in it but not in the previous pass's
snapshot. A writer that commits after a pass began is invisible to that pass and visible to
the next one, so it is never skipped (the classic timestamp-cursor miss), and a long-running
transaction elsewhere delays nobody's changes but its own.

'modified_at' mode, for tables where triggers are not allowed: the table's modified-at
column is read inclusively with an overlap and deduplicated by the couplings' snapshots. It
is weaker: it cannot see deletes, and it trusts the writer's clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import translate_errors
from worker.sync import mappings as mapping_store
from worker.sync.local import LocalTable
from worker.sync.model import Marks, TableMapping

TRIGGERS = {
    "insert": "AFTER INSERT ON {t} REFERENCING NEW TABLE AS new_rows",
    "update": "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "AFTER DELETE ON {t} REFERENCING OLD TABLE AS old_rows",
}
MODIFIED_AT_OVERLAP = timedelta(seconds=1)


def _quoted(conn: Connection, qualified: str) -> str:
    schema, _, table = qualified.partition(".")
    prep = conn.dialect.identifier_preparer
    return f"{prep.quote(schema)}.{prep.quote(table)}"


_TRIGGER_COUNT = """
        SELECT count(*) FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = :s AND c.relname = :t AND t.tgname LIKE 'crmsync_capture_%'
           AND (CAST(:k AS text) IS NULL
                OR t.tgargs = convert_to(CAST(:k AS text), 'UTF8') || '\\x00'::bytea)"""


def queue_updates(conn: Connection, table_name: str, keys: list[str]) -> None:
    """Queue rows as changed, as the triggers would: crmsync's own writes are not captured,
    so a value the table filled in itself (a number series, a default) is sent to the CRM
    by the next local→remote pass only when queued here."""
    if keys:
        conn.execute(sa.text(
            "INSERT INTO crmsync.local_changes (table_name, row_key, operation) "
            "SELECT :t, k, 'U' FROM unnest(CAST(:ks AS text[])) AS k"),
            {"t": table_name, "ks": keys})


def triggers_present(conn: Connection, qualified: str, key: str | None = None) -> bool:
    """Whether the capture triggers are on the table (and, given ``key``, log that key
    column: a mapping whose local_key changed gets its triggers made again)."""
    schema, _, table = qualified.partition(".")
    found = conn.scalar(sa.text(_TRIGGER_COUNT), {"s": schema, "t": table, "k": key})
    return found == len(TRIGGERS)


def install(conn: Connection, mapping: TableMapping, table: LocalTable | None = None) -> bool:
    """Create the capture triggers on the mapping's table (idempotent; ``table``: the
    mapping's table as a pass reflected and validated it, else it is reflected here).
    Returns True when they were missing: changes made before are unknown, so the mapping's
    local watermark is cleared and the next pass scans the whole table."""
    if triggers_present(conn, mapping.local_table, mapping.local_key):
        mapping_store.set_triggers_installed(conn, mapping.name, True)
        return False
    if table is None:  # validates
        LocalTable(conn, mapping.local_table, mapping.local_key, mapping.name)
    quoted = _quoted(conn, mapping.local_table)
    key = mapping.local_key.replace("'", "''")
    for event, clause in TRIGGERS.items():
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS crmsync_capture_{event} ON {quoted}"))
        conn.execute(sa.text(
            f"CREATE TRIGGER crmsync_capture_{event} {clause.format(t=quoted)} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION crmsync.capture_local_changes('{key}')"))
    mapping_store.clear_local_marks(conn, mapping.local_table)
    mapping_store.set_triggers_installed(conn, mapping.name, True)
    return True


def remove(conn: Connection, mapping: TableMapping) -> bool:
    """Drop the capture triggers unless another enabled trigger-mode mapping still reads
    the same table. Returns True when they were dropped."""
    others = mapping_store.other_trigger_mappings(conn, mapping.local_table, mapping.name)
    mapping_store.set_triggers_installed(conn, mapping.name, False)
    if others:
        return False
    table = _quoted(conn, mapping.local_table)
    for event in TRIGGERS:
        conn.execute(sa.text(f"DROP TRIGGER IF EXISTS crmsync_capture_{event} ON {table}"))
    conn.execute(sa.text("DELETE FROM crmsync.local_changes WHERE table_name = :t"),
                 {"t": mapping.local_table})
    return True


def set_enabled(engine: Engine, mapping: TableMapping, enabled: bool) -> str:
    """Enable or disable a mapping, installing or removing its triggers (idempotent)."""
    with translate_errors(), engine.begin() as conn:
        mapping_store.set_enabled(conn, mapping.name, enabled)
        if mapping.change_capture != "trigger":
            return "modified_at mode: no triggers"
        if enabled:
            return "triggers installed" if install(conn, mapping) else "triggers already present"
        return "triggers removed" if remove(conn, mapping) else "triggers kept (table shared)"


def _no_progress(conn: Connection, key: str) -> None:
    return None


@dataclass
class LocalChanges:
    """What a pass must look at on the local side (keys in order), how to record that the
    keys up to one are done (so a killed pass is resumed after it), and how to advance the
    mark at the end."""

    keys: Iterable[str]
    deleted: set[str]
    commit_mark: Callable[[Connection], None]
    full_scan: bool
    commit_progress: Callable[[Connection, str], None] = _no_progress
    resumed: bool = False  # an interrupted pass's snapshot: newer changes wait for the next
    count: int | None = None  # how many keys, when ``keys`` is a stream (counted apart)

    @property
    def size(self) -> int | None:
        """How many keys the pass will look at (its progress total)."""
        return len(self.keys) if isinstance(self.keys, list) else self.count


def collect(conn: Connection, mapping: TableMapping, marks: Marks, table: LocalTable,
            where: sa.ColumnElement[bool], *, full: bool) -> LocalChanges:
    if mapping.change_capture == "modified_at":
        return _collect_modified_at(conn, mapping, marks, table, where, full=full)
    state = _pass_state(conn, mapping)
    if not state.triggers_ok or not marks.triggers_installed:
        install(conn, mapping, table)  # a mapping enabled by plain SQL gets its triggers here
        if not state.triggers_ok:
            state = _pass_state(conn, mapping)  # the install cleared the marks
    previous, current, done, resumed = state.snapshots(full=full)

    def commit_mark(c: Connection) -> None:
        mapping_store.save_local_snapshot(c, mapping.name, current)
        _prune(c, mapping.local_table)

    def commit_progress(c: Connection, key: str) -> None:
        mapping_store.save_local_pass_progress(c, mapping.name, current, key)

    def after_done(keys: list[str]) -> list[str]:
        ordered = sorted(keys)
        return ordered if done is None else [k for k in ordered if k > done]

    def started(keys: list[str]) -> list[str]:
        """A pass with work to do records its snapshot first, so it can be resumed."""
        if keys and not resumed:
            mapping_store.save_local_pass_progress(conn, mapping.name, current, None)
        return keys

    if full or previous is None:
        # Streamed in key order (the database's, which also filters the keys done), so
        # a full pass holds one chunk of keys at a time, whatever the table's size.
        if not resumed:
            mapping_store.save_local_pass_progress(conn, mapping.name, current, None)
        return LocalChanges(table.stream_keys(conn.engine, where, after=done), set(),
                            commit_mark, True, commit_progress, resumed,
                            table.count_keys(conn, where, after=done))
    # Changes visible now and not at the previous read: committed since, whatever their
    # transaction's age. Both snapshots are explicit, so a transaction committing while this
    # query runs is left for the next read instead of being half-counted.
    rows = _changed(conn, mapping.local_table, previous, current)
    keys = started(after_done([k for k, _ in rows]))
    deleted = {k for k, op in rows if op == "D"}
    if not keys and not resumed:
        # Nothing committed since the previous snapshot: keeping it is exact (the next
        # pass's window just starts there) and costs no write.
        return LocalChanges([], set(), _no_mark, False)
    return LocalChanges(keys, deleted, commit_mark, False, commit_progress, resumed)


def _changed(conn: Connection, table: str, previous: str, current: str) -> list[Any]:
    """(key, last operation) of the changes visible in ``current`` and not in ``previous``."""
    return list(conn.execute(sa.text(
        """
        SELECT DISTINCT ON (row_key) row_key, operation
          FROM crmsync.local_changes
         WHERE table_name = :t
           AND xid >= pg_snapshot_xmin(CAST(:prev AS pg_snapshot))
           AND NOT pg_visible_in_snapshot(xid, CAST(:prev AS pg_snapshot))
           AND pg_visible_in_snapshot(xid, CAST(:cur AS pg_snapshot))
         ORDER BY row_key, id DESC
        """), {"t": table, "prev": previous, "cur": current}).all())


def peek(conn: Connection, mapping: TableMapping, marks: Marks, table: LocalTable,
         where: sa.ColumnElement[bool], *, full: bool) -> tuple[Iterable[str], set[str]]:
    """The local keys (and deleted keys) the next pass would look at, read only: nothing
    installed, no snapshot or progress saved (``crmsync sync --plan``). An interrupted pass
    is followed by a fresh one in the same run, so its keys and those committed since are
    both included."""
    if mapping.change_capture == "modified_at":
        assert mapping.local_modified_column is not None
        since = None if full or marks.local_modified_since is None \
            else marks.local_modified_since - MODIFIED_AT_OVERLAP
        found = table.keys_modified_since(conn, mapping.local_modified_column, since, where)
        return [k for k, _ in found], set()
    state = _pass_state(conn, mapping)
    previous, snapshot, done, resumed = state.snapshots(full=full)
    if full or previous is None or not (state.triggers_ok and marks.triggers_installed):
        return table.stream_keys(conn.engine, where, after=done), set()
    rows = [r for r in _changed(conn, mapping.local_table, previous, snapshot)
            if done is None or r[0] > done]
    if resumed:
        rows += _changed(conn, mapping.local_table, snapshot, state.current)
    ops = dict(rows)  # a later change of a key wins
    return sorted(ops), {k for k, op in ops.items() if op == "D"}


def _no_mark(conn: Connection) -> None:
    return None


@dataclass(frozen=True)
class _PassState:
    """What a local→remote pass starts from, read in one query."""

    triggers_ok: bool
    previous: str | None
    unfinished: str | None
    done: str | None
    current: str

    def snapshots(self, *, full: bool) -> tuple[str | None, str, str | None, bool]:
        """(previous pass's snapshot, this pass's snapshot, last key already done,
        resumed). A pass that was interrupted left its snapshot and progress: its
        successor takes both over and goes on after the last key done; a full pass starts
        over."""
        if self.unfinished is not None and not full:
            return self.previous, self.unfinished, self.done, True
        return self.previous, self.current, None, False


def _pass_state(conn: Connection, mapping: TableMapping) -> _PassState:
    schema, _, table = mapping.local_table.partition(".")
    row = mapping_store.local_pass_marks(conn, mapping.name, sa.text(_TRIGGER_COUNT),
                                         {"s": schema, "t": table, "k": mapping.local_key})
    return _PassState(row[0] == len(TRIGGERS), row[1], row[2], row[3], str(row[4]))


def _collect_modified_at(conn: Connection, mapping: TableMapping, marks: Marks,
                         table: LocalTable, where: sa.ColumnElement[bool], *,
                         full: bool) -> LocalChanges:
    assert mapping.local_modified_column is not None
    since = None if full or marks.local_modified_since is None \
        else marks.local_modified_since - MODIFIED_AT_OVERLAP
    found = table.keys_modified_since(conn, mapping.local_modified_column, since, where)
    newest = max((m for _, m in found if m is not None), default=None)

    def commit_mark(c: Connection) -> None:
        if newest is not None:
            mapping_store.save_local_modified_since(c, mapping.name, newest)

    return LocalChanges([k for k, _ in found], set(), commit_mark, since is None)


def _prune(conn: Connection, table_name: str) -> None:
    """Drop change-log rows every trigger-mode mapping of the table has read."""
    conn.execute(sa.text(
        """
        DELETE FROM crmsync.local_changes
         WHERE table_name = :t
           AND xid < CAST(CAST((SELECT min(local_watermark)
                                  FROM crmsync.integration_table_mappings
                                 WHERE local_table = :t AND change_capture = 'trigger'
                                   AND enabled) AS text) AS xid8)
        """), {"t": table_name})


def pending_change_age(conn: Connection) -> dict[str, float]:
    """Per mapping: seconds since the oldest local change that is committed, visible and
    not yet read by a pass (sync lag). A change the last pass read is not pending even when
    an old transaction elsewhere keeps the snapshot's xmin (and so the watermark) behind
    it."""
    with translate_errors():
        rows = conn.execute(sa.text(
            """
            SELECT m.name, extract(epoch FROM now() - min(c.changed_at)) AS age
              FROM crmsync.integration_table_mappings m
              JOIN crmsync.local_changes c ON c.table_name = m.local_table
             WHERE m.enabled AND m.change_capture = 'trigger'
               AND (m.local_watermark IS NULL
                    OR c.xid >= CAST(CAST(m.local_watermark AS text) AS xid8))
               AND pg_visible_in_snapshot(c.xid, pg_current_snapshot())
               AND (m.local_snapshot IS NULL
                    OR NOT pg_visible_in_snapshot(c.xid, CAST(m.local_snapshot AS pg_snapshot)))
             GROUP BY m.name
            """)).all()
    return {name: float(age or 0) for name, age in rows}
