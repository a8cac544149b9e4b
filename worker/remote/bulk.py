"""Dataverse's bulk messages: ``CreateMultiple``, ``UpdateMultiple`` and ``UpsertMultiple``
(``POST …/accounts/Microsoft.Dynamics.CRM.CreateMultiple`` with ``{"Targets": […]}``), many
records in one request and one server-side operation, with per-record results of the same
type ``$batch`` writes give (:class:`~worker.remote.batch.OperationResult`).

On a standard table a bulk message is all or nothing: one bad record refuses the whole
request. A refused request (any 4xx but 401/429, or a 5xx the service kept answering) is
therefore sent again as per-record ``$batch`` operations (``ODataClient.batch``), so that a
bad record fails alone and the others are written; the writes are idempotent (client-chosen
keys), so a record the refused request did write is found there (``already_existed``). A
request that got no usable answer (no response, throttled or credentials refused past the
retries) leaves its records' outcome **unknown** (``unknown=True``, as ``$batch`` does), and
the records of requests not sent after it too: the caller reconciles them by reading back.

A bulk response carries no record versions (``CreateMultiple`` answers only the ids,
the others 204), so after a successful request the records are read back by key
(``read_back``, one read per ``key_chunk_size`` records) to give each result its etag and
modified-on, as ``$batch`` with ``return=representation`` does.

Whether an entity set has the messages: the dialect's ``bulk_messages`` (``on``, ``off``,
or ``auto``: when ``$metadata`` declares the ``CreateMultiple`` action); a set the service
answers "does not support entities of type …" (not every standard table has the messages)
is remembered and written with ``$batch`` from then on.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from worker.errors import CrmsyncError
from worker.remote import filters, wire
from worker.remote.batch import (
    CONNECTION_ERRORS,
    Kind,
    Operation,
    OperationResult,
    connection_failure,
    parallel,
    run_batch,
)
from worker.remote.errors import RemoteError, RemoteUnavailable

if TYPE_CHECKING:
    from worker.remote.client import EntitySet, ODataClient

log = logging.getLogger(__name__)

BulkKind = Literal["create", "update", "upsert"]
MESSAGES: dict[BulkKind, str] = {"create": "CreateMultiple", "update": "UpdateMultiple",
                                 "upsert": "UpsertMultiple"}
_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
_NOT_SUPPORTED = ("does not support entities of type", "Resource not found for the segment")


@dataclass(frozen=True)
class BulkRecord:
    """One record of a bulk write: its ``key`` (client-chosen for a create), the changed
    ``values``, the caller's ``ref`` (handed back untouched) and, for an upsert by
    alternate key, ``alternate`` (``{"accountnumber": "C1"}``: then ``key`` may be None,
    and the result carries the key read back)."""

    key: str | None
    values: Mapping[str, Any] = field(default_factory=dict)
    ref: Any = None
    alternate: Mapping[str, Any] | None = None


class BulkSupport:
    """What one connection knows of the bulk messages: whether ``$metadata`` declares
    them, each set's entity type (both from the client's one ``$metadata``), and the sets
    that refused them."""

    def __init__(self, client: ODataClient) -> None:
        self.client = client
        self._warned: str | None = None  # the last unreadable $metadata warned about
        self.refused: set[str] = set()

    def supports(self, set_name: str) -> bool:
        mode = self.client.settings.dialect.bulk_messages
        if mode == "off" or set_name in self.refused:
            return False
        return mode == "on" or self._declared().declared

    def entity_type(self, entity_set: EntitySet) -> str:
        """``Microsoft.Dynamics.CRM.account`` for ``accounts``: from ``$metadata``, else by
        Dataverse's naming (the key ``accountid`` less ``id``)."""
        known = self._declared().types.get(entity_set.name)
        return known or f"Microsoft.Dynamics.CRM.{entity_set.key.removesuffix('id')}"

    def _declared(self) -> _Declared:
        try:
            return self.client.service_metadata.view(_declared)
        except (CrmsyncError, ET.ParseError) as exc:
            if str(exc) != self._warned:  # once per failure, not once per write
                self._warned = str(exc)
                log.warning("bulk messages: $metadata unreadable, using $batch",
                            extra={"connection": self.client.settings.name,
                                   "error": str(exc)})
            return _Declared(False, {})


@dataclass(frozen=True)
class _Declared:
    """What ``$metadata`` says of the bulk messages: declared at all, and each entity
    set's entity type."""

    declared: bool
    types: dict[str, str]


def _declared(text: str) -> _Declared:
    root = ET.fromstring(text)
    return _Declared(any(a.get("Name") == "CreateMultiple" for a in root.iter(f"{_EDM}Action")),
                     {s.get("Name", ""): s.get("EntityType", "")
                      for s in root.iter(f"{_EDM}EntitySet")})


