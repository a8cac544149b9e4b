"""What a pass does to one record, as pure functions of what it read.

A pass reads a chunk (local rows, couplings, remote records, lookups), turns each record into
a :class:`Seen` (its coupling, whether each side has it, the values the destination should
hold) and asks :func:`decide` for one :class:`Action`. Carrying the action out — a $batch, a
local transaction, the job log — is the pass's business; ``crmsync sync --plan`` stops after
the decisions. The rules live here once: the update-conflict table (``transfer.plan_update``),
the deletion-conflict table (:func:`deletion`) and the match rule (:func:`match_key`).

Nothing here reads a database or a server, so every rule is tested as a table of cases.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from worker.sync.model import Coupling, CouplingState, DeletionConflict, Direction, FieldMapping
from worker.sync.transfer import (
    FieldValue,
    canonical,
    conflict_message,
    plan_update,
    settle_pending,
)

TO, FROM = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION


class Kind(enum.StrEnum):
    """What happens to one record. "Destination" is the side the pass writes to (the CRM
    for the local→remote pass), "source" the side it reads changes from."""

    CREATE = "create"        # create it on the destination (a new coupling or an intent)
    UPDATE = "update"        # write the changed fields to the destination
    UNCHANGED = "unchanged"  # nothing to write (the snapshot may still be stored)
    DELETE = "delete"        # the source's record was deleted: delete the destination's
    DELETE_SOURCE = "delete_source"  # the destination's was deleted: delete the source's
    GONE = "gone"            # deleted on both sides: only the coupling is left to remove
    UNCOUPLE = "uncouple"    # remove the coupling, records stay
    RECREATE = "recreate"    # the destination's record was deleted: create it again
    RESTORE = "restore"      # the source's record was deleted: put it back from the other
    SKIP = "skip"            # skipped coupling, or a record the mapping does not create
    FAIL = "fail"
    WAIT = "wait"            # a create of the other pass is in flight: that pass settles it
    NOTHING = "nothing"      # e.g. a local row outside the mapping's filter

    @property
    def writes(self) -> bool:
        return self in (Kind.CREATE, Kind.UPDATE, Kind.DELETE, Kind.DELETE_SOURCE,
                        Kind.RECREATE, Kind.RESTORE)


class Presence(enum.Enum):
    PRESENT = "present"
    ABSENT = "absent"        # deleted (or never there)
    OUT_OF_SCOPE = "out"     # there, but outside the mapping's filter: not this mapping's


@dataclass(frozen=True)
class Policy:
    """What of the mapping the decisions need."""

    direction: Direction  # the mapping's
    update_conflict: Any
    deletion_conflict: DeletionConflict
    sync_only_coupled: bool
    entity_set: str = ""
    local_table: str = ""

    @classmethod
    def of(cls, mapping: Any) -> Policy:
        return cls(mapping.direction, mapping.update_conflict, mapping.deletion_conflict,
                   mapping.sync_only_coupled, mapping.entity_set, mapping.local_table)


# Seen and Action are made once per record and never changed (``replace`` makes another):
# slotted, not frozen, whose init costs three times as much.
@dataclass(slots=True)
class Seen:
    """One record as a pass read it. ``values``: the destination's values from the source
    (each FieldValue's ``current`` is the destination's value when the record is coupled),
    or the message of a failure to compute them. ``source`` / ``destination``: whether each
    side has the record."""

    key: str
    coupling: Coupling | None
    source: Presence
    destination: Presence
    values: tuple[FieldValue, ...] = ()
    failure: str | None = None
    transient: bool = False
    etag: str | None = None          # the CRM record's ETag as read (a write's If-Match)
    unreadable: str | None = None    # the destination row cannot be read (a value refused)
    version: str | None = None       # the CRM record's version as read (echo recognition)


@dataclass(slots=True)
class Action:
    """One decision. ``written``: the field keys to write (None: all, a create); ``left``:
    fields changed only on the destination, left for the other pass; ``coupling``: as
    decided from (snapshot settled, or cleared by ``force``)."""

    kind: Kind
    key: str
    coupling: Coupling | None
    values: tuple[FieldValue, ...] = ()
    written: frozenset[str] | None = None
    left: frozenset[str] = frozenset()
    message: str = ""
    transient: bool = False
    reconciled: bool = False   # a create whose answer was lost, found and completed
    etag: str | None = None
    counter: str | None = None  # the job log's counter when it is done
    conflicts: tuple[FieldMapping, ...] = ()
    then_create: bool = False  # UNCOUPLE: the surviving source record is created anew
    version: str | None = None


def decide(seen: Seen, policy: Policy, pass_direction: Direction, *,
           force: bool = False) -> Action:
    """The one action for a record. ``force``: every field of the source wins (the user's
    ``--take``), a skipped coupling included, and an uncoupled record is created."""
    coupling = seen.coupling
    if coupling is not None and coupling.skipped and not force:
        return Action(Kind.SKIP, seen.key, coupling, counter="skipped")
    if coupling is not None and force:
        coupling = replace(coupling, synced_values=None, pending_values=None)
    own_create = CouplingState.CREATING_REMOTE if pass_direction is TO \
        else CouplingState.CREATING_LOCAL
    other_create = CouplingState.CREATING_LOCAL if pass_direction is TO \
        else CouplingState.CREATING_REMOTE
    if coupling is not None and coupling.state is other_create:
        return Action(Kind.WAIT, seen.key, coupling)
    if seen.source is not Presence.PRESENT:
        if coupling is None or seen.source is Presence.OUT_OF_SCOPE:
            return Action(Kind.NOTHING, seen.key, coupling)
        return deletion(seen, coupling, policy, deleted=pass_direction)
    if seen.failure is not None:
        return _failure(seen, coupling, policy, seen.failure, seen.transient, force)
    if coupling is None or (coupling.state is own_create
                            and seen.destination is not Presence.PRESENT):
        if coupling is None and policy.sync_only_coupled and not force:
            return Action(Kind.SKIP, seen.key, None, counter="skipped")
        return Action(Kind.CREATE, seen.key, coupling, seen.values, counter="inserted")
    if seen.destination is not Presence.PRESENT:
        return deletion(seen, coupling, policy, deleted=_other(pass_direction))
    if seen.unreadable is not None:
        return _failure(seen, coupling, policy, seen.unreadable, False, force)
    return update(seen, coupling, policy, pass_direction,
                  reconciled=coupling.state is own_create)


def update(seen: Seen, coupling: Coupling, policy: Policy, pass_direction: Direction, *,
           reconciled: bool = False) -> Action:
    """A coupled record present on both sides: the fields to write, or a conflict.
    ``reconciled``: the record is this pass's own create whose answer was lost, so every
    field counts, those written on create only included (:func:`after_create`)."""
    values = seen.values if reconciled else after_create(seen.values)
    coupling = settled(coupling, values, pass_direction)
    source, destination = ("l", "r") if pass_direction is TO else ("r", "l")
    plan = plan_update(
        list(values), pass_direction=pass_direction, mapping_direction=policy.direction,
        policy=policy.update_conflict, source_snapshot=coupling.snapshot(source),
        destination_snapshot=coupling.snapshot(destination))
    if plan.conflicts:
        return Action(Kind.FAIL, seen.key, coupling, values,
                      message=conflict_message(plan.conflicts), counter="failed",
                      conflicts=tuple(plan.conflicts))
    left = frozenset(f.key for f in plan.left_for_other_pass)
    if not plan.writes:
        return Action(Kind.UNCHANGED, seen.key, coupling, values, left=left,
                      reconciled=reconciled, etag=seen.etag, version=seen.version,
                      counter="inserted" if reconciled else "unchanged")
    return Action(Kind.UPDATE, seen.key, coupling, values, frozenset(plan.writes), left,
                  reconciled=reconciled, etag=seen.etag, version=seen.version,
                  counter="inserted" if reconciled else "modified")


def after_create(values: Sequence[FieldValue]) -> tuple[FieldValue, ...]:
    """The fields a sync of an existing record weighs: a field with ``apply_on = 'create'``
    was written when the record was created and is never written again, nor does a
    difference in it count as a change or a conflict. Left out of the action's values, it
    keeps its snapshot entries as they were (``transfer.new_snapshot`` keeps what it is not
    given)."""
    return tuple(v for v in values if not v.field.on_create_only)


def value_fields(fields: Sequence[FieldMapping], coupling: Coupling | None,
                 destination_present: bool) -> list[FieldMapping]:
    """The fields whose values a pass computes for a record: every one when the record may
    be created on the destination (no coupling, a create in flight, or the counterpart gone:
    a deletion policy may create it again), but not those written on create only for a
    coupled record present on both sides, which only an update can follow — so such a
    field's lookup to a record not coupled yet, or a value its destination would refuse,
    never fails that update (:func:`after_create` leaves them out of the decision)."""
    if coupling is not None and coupling.state is CouplingState.COUPLED and destination_present:
        return [f for f in fields if not f.on_create_only]
    return list(fields)


def settled(coupling: Coupling, values: Sequence[FieldValue],
            pass_direction: Direction) -> Coupling:
    """The coupling as the decision sees it: when an earlier write's outcome was not
    recorded, the remote values that write sent count as crmsync's own (the remote side is
    each value's ``current`` in the local→remote pass, its ``source`` in the other)."""
    if coupling.pending_values is None:
        return coupling
    remote_now = {v.field.key: canonical(v.current if pass_direction is TO else v.source)
                  for v in values}
    return replace(coupling, synced_values=settle_pending(
        coupling.synced_values, coupling.pending_values, remote_now))


