"""What ``crmsync audit`` calls drift, as pure functions: a coupled record whose two sides
hold different values that no pass will carry, because the change was never captured — an
ERP row written with the triggers off (a bulk load, ``session_replication_role =
replica``, a restored backup), or a CRM change that did not move ``modifiedon``.

Per field, from the values a pass computes (``transfer.FieldValue``) and the coupling's
snapshot: the two sides differ (in the destination's form, as a pass compares them), and
each side either still holds the value of the last sync or has *moved*. A difference is
drift unless a side that moved has a captured change (the next pass reads that record and
settles it). Fields written on create only (``apply_on = 'create'``) never drift.

:func:`carriers` says which passes make a drifted field go through once the record is put
on their retry list (``crmsync audit --fix``): the pass that reads the side that moved
(it wins); both moved: both passes, where the mapping's conflict rule decides; a one-way
field or mapping: its one pass, whose source wins as it always does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.sync.decide import after_create
from worker.sync.model import Coupling, Direction, FieldMapping
from worker.sync.transfer import FieldValue, canonical, same

TO, FROM = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION
ERP, CRM, BOTH, NEITHER = "erp", "crm", "both", "neither"


@dataclass(frozen=True)
class FieldDrift:
    """One field that differs without a captured change: both sides' values (canonical)
    and which side moved since the last sync."""

    field: FieldMapping
    erp: Any
    crm: Any
    moved: str  # ERP, CRM, BOTH or NEITHER


@dataclass(frozen=True)
class RecordDrift:
    """One coupled record with drifted fields."""

    coupling: Coupling
    business_key: Any
    fields: tuple[FieldDrift, ...]

    @property
    def moved(self) -> str:
        """Which side moved, over all its fields."""
        sides = {f.moved for f in self.fields} - {NEITHER}
        if not sides:
            return NEITHER
        return sides.pop() if len(sides) == 1 else BOTH

    def as_json(self) -> dict[str, Any]:
        return {"business_key": self.business_key, "local_id": self.coupling.local_id,
                "crm_id": self.coupling.remote_id, "moved": self.moved,
                "fields": {f.field.label: {"erp": f.erp, "crm": f.crm, "moved": f.moved}
                           for f in self.fields}}


def drifted_fields(values: Sequence[FieldValue], coupling: Coupling, pass_direction: Direction,
                   *, erp_captured: bool, crm_captured: bool) -> list[FieldDrift]:
    """The drifted fields among ``values``, as the ``pass_direction`` pass computed them
    (local→remote: ``source`` is the ERP's value, ``current`` the CRM's; remote→local the
    other way round). ``erp_captured`` / ``crm_captured``: whether the pass reading that
    side (and running at all) reads the record next because of a captured change. A field
    the snapshot does not know counts as moved on the pass's source side (as
    ``transfer.plan_update`` sees it)."""
    snap_l, snap_r = coupling.snapshot("l") or {}, coupling.snapshot("r") or {}
    out = []
    for v in after_create(values):
        if same(v.wanted, v.current):
            continue
        key = v.field.key
        source, current = canonical(v.source), canonical(v.current)
        erp, crm = (source, current) if pass_direction is TO else (current, source)
        erp_moved = (key not in snap_l and pass_direction is TO) or (
            key in snap_l and erp != snap_l[key])
        crm_moved = (key not in snap_r and pass_direction is FROM) or (
            key in snap_r and crm != snap_r[key])
        # A captured change is read by the pass whose source is that side, which carries
        # only the fields running in its direction.
        if (erp_moved and erp_captured and v.field.direction.runs(TO)) or (
                crm_moved and crm_captured and v.field.direction.runs(FROM)):
            continue  # the next pass reads it and settles it
        moved = BOTH if erp_moved and crm_moved else ERP if erp_moved else \
            CRM if crm_moved else NEITHER
        out.append(FieldDrift(v.field, erp, crm, moved))
    return out


def carriers(drifts: Iterable[FieldDrift], mapping_direction: Direction) -> set[Direction]:
    """The passes whose retry carries these drifted fields (see the module's docstring);
    a field that moved on neither side is left alone (``sync --record --take`` settles
    it)."""
    passes: set[Direction] = set()
    for d in drifts:
        runs = [p for p in (TO, FROM)
                if mapping_direction.runs(p) and d.field.direction.runs(p)]
        if d.moved == NEITHER or not runs:
            continue
        if d.moved == BOTH or len(runs) == 1:
            passes.update(runs)
        else:
            passes.add(TO if d.moved == ERP else FROM)
    return passes


def business_key(column: str | None, values: Iterable[FieldValue], pass_direction: Direction,
                 coupling: Coupling, fields: Sequence[FieldMapping]) -> Any:
    """The record's business key: the ERP's value of ``column`` as read, else as the
    coupling's snapshot has it."""
    if column is None:
        return None
    for v in values:
        if v.field.local_column == column:
            return canonical(v.source if pass_direction is TO else v.current)
    snap: Mapping[str, Any] = coupling.snapshot("l") or {}
    for f in fields:
        if f.local_column == column and f.key in snap:
            return snap[f.key]
    return None