def run_bulk(entity_set: EntitySet, kind: BulkKind, records: Sequence[BulkRecord], *,
             read_back: bool = True) -> list[OperationResult]:
    """One result per record, in order (see the module docstring)."""
    ops = [_operation(entity_set, kind, r) for r in records]
    if not ops:
        return []
    names = [_identity(op) for op in ops]
    if not entity_set.client.bulk_support().supports(entity_set.name) \
            or len(set(names)) < len(names):
        return run_batch(entity_set.client, ops)  # a record twice cannot go in one request
    return _run_ops(entity_set, kind, ops, read_back=read_back)


def _run_ops(entity_set: EntitySet, kind: BulkKind, ops: list[Operation], *,
             read_back: bool) -> list[OperationResult]:
    """``ops`` (all ``kind``, records named once) as bulk requests of ``bulk_size``."""
    client = entity_set.client
    size = client.settings.bulk_size
    chunks = [ops[i:i + size] for i in range(0, len(ops), size)]
    down: list[CrmsyncError] = []
    results: list[OperationResult] = []
    for chunk_results in parallel(client, lambda c: _send(entity_set, kind, c, down), chunks):
        results += chunk_results
    if read_back:
        results = _read_back(entity_set, results)
    return results


def run_writes(client: ODataClient, operations: Sequence[Operation]) -> list[OperationResult]:
    """``ODataClient.batch``: the operations' results in their order. With the dialect's
    ``bulk_messages = "on"``, the creates of a set that has the messages go as
    ``CreateMultiple`` and its updates without an ETag as ``UpdateMultiple`` (an update
    with ``If-Match`` goes in ``$batch``: a bulk message has no per-record precondition),
    each refused request falling back to per-record ``$batch`` and each unanswered one
    leaving its records unknown, as ``$batch`` does; everything else goes in ``$batch``.
    A record named twice sends everything as ``$batch``, in order."""
    ops = list(operations)
    groups = _bulk_groups(client, ops)
    if not groups:
        return run_batch(client, ops)
    results: list[OperationResult | None] = [None] * len(ops)
    failure: list[CrmsyncError] = []

    def take(indices: list[int], send: Callable[[list[Operation]], list[OperationResult]]
             ) -> None:
        chosen = [ops[i] for i in indices]
        # The first request that got no usable answer stops the sending, as in $batch.
        done = ([OperationResult.not_answered(op, failure[0]) for op in chosen] if failure
                else send(chosen))
        first = connection_failure(done)
        if first is not None and not failure:
            failure.append(first)
        for i, result in zip(indices, done, strict=True):
            results[i] = result

    for (kind, entity_set), indices in groups.items():
        take(indices, partial(_run_ops, entity_set, kind, read_back=True))
    grouped = {i for indices in groups.values() for i in indices}
    rest = [i for i in range(len(ops)) if i not in grouped]
    if rest:
        take(rest, lambda chosen: run_batch(client, chosen))
    return [r for r in results if r is not None]


def _bulk_groups(client: ODataClient, ops: list[Operation]
                 ) -> dict[tuple[BulkKind, EntitySet], list[int]]:
    """The indices of the operations to send as bulk messages, by message and set."""
    if client.settings.dialect.bulk_messages != "on" or len(ops) < 2:
        return {}
    names = {(op.entity_set.name, str(op.key).lower()) for op in ops}
    if len(names) < len(ops):
        return {}
    support = client.bulk_support()
    groups: dict[tuple[BulkKind, EntitySet], list[int]] = {}
    sets: dict[str, EntitySet] = {}
    for i, op in enumerate(ops):
        kind: BulkKind | None = ("create" if op.kind == "create" else
                                 "update" if op.kind == "update" and op.etag is None
                                 and op.values else None)
        if kind is None or op.alternate or not support.supports(op.entity_set.name):
            continue
        entity_set = sets.setdefault(op.entity_set.name, op.entity_set)
        groups.setdefault((kind, entity_set), []).append(i)
    return {key: indices for key, indices in groups.items() if len(indices) > 1}


def _operation(entity_set: EntitySet, kind: BulkKind, record: BulkRecord) -> Operation:
    op_kind: Kind = kind
    key = record.key if record.key is not None else _alternate_text(record.alternate or {})
    return Operation(op_kind, entity_set, key, record.values, ref=record.ref,
                     alternate=record.alternate if kind == "upsert" else None)


def _identity(op: Operation) -> tuple[Any, ...]:
    if op.alternate:
        return tuple(sorted((k, str(v).casefold()) for k, v in op.alternate.items()))
    return (str(op.key).lower(),)


def _alternate_text(alternate: Mapping[str, Any]) -> str:
    return ",".join(f"{name}={filters.literal(value)}" for name, value in alternate.items())