def deletion(seen: Seen, coupling: Coupling, policy: Policy, *,
             deleted: Direction) -> Action:
    """The deletion-conflict table, for a coupled record one side no longer has.
    ``deleted``: TO_INTEGRATION when the local record was deleted (the side the
    local→remote pass reads), FROM_INTEGRATION when the CRM's was.

    =================  ================================  ================================
    policy             local record deleted              CRM record deleted
    =================  ================================  ================================
    propagate_delete   delete the CRM's (gone: forget)   delete the local row
    remove_coupling    uncouple                          uncouple
    restore_records    put the local row back            create the CRM record again
    none               fail, naming the coupled record   fail, naming the coupled record
    =================  ================================  ================================

    After ``remove_coupling`` the surviving record is an uncoupled record of the mapping:
    when it is the pass's source and the mapping creates uncoupled records, it is created
    anew on the other side at once (``then_create``)."""
    local_deleted = deleted is TO
    pass_source_deleted = seen.source is not Presence.PRESENT
    mode = policy.deletion_conflict
    if mode is DeletionConflict.PROPAGATE_DELETE:
        if seen.destination is not Presence.PRESENT and pass_source_deleted:
            return Action(Kind.GONE, seen.key, coupling, counter="deleted")
        kind = Kind.DELETE if pass_source_deleted else Kind.DELETE_SOURCE
        return Action(kind, seen.key, coupling, seen.values, etag=seen.etag,
                      counter="deleted")
    if mode is DeletionConflict.REMOVE_COUPLING:
        again = not pass_source_deleted and not policy.sync_only_coupled
        return Action(Kind.UNCOUPLE, seen.key, coupling, seen.values, counter="uncoupled",
                      then_create=again)
    if mode is DeletionConflict.RESTORE_RECORDS:
        kind = Kind.RESTORE if pass_source_deleted else Kind.RECREATE
        return Action(kind, seen.key, coupling, seen.values)
    where = (f"the local record {policy.local_table} {coupling.local_id} was deleted, and it "
             f"is coupled to {policy.entity_set}({coupling.remote_id})" if local_deleted else
             f"the coupled record {policy.entity_set}({coupling.remote_id}) was deleted in "
             f"the CRM, and it is coupled to {policy.local_table} {coupling.local_id}")
    return Action(Kind.FAIL, seen.key, coupling, message=f"{where}; "
                  "deletion_conflict_resolution is none", counter="failed")


