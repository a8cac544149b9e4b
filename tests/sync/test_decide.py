"""The per-record decision as a pure function: a table of cases for both passes, the
deletion-conflict table, the match rule, and properties over every combination of presence,
change on each side and policy. No database, no server."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.sync.decide import (
    Kind,
    Policy,
    Presence,
    Seen,
    decide,
    match_key,
    proposed_coupling,
    unique_matches,
)
from worker.sync.model import (
    Coupling,
    CouplingState,
    DeletionConflict,
    Direction,
    FieldMapping,
    UpdateConflict,
)
from worker.sync.transfer import FieldValue, canonical, same

TO, FROM, BOTH = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION, Direction.BIDIRECTIONAL
P, A, OUT = Presence.PRESENT, Presence.ABSENT, Presence.OUT_OF_SCOPE


def field(n: int, *, match: bool = False, case_sensitive: bool = False) -> FieldMapping:
    return FieldMapping(id=n, local_column=f"c{n}", remote_property=f"p{n}", direction=BOTH,
                        constant_value=None, transformation={}, lookup_mapping=None,
                        lookup_local_column=None, remote_bind_property=None,
                        clear_value_on_failed_sync=False, not_null=False,
                        use_for_matching=match, case_sensitive_matching=case_sensitive,
                        match_priority=0)


F1, F2 = field(1), field(2)


def coupling(local: dict[str, Any] | None = None, remote: dict[str, Any] | None = None, *,
             state: CouplingState = CouplingState.COUPLED, skipped: bool = False,
             pending: dict[str, Any] | None = None) -> Coupling:
    snapshot = None if local is None else {"l": local, "r": remote if remote is not None
                                           else local}
    return Coupling(1, "M", "L1", "R1", state, None, None, snapshot, "success", "success",
                    None, skipped, pending)


def policy(deletion: DeletionConflict = DeletionConflict.NONE, *,
           conflict: UpdateConflict = UpdateConflict.NONE, only_coupled: bool = False,
           direction: Direction = BOTH) -> Policy:
    return Policy(direction, conflict, deletion, only_coupled, "accounts", "erp.customer")


def values(*pairs: tuple[Any, Any], direction: Direction = TO) -> tuple[FieldValue, ...]:
    """(source value, destination value) per field F1, F2, …"""
    out = []
    for f, (src, dst) in zip((F1, F2), pairs, strict=False):
        out.append(FieldValue(f, src, src, dst))
    return tuple(out)


SNAP = {"1": "a", "2": "b"}


@pytest.mark.parametrize("direction", [TO, FROM])
@pytest.mark.parametrize(("seen", "pol", "force", "kind"), [
    (Seen("k", coupling(SNAP, skipped=True), P, P, values(("x", "b"))), policy(), False,
     Kind.SKIP),
    (Seen("k", None, P, A, values(("a", None))), policy(), False, Kind.CREATE),
    (Seen("k", None, P, A, values(("a", None))), policy(only_coupled=True), False, Kind.SKIP),
    (Seen("k", None, P, A, values(("a", None))), policy(only_coupled=True), True, Kind.CREATE),
    (Seen("k", coupling(SNAP), P, P, values(("a", "a"), ("b", "b"))), policy(), False,
     Kind.UNCHANGED),
    (Seen("k", coupling(SNAP), P, P, values(("new", "a"), ("b", "b"))), policy(), False,
     Kind.UPDATE),
    (Seen("k", coupling(SNAP), P, P, values(("new", "other"), ("b", "b"))), policy(), False,
     Kind.FAIL),
    (Seen("k", coupling(SNAP), P, P, values(("new", "other"))), policy(), True, Kind.UPDATE),
    (Seen("k", None, OUT, A), policy(), False, Kind.NOTHING),
    (Seen("k", coupling(SNAP), OUT, P), policy(DeletionConflict.PROPAGATE_DELETE), False,
     Kind.NOTHING),
    (Seen("k", None, P, A, failure="bad value"), policy(), False, Kind.FAIL),
    (Seen("k", None, P, A, failure="bad value"), policy(only_coupled=True), False, Kind.SKIP),
])
def test_decisions(direction: Direction, seen: Seen, pol: Policy, force: bool,
                   kind: Kind) -> None:
    assert decide(seen, pol, direction, force=force).kind is kind


def test_a_conflict_names_the_field_and_writes_nothing() -> None:
    action = decide(Seen("k", coupling(SNAP), P, P, values(("new", "other"))), policy(), TO)
    assert action.kind is Kind.FAIL and "c1 <-> p1" in action.message
    assert action.written is None and action.conflicts == (F1,)


@pytest.mark.parametrize(("conflict", "direction", "kind"), [
    (UpdateConflict.SEND_UPDATE_TO_INTEGRATION, TO, Kind.UPDATE),
    (UpdateConflict.SEND_UPDATE_TO_INTEGRATION, FROM, Kind.UNCHANGED),  # left for the other
    (UpdateConflict.GET_UPDATE_FROM_INTEGRATION, FROM, Kind.UPDATE),
    (UpdateConflict.GET_UPDATE_FROM_INTEGRATION, TO, Kind.UNCHANGED),
])
def test_the_update_conflict_policy_picks_a_winner(conflict: UpdateConflict,
                                                   direction: Direction, kind: Kind) -> None:
    seen = Seen("k", coupling(SNAP), P, P, values(("new", "other")))
    action = decide(seen, policy(conflict=conflict), direction)
    assert action.kind is kind
    if kind is Kind.UNCHANGED:
        assert action.left == {"1"}


# (policy, which side deleted, pass) -> kind; "local" = the ERP row is gone.
DELETIONS = [
    (DeletionConflict.PROPAGATE_DELETE, "local", TO, Kind.DELETE),
    (DeletionConflict.PROPAGATE_DELETE, "remote", TO, Kind.DELETE_SOURCE),
    (DeletionConflict.PROPAGATE_DELETE, "local", FROM, Kind.DELETE_SOURCE),
    (DeletionConflict.PROPAGATE_DELETE, "remote", FROM, Kind.DELETE),
    (DeletionConflict.REMOVE_COUPLING, "local", TO, Kind.UNCOUPLE),
    (DeletionConflict.REMOVE_COUPLING, "remote", TO, Kind.UNCOUPLE),
    (DeletionConflict.REMOVE_COUPLING, "local", FROM, Kind.UNCOUPLE),
    (DeletionConflict.REMOVE_COUPLING, "remote", FROM, Kind.UNCOUPLE),
    (DeletionConflict.RESTORE_RECORDS, "local", TO, Kind.RESTORE),
    (DeletionConflict.RESTORE_RECORDS, "remote", TO, Kind.RECREATE),
    (DeletionConflict.RESTORE_RECORDS, "local", FROM, Kind.RECREATE),
    (DeletionConflict.RESTORE_RECORDS, "remote", FROM, Kind.RESTORE),
    (DeletionConflict.NONE, "local", TO, Kind.FAIL),
    (DeletionConflict.NONE, "remote", FROM, Kind.FAIL),
]


@pytest.mark.parametrize(("mode", "deleted", "direction", "kind"), DELETIONS)
def test_the_deletion_conflict_table(mode: DeletionConflict, deleted: str,
                                     direction: Direction, kind: Kind) -> None:
    source_side = "local" if direction is TO else "remote"
    source = A if deleted == source_side else P
    destination = P if deleted == source_side else A
    action = decide(Seen("k", coupling(SNAP), source, destination, values(("a", "a"))),
                    policy(mode), direction)
    assert action.kind is kind
    if mode is DeletionConflict.REMOVE_COUPLING:
        # The survivor is created anew only by the pass that reads it.
        assert action.then_create is (source is P)
    if kind is Kind.FAIL:
        assert "deletion_conflict_resolution is none" in action.message


def test_deleted_on_both_sides_only_the_coupling_is_left() -> None:
    action = decide(Seen("k", coupling(SNAP), A, A), policy(DeletionConflict.PROPAGATE_DELETE),
                    TO)
    assert action.kind is Kind.GONE and action.counter == "deleted"


def test_a_create_in_flight_found_in_the_crm_is_reconciled_not_created_again() -> None:
    intent = coupling(SNAP, state=CouplingState.CREATING_REMOTE)
    found = decide(Seen("k", intent, P, P, values(("a", "a"), ("b", "b"))), policy(), TO)
    assert found.kind is Kind.UNCHANGED and found.counter == "inserted"
    missing = decide(Seen("k", intent, P, A, values(("a", None))), policy(), TO)
    assert missing.kind is Kind.CREATE
    # The other pass leaves it to the pass that made the intent.
    assert decide(Seen("r", intent, P, P, values(("a", "a"))), policy(), FROM).kind is Kind.WAIT


def test_a_lost_update_answer_then_a_second_edit_is_no_conflict() -> None:
    """The update sent 'first' (the CRM applied it, the answer was lost); the ERP now holds
    'second': the CRM's 'first' is crmsync's own write, so 'second' is sent."""
    pending = {"l": {"1": "first"}, "r": {"1": "first"}}
    c = coupling({"1": "old"}, pending=pending)
    action = decide(Seen("k", c, P, P, values(("second", "first"))), policy(), TO)
    assert action.kind is Kind.UPDATE and action.written == {"1"}
    # A CRM user's value since is still a CRM change: both changed, a conflict.
    user = decide(Seen("k", c, P, P, values(("second", "crm user"))), policy(), TO)
    assert user.kind is Kind.FAIL
    # The remote→local pass sees the same: crmsync's own write is not imported.
    back = decide(Seen("r", c, P, P, (FieldValue(F1, "first", "first", "second"),)),
                  policy(), FROM)
    assert back.kind is Kind.UNCHANGED and back.left == {"1"}


def test_the_match_rule_compares_every_match_field_trimmed_and_case_blind() -> None:
    fields = [field(1, match=True), field(2, match=True, case_sensitive=True)]
    assert match_key(fields, [" Acme ", "X"]) == match_key(fields, ["acme", "X"])
    assert match_key(fields, ["acme", "x"]) != match_key(fields, ["acme", "X"])
    assert match_key(fields, [None, ""]) is None
    pairs, ambiguous = unique_matches(
        {"r1": ("acme",), "r2": ("beta",), "r3": None},
        {"l1": ("acme",), "l2": ("beta",), "l3": ("beta",)})
    assert pairs == [("r1", "l1")] and ambiguous == {"r2": ["l2", "l3"]}
    made = proposed_coupling("M", "l1", "r1")
    assert made.state is CouplingState.COUPLED and made.synced_values is None


TEXT = st.sampled_from(["a", "b", "c", None])


@given(
    direction=st.sampled_from([TO, FROM]),
    mode=st.sampled_from(list(DeletionConflict)),
    conflict=st.sampled_from(list(UpdateConflict)),
    only_coupled=st.booleans(), force=st.booleans(), skipped=st.booleans(),
    coupled=st.sampled_from([None, *CouplingState]),
    source=st.sampled_from(list(Presence)), destination=st.sampled_from([P, A]),
    snap=st.tuples(TEXT, TEXT), now=st.tuples(TEXT, TEXT), failure=st.booleans(),
)
def test_every_combination_gives_one_consistent_action(
        direction: Direction, mode: DeletionConflict, conflict: UpdateConflict,
        only_coupled: bool, force: bool, skipped: bool, coupled: CouplingState | None,
        source: Presence, destination: Presence, snap: tuple[Any, Any], now: tuple[Any, Any],
        failure: bool) -> None:
    c = None if coupled is None else coupling({"1": canonical(snap[0])}, {"1": snap[1]},
                                              state=coupled, skipped=skipped)
    vals = (FieldValue(F1, now[0], now[0], now[1]),)
    seen = Seen("k", c, source, destination if c else A, vals,
                failure="refused" if failure else None)
    action = decide(seen, policy(mode, conflict=conflict, only_coupled=only_coupled),
                    direction, force=force)
    assert isinstance(action.kind, Kind)
    if action.kind is Kind.UPDATE:  # only fields that differ are written, none left too
        assert action.written and not (action.written & action.left)
        assert all(not same(v.wanted, v.current) for v in action.values
                   if v.field.key in action.written)
    if action.kind is Kind.FAIL:  # nothing is both failed and written
        assert action.written is None and action.message
    if action.kind.writes or action.kind is Kind.UNCHANGED:
        assert not failure or source is not P  # a record whose values failed is not written
    if c is not None and skipped and not force:
        assert action.kind is Kind.SKIP
