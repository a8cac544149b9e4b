"""The drift rules of ``crmsync audit`` as pure functions: which differences are drift (no
captured change on a side that moved), which side moved, and which passes carry a drifted
field once fixed. No database, no server."""

from __future__ import annotations

from typing import Any

import pytest

from worker.sync.drift import BOTH, CRM, ERP, NEITHER, FieldDrift, carriers, drifted_fields
from worker.sync.model import ApplyOn, Coupling, CouplingState, Direction, FieldMapping
from worker.sync.transfer import FieldValue

TO, FROM, BI = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION, Direction.BIDIRECTIONAL


def field(direction: Direction = BI, apply_on: ApplyOn = ApplyOn.ALWAYS) -> FieldMapping:
    return FieldMapping(id=1, local_column="city", remote_property="address1_city",
                        direction=direction, constant_value=None, transformation={},
                        lookup_mapping=None, lookup_local_column=None,
                        remote_bind_property=None, clear_value_on_failed_sync=False,
                        not_null=False, use_for_matching=False, case_sensitive_matching=False,
                        match_priority=0, apply_on=apply_on)


def coupling(erp: Any = "A", crm: Any = "A") -> Coupling:
    return Coupling(1, "M", "L1", "R1", CouplingState.COUPLED, "v1", None,
                    {"l": {"1": erp}, "r": {"1": crm}}, "success", "success", None, False)


def value(erp: Any, crm: Any, f: FieldMapping | None = None) -> FieldValue:
    return FieldValue(f or field(), erp, erp, crm)  # as the local→remote pass computes it


@pytest.mark.parametrize(("erp", "crm", "erp_captured", "crm_captured", "moved"), [
    ("A", "A", False, False, None),       # equal: nothing
    ("B", "A", False, False, ERP),        # ERP written with triggers off
    ("B", "A", True, False, None),        # ERP edit captured: the next pass carries it
    ("A", "C", False, False, CRM),        # CRM change that moved neither stamp nor version
    ("A", "C", False, True, None),        # CRM change the next read sees
    ("B", "C", False, False, BOTH),
    ("B", "C", True, False, None),        # one captured side: the pass settles both
])
def test_drift_table(erp: str, crm: str, erp_captured: bool, crm_captured: bool,
                     moved: str | None) -> None:
    found = drifted_fields([value(erp, crm)], coupling(), TO, erp_captured=erp_captured,
                           crm_captured=crm_captured)
    assert [d.moved for d in found] == ([moved] if moved else [])
    if moved:
        assert (found[0].erp, found[0].crm) == (erp, crm)


def test_neither_side_moved_but_they_differ() -> None:
    (d,) = drifted_fields([value("B", "C")], coupling("B", "C"), TO, erp_captured=True,
                          crm_captured=True)
    assert d.moved == NEITHER


def test_a_create_only_field_never_drifts() -> None:
    f = field(apply_on=ApplyOn.CREATE)
    assert drifted_fields([value("B", "C", f)], coupling(), TO, erp_captured=False,
                          crm_captured=False) == []


def test_the_remote_to_local_pass_sees_the_sides_the_other_way_round() -> None:
    (d,) = drifted_fields([FieldValue(field(FROM), "C", "C", "A")], coupling(), FROM,
                          erp_captured=False, crm_captured=False)
    assert (d.erp, d.crm, d.moved) == ("A", "C", CRM)


def test_a_captured_change_of_a_one_way_field_does_not_carry_the_other_side() -> None:
    # A to-CRM-only field changed in the CRM: the remote→local pass reads the record but
    # does not carry that field, so it is still drift.
    (d,) = drifted_fields([value("A", "C", field(TO))], coupling(), TO, erp_captured=False,
                          crm_captured=True)
    assert d.moved == CRM


def drift(moved: str, direction: Direction = BI) -> FieldDrift:
    return FieldDrift(field(direction), "x", "y", moved)


@pytest.mark.parametrize(("drifts", "mapping", "passes"), [
    ([drift(ERP)], BI, {TO}),              # the side that moved wins
    ([drift(CRM)], BI, {FROM}),
    ([drift(BOTH)], BI, {TO, FROM}),       # both: the mapping's conflict rule decides
    ([drift(NEITHER)], BI, set()),         # left alone: sync --record --take settles it
    ([drift(CRM)], TO, {TO}),              # one-way mapping: its source wins, as always
    ([drift(ERP)], FROM, {FROM}),
    ([drift(CRM, TO)], BI, {TO}),          # one-way field
    ([drift(ERP), drift(CRM)], BI, {TO, FROM}),
])
def test_carriers(drifts: list[FieldDrift], mapping: Direction,
                  passes: set[Direction]) -> None:
    assert carriers(drifts, mapping) == passes