def _failure(seen: Seen, coupling: Coupling | None, policy: Policy, message: str,
             transient: bool, force: bool) -> Action:
    if coupling is None and policy.sync_only_coupled and not force:
        return Action(Kind.SKIP, seen.key, None, counter="skipped")
    return Action(Kind.FAIL, seen.key, coupling, seen.values, message=message,
                  transient=transient, counter="failed")


def _other(direction: Direction) -> Direction:
    return FROM if direction is TO else TO


# -- match-based coupling ------------------------------------------------------------------

def match_value(f: FieldMapping, value: Any) -> Any:
    """One field's value as matching compares it: canonical, trimmed, lower-cased unless
    the field matches case-sensitively."""
    value = canonical(value)
    if isinstance(value, str):
        value = value.strip()
        if not f.case_sensitive_matching:
            value = value.lower()
    return value


def match_key(fields: Sequence[FieldMapping], values: Sequence[Any]) -> tuple[Any, ...] | None:
    """The match rule: a record matches another when every use-for-matching field holds the
    same value (``match_value``; ``values`` in the order of ``fields``); a record whose
    fields are all empty matches nothing."""
    key = tuple(match_value(f, v) for f, v in zip(fields, values, strict=True))
    return None if all(v is None for v in key) else key


def proposed_coupling(mapping: str, local_id: str, remote_id: str) -> Coupling:
    """The coupling a match would create, for deciding before anything is written."""
    return Coupling(id=0, mapping_name=mapping, local_id=local_id, remote_id=remote_id,
                    state=CouplingState.COUPLED, remote_version=None, remote_modified_on=None,
                    synced_values=None, last_result_to=None, last_result_from=None,
                    last_error=None, skipped=False)


def unique_matches(wanted: Mapping[str, tuple[Any, ...] | None],
                   candidates: Mapping[str, tuple[Any, ...] | None]
                   ) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """Pairs (wanted id, candidate id) of unique matches, each candidate used once, in the
    order of ``wanted``; and the wanted ids with several candidates (left alone)."""
    index: dict[tuple[Any, ...], list[str]] = {}
    for cid, key in candidates.items():
        if key is not None:
            index.setdefault(key, []).append(cid)
    taken: set[str] = set()
    pairs: list[tuple[str, str]] = []
    ambiguous: dict[str, list[str]] = {}
    for wid, key in wanted.items():
        if key is None:
            continue
        found = [c for c in index.get(key, []) if c not in taken]
        if len(found) == 1:
            pairs.append((wid, found[0]))
            taken.add(found[0])
        elif found:
            ambiguous[wid] = found
    return pairs, ambiguous
