"""Field transfer and the update-conflict decision, as pure functions.

Values are compared in a canonical form (``canonical``): blank strings equal NULL, numbers
compare by value whatever their type on each side (12.5 == Decimal('12.50')), GUIDs and
times compare as text. A coupling keeps, per field, the canonical value each side had at the
last sync (its snapshot); from it a pass knows which side changed which field, so only a
field changed on both sides to different values is a conflict.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from worker.sync.model import Direction, FieldMapping, UpdateConflict

LOCAL, REMOTE = "l", "r"


def canonical(value: Any) -> Any:
    """A JSON-able form in which equal values of both sides are equal."""
    if type(value) is str:  # the most common kind first
        return value if value != "" else None
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        try:
            number = Decimal(str(value)).normalize()
        except InvalidOperation:
            return str(value)
        return format(number, "f")
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def same(a: Any, b: Any) -> bool:
    return canonical(a) == canonical(b)


RULES = ("value_map", "before", "trim", "case", "max_length")


class TransformError(ValueError):
    """A transformation rule that is not well-formed (the message names the rule part)."""


def constant(field_mapping: FieldMapping) -> Any:
    """A constant value as the destination expects it: JSON when it parses (3, true, 12.50
    as an exact Decimal), else the text itself."""
    text = field_mapping.constant_value
    return None if text is None else _constant_of(text)


@lru_cache(maxsize=1024)
def _constant_of(text: str) -> Any:
    # Read once per text, not once per record: the values are never changed in place.
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        return text


def rule_problems(rule: Any) -> list[str]:
    """What is wrong with a transformation rule (empty when it is well-formed)."""
    if not isinstance(rule, Mapping):
        return [f"transformation must be a JSON object of {', '.join(RULES)}, got {rule!r}"]
    problems = [f"transformation: unknown rule {name!r} (rules: {', '.join(RULES)})"
                for name in rule if name not in RULES]
    checks = {
        "value_map": (lambda v: isinstance(v, Mapping) and all(
            isinstance(x, str | int | float | Decimal | bool) or x is None
            for x in v.values()), "an object of value → value"),
        "before": (lambda v: isinstance(v, str) and v != "", "a non-empty text"),
        "trim": (lambda v: isinstance(v, bool), "true or false"),
        "case": (lambda v: v in ("upper", "lower"), "'upper' or 'lower'"),
        "max_length": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                       "a positive whole number"),
    }
    for name, (valid, expected) in checks.items():
        if name in rule and not valid(rule[name]):
            problems.append(f"transformation.{name} must be {expected}, got {rule[name]!r}")
    return problems


def transform(field_mapping: FieldMapping, value: Any, pass_direction: Direction,
              max_length: int | None = None) -> Any:
    """Apply the field's transformation rule to a value travelling in ``pass_direction``.

    Rules (all optional, in this order): value_map (option sets; inverted for the
    remote-to-local direction), before (text before a separator), trim, case, max_length;
    text is always cut to the destination's length (``max_length``). A rule that is not
    well-formed raises TransformError."""
    rule = field_mapping.transformation
    if not rule and (type(rule) is dict or isinstance(rule, Mapping)):
        cut = isinstance(value, str) and isinstance(max_length, int) and max_length > 0
        return value[:max_length] if cut else value
    problems = rule_problems(rule)
    if problems:
        raise TransformError("; ".join(problems))
    if "value_map" in rule and value is not None:
        table = {str(k): v for k, v in dict(rule["value_map"]).items()}
        if pass_direction is Direction.FROM_INTEGRATION:
            table = {str(canonical(v)): k for k, v in table.items()}
            value = table.get(str(canonical(value)), value)
        else:
            value = table.get(str(canonical(value)) if not isinstance(value, str) else value,
                              value)
    if isinstance(value, str):
        if rule.get("before") and rule["before"] in value:
            value = value.split(rule["before"], 1)[0]
        if rule.get("trim"):
            value = value.strip()
        if rule.get("case") == "upper":
            value = value.upper()
        elif rule.get("case") == "lower":
            value = value.lower()
        limits = [n for n in (rule.get("max_length"), max_length) if isinstance(n, int) and n > 0]
        if limits:
            value = value[: min(limits)]
    return value


@dataclass(slots=True)
class FieldValue:
    """One field of one record in a pass: the source's value (as read), the value the
    destination should hold, and the destination's current value (None for a create).
    Never changed once made (``dataclasses.replace`` makes another); not frozen, as a
    frozen dataclass's init costs three times as much, and a pass makes one per record
    and field."""

    field: FieldMapping
    source: Any
    wanted: Any
    current: Any = None


@dataclass
class Plan:
    """What a pass does to one coupled record."""

    writes: dict[str, FieldValue] = field(default_factory=dict)  # by field key
    conflicts: list[FieldMapping] = field(default_factory=list)
    left_for_other_pass: list[FieldMapping] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not self.writes and not self.conflicts


def plan_update(
    values: list[FieldValue],
    *,
    pass_direction: Direction,
    mapping_direction: Direction,
    policy: UpdateConflict,
    source_snapshot: Mapping[str, Any] | None,
    destination_snapshot: Mapping[str, Any] | None,
) -> Plan:
    """Decide, field by field, what to write to the destination of a coupled record.

    A field is written when the destination differs and the source changed since the last
    sync (or the destination is a slave: one-way mapping or one-way field). When only the
    destination changed, the field is left for the other pass. Both changed to different
    values: a conflict, settled by ``policy`` (None keeps it as a conflict)."""
    plan = Plan()
    for fv in values:
        f = fv.field
        if same(fv.wanted, fv.current):
            continue
        slave = mapping_direction is not Direction.BIDIRECTIONAL \
            or f.direction is not Direction.BIDIRECTIONAL
        if slave:
            plan.writes[f.key] = fv
            continue
        source_changed = (source_snapshot is None or f.key not in source_snapshot
                          or canonical(fv.source) != source_snapshot[f.key])
        destination_changed = (destination_snapshot is not None
                               and f.key in destination_snapshot
                               and canonical(fv.current) != destination_snapshot[f.key])
        if source_changed and destination_changed:
            if _source_wins(policy, pass_direction):
                plan.writes[f.key] = fv
            elif policy is UpdateConflict.NONE:
                plan.conflicts.append(f)
            else:
                plan.left_for_other_pass.append(f)
        elif source_changed:
            plan.writes[f.key] = fv
        else:
            plan.left_for_other_pass.append(f)
    return plan


def _source_wins(policy: UpdateConflict, pass_direction: Direction) -> bool:
    return (policy is UpdateConflict.SEND_UPDATE_TO_INTEGRATION
            and pass_direction is Direction.TO_INTEGRATION) or (
        policy is UpdateConflict.GET_UPDATE_FROM_INTEGRATION
        and pass_direction is Direction.FROM_INTEGRATION)


def conflict_message(conflicts: list[FieldMapping]) -> str:
    names = ", ".join(f.label for f in conflicts)
    return ("update conflict: one or both values have changed since the last "
            f"synchronization (changed on both sides: {names})")


def new_snapshot(
    old: Mapping[str, Any] | None,
    values: list[FieldValue],
    *,
    pass_direction: Direction,
    written: set[str] | None,
    left: set[str],
) -> dict[str, dict[str, Any]]:
    """The coupling's snapshot after a pass: written and equal fields take both sides'
    values as they are now; fields left for the other pass keep their old entries, so the
    other pass still sees that their destination changed. ``written=None``: every field was
    written (a create)."""
    snapshot: dict[str, dict[str, Any]] = {
        LOCAL: dict((old or {}).get(LOCAL) or {}), REMOTE: dict((old or {}).get(REMOTE) or {})}
    src, dst = (LOCAL, REMOTE) if pass_direction is Direction.TO_INTEGRATION else (REMOTE, LOCAL)
    source, destination = snapshot[src], snapshot[dst]
    for fv in values:  # once per record and field: text told first, as canonical does
        key = fv.field.key
        if left and key in left:
            continue
        value = fv.source
        source[key] = (value or None) if type(value) is str else canonical(value)
        value = fv.wanted if written is None or key in written else fv.current
        destination[key] = (value or None) if type(value) is str else canonical(value)
    return snapshot


def settle_pending(
    synced: Mapping[str, Any] | None,
    pending: Mapping[str, Any] | None,
    remote_now: Mapping[str, Any],
) -> Mapping[str, Any] | None:
    """The snapshot to decide from when an earlier write's outcome was not recorded (its
    answer lost). ``pending`` is the snapshot that write leaves when the service applies it;
    ``remote_now`` the remote side's canonical values, by field key. A field whose remote
    value equals what the write sent takes the pending entries: the value is crmsync's own,
    not a CRM user's edit, so a later ERP edit simply wins. Any other field keeps its
    confirmed entries, so a CRM user's edit since is still seen as one."""
    if not pending:
        return synced
    wrote = pending.get(REMOTE) or {}
    pending_local = pending.get(LOCAL) or {}
    out: dict[str, dict[str, Any]] = {
        LOCAL: dict((synced or {}).get(LOCAL) or {}),
        REMOTE: dict((synced or {}).get(REMOTE) or {})}
    for key, value in wrote.items():
        if key in remote_now and remote_now[key] == value:
            out[REMOTE][key] = value
            if key in pending_local:
                out[LOCAL][key] = pending_local[key]
    return out
