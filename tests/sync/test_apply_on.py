"""``apply_on = 'create'`` (Business Central's configuration templates) as a rule of the pure
decision: the field is part of a create, and a later sync of the record neither writes it
nor counts a difference in it as a change or a conflict, in both passes, whatever the
policy. No database, no server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.sync.decide import Kind, Policy, Presence, Seen, after_create, decide, value_fields
from worker.sync.model import (
    ApplyOn,
    Coupling,
    CouplingState,
    DeletionConflict,
    Direction,
    FieldMapping,
    UpdateConflict,
)
from worker.sync.transfer import FieldValue, canonical, new_snapshot

TO, FROM, BOTH = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION, Direction.BIDIRECTIONAL
P, A = Presence.PRESENT, Presence.ABSENT


def field(n: int, apply_on: ApplyOn = ApplyOn.ALWAYS,
          direction: Direction = BOTH) -> FieldMapping:
    return FieldMapping(id=n, local_column=f"c{n}", remote_property=f"p{n}",
                        direction=direction, constant_value=None, transformation={},
                        lookup_mapping=None, lookup_local_column=None,
                        remote_bind_property=None, clear_value_on_failed_sync=False,
                        not_null=False, use_for_matching=False, case_sensitive_matching=False,
                        match_priority=0, apply_on=apply_on)


NAME, PRICE_LIST = field(1), field(2, ApplyOn.CREATE)


def coupling(snapshot: dict[str, Any] | None, *,
             state: CouplingState = CouplingState.COUPLED) -> Coupling:
    synced = None if snapshot is None else {"l": snapshot, "r": dict(snapshot)}
    return Coupling(1, "M", "L1", "R1", state, None, None, synced, "success", "success",
                    None, False, None)


def policy(conflict: UpdateConflict = UpdateConflict.NONE,
           direction: Direction = BOTH) -> Policy:
    return Policy(direction, conflict, DeletionConflict.NONE, False, "accounts", "erp.customer")


def seen(name: tuple[Any, Any], price: tuple[Any, Any], c: Coupling | None,
         destination: Presence = P) -> Seen:
    """(source, destination) values of the two fields."""
    return Seen("k", c, P, destination, (FieldValue(NAME, name[0], name[0], name[1]),
                                         FieldValue(PRICE_LIST, price[0], price[0], price[1])))


SNAP = {"1": "Acme", "2": "STANDARD"}


@pytest.mark.parametrize("direction", [TO, FROM])
def test_a_create_writes_the_create_only_field(direction: Direction) -> None:
    action = decide(seen(("Acme", None), ("STANDARD", None), None, A), policy(), direction)
    assert action.kind is Kind.CREATE and action.written is None
    assert [v.field for v in action.values] == [NAME, PRICE_LIST]


@pytest.mark.parametrize("direction", [TO, FROM])
@pytest.mark.parametrize("conflict", list(UpdateConflict))
@pytest.mark.parametrize("mapping_direction", [BOTH, TO, FROM])
def test_a_difference_in_it_is_no_change_and_no_conflict(
        direction: Direction, conflict: UpdateConflict, mapping_direction: Direction) -> None:
    # The CRM user set another price list, and the ERP's default changed too: neither is
    # written, neither is a conflict, the record is unchanged.
    action = decide(seen(("Acme", "Acme"), ("NEW DEFAULT", "VIP"), coupling(SNAP)),
                    policy(conflict, mapping_direction), direction)
    assert action.kind is Kind.UNCHANGED, action
    assert PRICE_LIST not in [v.field for v in action.values]


@pytest.mark.parametrize("direction", [TO, FROM])
def test_other_fields_still_flow_without_it(direction: Direction) -> None:
    action = decide(seen(("Acme Ltd", "Acme"), ("STANDARD", "VIP"), coupling(SNAP)),
                    policy(), direction)
    assert action.kind is Kind.UPDATE and action.written == {NAME.key}
    assert [v.field for v in action.values] == [NAME]


def test_the_snapshot_keeps_its_create_time_entry() -> None:
    action = decide(seen(("Acme Ltd", "Acme"), ("STANDARD", "VIP"), coupling(SNAP)),
                    policy(), TO)
    after = new_snapshot(action.coupling.synced_values if action.coupling else None,
                         list(action.values), pass_direction=TO, written=set(action.written
                                                                                or ()),
                         left=set(action.left))
    assert after == {"l": {"1": "Acme Ltd", "2": "STANDARD"},
                     "r": {"1": "Acme Ltd", "2": "STANDARD"}}


@pytest.mark.parametrize("direction", [TO, FROM])
def test_a_create_whose_answer_was_lost_is_completed_with_it(direction: Direction) -> None:
    # The service has the record (the create's answer was lost) without the price list:
    # it is still the create, so the create-only field is written.
    own = CouplingState.CREATING_REMOTE if direction is TO else CouplingState.CREATING_LOCAL
    action = decide(seen(("Acme", "Acme"), ("STANDARD", None), coupling(None, state=own)),
                    policy(), direction)
    assert action.kind is Kind.UPDATE and action.written == {PRICE_LIST.key}
    assert action.reconciled


def test_take_does_not_write_it_either() -> None:
    action = decide(seen(("Acme", "Acme"), ("STANDARD", "VIP"), coupling(SNAP)), policy(), TO,
                    force=True)
    assert action.kind is Kind.UNCHANGED


text = st.one_of(st.none(), st.sampled_from(["", "a", "b", "A "]))


@given(src=text, dst=text, snap_src=text, snap_dst=text, direction=st.sampled_from([TO, FROM]),
       conflict=st.sampled_from(list(UpdateConflict)))
def test_a_create_only_field_never_decides_an_update(
        src: Any, dst: Any, snap_src: Any, snap_dst: Any, direction: Direction,
        conflict: UpdateConflict) -> None:
    only = replace(NAME, apply_on=ApplyOn.CREATE)
    c = replace(coupling(None), synced_values={"l": {"1": canonical(snap_src)},
                                               "r": {"1": canonical(snap_dst)}})
    action = decide(Seen("k", c, P, P, (FieldValue(only, src, src, dst),)), policy(conflict),
                    direction)
    assert action.kind is Kind.UNCHANGED and action.values == ()
    assert after_create(action.values) == ()


def test_a_coupled_record_on_both_sides_needs_no_create_only_value() -> None:
    # Only an update can follow: the create-only field is not even computed (its lookup
    # or conversion cannot fail the record); a record that may be created needs it.
    coupled = coupling(SNAP)
    assert value_fields([NAME, PRICE_LIST], coupled, True) == [NAME]
    assert value_fields([NAME, PRICE_LIST], coupled, False) == [NAME, PRICE_LIST]  # gone
    assert value_fields([NAME, PRICE_LIST], None, False) == [NAME, PRICE_LIST]
    in_flight = coupling(None, state=CouplingState.CREATING_REMOTE)
    assert value_fields([NAME, PRICE_LIST], in_flight, True) == [NAME, PRICE_LIST]