def _send(entity_set: EntitySet, kind: BulkKind, ops: list[Operation],
          down: list[CrmsyncError]) -> list[OperationResult]:
    """One bulk request for ``ops``; its refusal sends them again one by one in $batch."""
    client = entity_set.client
    if down:
        return [OperationResult.not_answered(op, down[0]) for op in ops]
    try:
        body = _body(entity_set, kind, ops)
    except CrmsyncError:  # a malformed key or value: found and failed alone by $batch
        return run_batch(client, ops)
    url = f"{entity_set.url}/Microsoft.Dynamics.CRM.{MESSAGES[kind]}"
    try:
        reply = client.transport.send("POST", url, body=body, headers={
            "Content-Type": "application/json; charset=utf-8"})
    except RemoteUnavailable as exc:
        if exc.status is None:  # no answer at all: the outcome is unknown
            down.append(exc)
            return [OperationResult.not_answered(op, exc) for op in ops]
        return _refused(entity_set, kind, ops, exc)
    except CONNECTION_ERRORS as exc:
        down.append(exc)
        return [OperationResult.not_answered(op, exc) for op in ops]
    except RemoteError as exc:
        return _refused(entity_set, kind, ops, exc)
    keys = _ids_for(ops, reply.body) if kind == "create" else [op.key for op in ops]
    return [OperationResult(ref=op.ref, key=key, ok=True, status=reply.status)
            for op, key in zip(ops, keys, strict=True)]


def _refused(entity_set: EntitySet, kind: BulkKind, ops: list[Operation],
             error: RemoteError) -> list[OperationResult]:
    if any(text in (error.message or "") for text in _NOT_SUPPORTED):
        entity_set.client.bulk_support().refused.add(entity_set.name)
    log.info("bulk message refused as a whole, writing its records one by one", extra={
        "connection": entity_set.client.settings.name, "entity_set": entity_set.name,
        "message": MESSAGES[kind], "records": len(ops), "status": error.status,
        "error": error.message})
    return run_batch(entity_set.client, ops)


def _body(entity_set: EntitySet, kind: BulkKind, ops: list[Operation]) -> bytes:
    odata_type = entity_set.client.bulk_support().entity_type(entity_set)
    targets = []
    for op in ops:
        target: dict[str, Any] = {"@odata.type": odata_type, **op.values}
        if op.alternate:
            target["@odata.id"] = (f"{entity_set.name}("
                                   f"{filters.alternate_segment(op.alternate)})")
        else:
            target[entity_set.key] = wire.key_value(op.key, entity_set.key_type)
        targets.append(target)
    return wire.dumps({"Targets": targets})


def _ids(body: bytes) -> list[str] | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # then the keys sent are the ones created
        return None
    ids = doc.get("Ids") if isinstance(doc, dict) else None
    return [str(i) for i in ids] if isinstance(ids, list) else None


def _ids_for(ops: list[Operation], body: bytes) -> list[str]:
    """The ids ``CreateMultiple`` answered, or (when they do not fit) the keys sent."""
    ids = _ids(body)
    return ids if ids is not None and len(ids) == len(ops) else [op.key for op in ops]


def _read_back(entity_set: EntitySet, results: list[OperationResult]
               ) -> list[OperationResult]:
    """Fill each written record's etag and modified-on (and, for an upsert by alternate
    key, its key) from one read per ``key_chunk_size`` records; a read that fails leaves
    the results as they are (the writes were confirmed)."""
    written = [r for r in results if r.ok and r.etag is None and r.status != 304]
    if not written:
        return results
    try:
        found = _versions(entity_set, written)
    except CrmsyncError as exc:
        log.warning("bulk message: reading the written versions back failed", extra={
            "connection": entity_set.client.settings.name, "entity_set": entity_set.name,
            "error": str(exc)})
        return results
    out = []
    for result in results:
        row = found.get(result.key.lower()) if result.ok else None
        if row is None:
            out.append(result)
            continue
        out.append(result.versioned(
            str(row[entity_set.key]), row.get("@odata.etag"),
            wire.parse_datetime(row.get(entity_set.modified_on))))
    return out


def _versions(entity_set: EntitySet, written: list[OperationResult]
              ) -> dict[str, dict[str, Any]]:
    """Rows by the lower-case key the results carry (``name='value'`` for an upsert by
    alternate key, read by that key ``key_chunk_size`` at a time)."""
    select = [entity_set.key, entity_set.modified_on]
    size = entity_set.client.settings.key_chunk_size
    keys = [r.key for r in written if "=" not in r.key]
    # One read per key_chunk_size records, in parallel like the writes.
    rows = {str(row[entity_set.key]).lower(): row for found in parallel(
        entity_set.client, lambda chunk: list(entity_set.read_by_keys(chunk, select=select)),
        [keys[i:i + size] for i in range(0, len(keys), size)]) for row in found}
    by_name: dict[str, list[str]] = {}
    for result in written:
        name, equals, literal = result.key.partition("=")
        if equals and "," not in result.key:  # one-property alternate keys
            by_name.setdefault(name, []).append(literal)
    for name, literals in by_name.items():
        for start in range(0, len(literals), size):
            text = " or ".join(f"{name} eq {lit}" for lit in literals[start:start + size])
            for row in entity_set.read(select=[*select, name], filter=text):
                rows[f"{name}={filters.literal(row.get(name))}".lower()] = row
    return rows
