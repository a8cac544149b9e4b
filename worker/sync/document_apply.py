"""``crmsync mappings export`` and ``apply``: the mapping document against the database.

Apply works in one transaction: it writes the document, then runs ``crmsync check``'s own
rules (worker/sync/check.py) on what the transaction now holds, and commits only when no
mapping has a problem (never with ``--dry-run``). The check's queries open their own
connections from an engine; here that engine hands out the one connection that holds the
open transaction (``_held_engine``), so the check sees the document's mappings before
anyone else does. Rules that need the CRM (``$metadata``) are left to ``crmsync check``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from worker.db.engine import describe_db_error, translate_errors
from worker.errors import ConfigurationError, CrmsyncError
from worker.remote.client import ODataClient
from worker.sync import capture, documents
from worker.sync import couplings as coupling_store
from worker.sync import mappings as mapping_store
from worker.sync.check import check_mapping
from worker.sync.clients import Clients
from worker.sync.document_plan import CAPTURE_COLUMNS, Change, Plan, plan
from worker.sync.documents import DocumentInvalid, MappingDoc
from worker.sync.local import Reflections
from worker.sync.metadata import EntitySetInfo
from worker.sync.model import TableMapping
from worker.sync.order import topological_order

_SAVEPOINT = "crmsync_document"


def export(engine: Engine, names: Sequence[str] | None = None, *,
           entries: bool = False) -> str:
    """The stored mappings (all, or ``names``) as a TOML mapping document."""
    with translate_errors(), engine.connect() as conn:
        docs = mapping_store.read_documents(conn, names or None, entries=entries)
    return documents.render(docs)


@dataclass
class Outcome:
    """What ``apply`` found: the plan (applied unless a dry run) and notes that do not
    block (a mapping that will create nothing, couplings that refer to an old key)."""

    plan: Plan
    applied: bool
    notes: list[str] = field(default_factory=list)


def apply(engine: Engine, text: str, *, dry_run: bool = False, prune: bool = False) -> Outcome:
    """Validate the whole document and apply it in one transaction; DocumentInvalid lists
    every problem (document path first) and nothing is written."""
    docs = documents.parse(text)
    with _held_engine(engine) as (held, proxy), translate_errors(), held.connect() as conn:
        conn.execute(sa.text(
            "SELECT pg_advisory_xact_lock(hashtext('crmsync.mappings_apply'))"))
        current = mapping_store.read_documents(conn, entries=True)
        _check_references(docs, current, prune)
        changes = plan(current, docs, prune=prune)
        moved = _capture_moves(conn, changes)
        _apply(conn, changes, moved)
        proxy.arm()
        problems = _check(held, docs)
        if problems:
            raise DocumentInvalid(problems)
        notes = _notes(held, conn, docs, changes)
        applied = not dry_run and not changes.empty
        proxy.finish(commit=applied)
        return Outcome(changes, applied, notes)


def _apply(conn: Connection, changes: Plan, moved: dict[str, TableMapping]) -> None:
    try:
        mapping_store.apply_plan(conn, changes)
        for name, old in moved.items():
            # The triggers log the old key of the old table: they move with the mapping.
            capture.remove(conn, old)
            new = mapping_store.load_in(conn, name)
            if new.enabled and new.change_capture == "trigger":
                capture.install(conn, new)
    except mapping_store.ChangeRefused as exc:
        raise DocumentInvalid([(_change_path(exc.change), describe_db_error(exc.error))]) \
            from exc
    except sa.exc.DBAPIError as exc:
        raise DocumentInvalid([("document", describe_db_error(exc))]) from exc
    except CrmsyncError as exc:
        raise DocumentInvalid([("document", str(exc))]) from exc


def _change_path(change: Change) -> str:
    """Where in the document a refused change comes from."""
    path = f"mappings.{change.mapping}"
    if change.kind == "dependency":
        return f"{path}.depends_on"
    if change.kind in ("field", "entry") and change.op != "-":
        return f"{path}.{change.label.split(' ', 1)[0]}"
    return path


def _check_references(docs: Sequence[MappingDoc], current: Sequence[MappingDoc],
                      prune: bool) -> None:
    """Dependencies and lookups must name a mapping of the document or one that stays."""
    known = {d.name for d in docs} | (set() if prune else {d.name for d in current})
    problems: list[tuple[str, str]] = []
    for doc in docs:
        for n, parent in enumerate(doc.depends_on):
            if parent not in known:
                problems.append((f"mappings.{doc.name}.depends_on[{n}]",
                                 f"no mapping {parent!r} in the document or the database"))
        for n, f in enumerate(doc.fields):
            if f["lookup_mapping"] is not None and f["lookup_mapping"] not in known:
                problems.append((f"mappings.{doc.name}.fields[{n}].lookup_mapping",
                                 f"no mapping {f['lookup_mapping']!r} in the document or the "
                                 "database"))
    problems += _cycle(docs, current, prune)
    if problems:
        raise DocumentInvalid(problems)


def _cycle(docs: Sequence[MappingDoc], current: Sequence[MappingDoc],
           prune: bool) -> list[tuple[str, str]]:
    """A dependency cycle among the document's and the remaining stored mappings."""
    graph = {} if prune else {d.name: set(d.depends_on) for d in current}
    graph.update({d.name: set(d.depends_on) for d in docs})
    try:
        topological_order(graph)
    except ConfigurationError as exc:
        named = str(exc).rsplit(": ", 1)[-1].split(" -> ")
        first = next((d.name for d in docs if d.name in named), named[0])
        return [(f"mappings.{first}.depends_on", str(exc))]
    return []


def _capture_moves(conn: Connection, changes: Plan) -> dict[str, TableMapping]:
    """Mappings whose table, key or capture mode changes while their triggers are in place,
    with the mapping as it was (to remove its triggers)."""
    moved: dict[str, TableMapping] = {}
    for c in changes.changes:
        if c.kind == "mapping" and c.op == "~" and any(
                name in CAPTURE_COLUMNS for name, _, _ in c.differences):
            old = mapping_store.load_in(conn, c.mapping)
            if old.change_capture == "trigger" and mapping_store.triggers_installed(conn, old.name):
                moved[c.mapping] = old
    return moved


_NOT_ASKED = "the CRM is not asked by mappings apply"


class _OfflineClients(Clients):
    """No CRM is asked during apply: the remote half of the check is ``crmsync check``'s."""

    def get(self, name: str) -> ODataClient:
        raise ConfigurationError(_NOT_ASKED)

    def metadata(self, name: str) -> dict[str, EntitySetInfo]:
        raise ConfigurationError(_NOT_ASKED)


def _check(held: Engine, docs: Sequence[MappingDoc]) -> list[tuple[str, str]]:
    """``crmsync check``'s rules that need no CRM, on every enabled mapping of the
    document, as (document path, message)."""
    problems = []
    clients = _OfflineClients()
    tables = Reflections()  # of the uncommitted state: kept for this check alone
    for doc in docs:
        if doc.columns["enabled"]:
            problems += [(f"mappings.{doc.name}.{_path(doc, p.where)}", p.message)
                         for p in check_mapping(held, clients, doc.name, tables=tables)
                         if _NOT_ASKED not in p.message]
    return problems


def _path(doc: MappingDoc, where: str) -> str:
    """A check's 'field a <-> b' as the document's fields[n]."""
    for n, f in enumerate(doc.fields):
        label = (f"field {f['local_column'] or '(constant)'} <-> "
                 f"{f['remote_property'] or '(constant)'}")
        if where == label:
            return f"fields[{n}]"
    return where


def _notes(held: Engine, conn: Connection, docs: Sequence[MappingDoc],
           changes: Plan) -> list[str]:
    named = {f"mapping {doc.name} " for doc in docs}
    notes = [n for n in mapping_store.creating_nothing(held)
             if any(name in n for name in named)]
    for c in changes.changes:
        if c.kind == "mapping" and c.op == "~" and any(
                name in ("local_key", "local_table") for name, _, _ in c.differences):
            n = coupling_store.count(conn, c.mapping)
            if n:
                notes.append(f"note: mapping {c.mapping}: its {n} couplings name records by "
                             "the old key; remove them (crmsync uncouple) and couple again")
    return notes


@contextlib.contextmanager
def _held_engine(engine: Engine) -> Iterator[tuple[Engine, _HeldConnection]]:
    """An engine whose every connection is one database connection in one transaction, and
    that connection's proxy (``arm`` after the writes, ``finish`` to end it)."""
    raw = engine.raw_connection()
    held = _HeldConnection(raw.driver_connection)
    # use_native_hstore=False: the dialect would hand the proxy to psycopg's TypeInfo.
    scratch = sa.create_engine(engine.url, poolclass=StaticPool, creator=lambda: held,
                               pool_reset_on_return=None, use_native_hstore=False)
    try:
        yield scratch, held
    finally:
        held.finish(commit=False)
        scratch.dispose()
        raw.close()


class _HeldConnection:
    """A DBAPI connection proxy. Its users' ``commit`` keeps the transaction open and their
    ``rollback`` returns to the savepoint taken after the document was written (``arm``),
    so a check query that fails cannot undo the document; only ``finish`` ends it."""

    def __init__(self, real: Any) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_state", "open")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real, name, value)

    def arm(self) -> None:
        with self._real.cursor() as cur:
            cur.execute(f"SAVEPOINT {_SAVEPOINT}")
        object.__setattr__(self, "_state", "armed")

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        if self._state == "open":
            self._real.rollback()
        elif self._state == "armed":
            with self._real.cursor() as cur:
                cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")

    def close(self) -> None:
        return None

    def finish(self, *, commit: bool) -> None:
        if self._state == "ended":
            return
        object.__setattr__(self, "_state", "ended")
        if commit:
            self._real.commit()
        else:
            self._real.rollback()
