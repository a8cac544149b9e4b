"""Integration table mappings, field mappings and couplings as frozen dataclasses built
from their rows (``from_row``), and the enums of their fixed vocabularies."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from worker.vocabulary import Direction as Direction  # the ground floor's, named here too


class UpdateConflict(enum.StrEnum):
    NONE = "none"
    SEND_UPDATE_TO_INTEGRATION = "send_update_to_integration"
    GET_UPDATE_FROM_INTEGRATION = "get_update_from_integration"


class DeletionConflict(enum.StrEnum):
    NONE = "none"
    RESTORE_RECORDS = "restore_records"
    REMOVE_COUPLING = "remove_coupling"
    PROPAGATE_DELETE = "propagate_delete"


class ApplyOn(enum.StrEnum):
    """When a field mapping's value is written (Business Central's configuration templates:
    values a new record gets, which its users may change afterwards)."""

    ALWAYS = "always"  # every sync that finds the field changed writes it
    CREATE = "create"  # only when the record is created on the destination side


class CouplingState(enum.StrEnum):
    COUPLED = "coupled"
    CREATING_REMOTE = "creating_remote"
    CREATING_LOCAL = "creating_local"


@dataclass(frozen=True)
class FieldMapping:
    """One row of ``crmsync.integration_field_mappings``."""

    id: int
    local_column: str | None
    remote_property: str | None
    direction: Direction
    constant_value: str | None
    transformation: Mapping[str, Any]
    lookup_mapping: str | None
    lookup_local_column: str | None
    remote_bind_property: str | None
    clear_value_on_failed_sync: bool
    not_null: bool
    use_for_matching: bool
    case_sensitive_matching: bool
    match_priority: int
    remote_read_property: str | None = None
    apply_on: ApplyOn = ApplyOn.ALWAYS

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> FieldMapping:
        return cls(
            id=row["id"], local_column=row["local_column"],
            remote_property=row["remote_property"], direction=Direction(row["direction"]),
            constant_value=row["constant_value"], transformation=row["transformation"] or {},
            lookup_mapping=row["lookup_mapping"], lookup_local_column=row["lookup_local_column"],
            remote_bind_property=row["remote_bind_property"],
            clear_value_on_failed_sync=row["clear_value_on_failed_sync"],
            not_null=row["not_null"], use_for_matching=row["use_for_matching"],
            case_sensitive_matching=row["case_sensitive_matching"],
            match_priority=row["match_priority"],
            remote_read_property=row.get("remote_read_property"),
            apply_on=ApplyOn(row.get("apply_on") or ApplyOn.ALWAYS),
        )

    @cached_property
    def key(self) -> str:
        """The field's name in a coupling's snapshot of synced values (asked per record
        and field: made once)."""
        return str(self.id)

    @property
    def on_create_only(self) -> bool:
        """Written when the record is created, never by a later sync."""
        return self.apply_on is ApplyOn.CREATE

    @property
    def label(self) -> str:
        return f"{self.local_column or '(constant)'} <-> {self.remote_property or '(constant)'}"

    @property
    def remote_read_name(self) -> str | None:
        """The property to read: ``remote_read_property`` when set, else a lookup is read
        back as ``_<property>_value`` (Dataverse's convention)."""
        if self.remote_property is None:
            return None
        if self.remote_read_property:
            return self.remote_read_property
        if self.lookup_mapping:
            return f"_{self.remote_property}_value"
        return self.remote_property


@dataclass(frozen=True)
class Marks:
    """How far a mapping's passes have come: its run state, kept apart from its definition
    (the same definition with other marks is the same mapping)."""

    local_modified_since: datetime | None = None
    remote_modified_since: datetime | None = None
    remote_modified_complete: bool = False  # every record stamped at the mark was read
    triggers_installed: bool = False

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Marks:
        return cls(row["local_modified_since"], row["remote_modified_since"],
                   bool(row.get("remote_modified_complete")),
                   bool(row.get("triggers_installed")))


@dataclass(frozen=True)
class TableMapping:
    """One row of ``crmsync.integration_table_mappings`` with its field mappings: the
    definition only (its run state is :class:`Marks`)."""

    name: str
    local_table: str
    local_key: str
    change_capture: str
    local_modified_column: str | None
    connection_name: str
    entity_set: str
    remote_key: str
    remote_modified_on: str
    direction: Direction
    local_filter: tuple[Mapping[str, Any], ...]
    remote_filter: str | None
    sync_only_coupled: bool
    update_conflict: UpdateConflict
    deletion_conflict: DeletionConflict
    enabled: bool
    fields: tuple[FieldMapping, ...]
    depends_on: frozenset[str] = frozenset()
    business_key_column: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], fields: tuple[FieldMapping, ...],
                 depends_on: frozenset[str] = frozenset()) -> TableMapping:
        return cls(
            name=row["name"], local_table=row["local_table"], local_key=row["local_key"],
            change_capture=row["change_capture"],
            local_modified_column=row["local_modified_column"],
            connection_name=row["connection_name"], entity_set=row["entity_set"],
            remote_key=row["remote_key"], remote_modified_on=row["remote_modified_on"],
            direction=Direction(row["direction"]),
            local_filter=tuple(row["local_filter"] or ()),
            remote_filter=row["remote_filter"], sync_only_coupled=row["sync_only_coupled"],
            update_conflict=UpdateConflict(row["update_conflict_resolution"]),
            deletion_conflict=DeletionConflict(row["deletion_conflict_resolution"]),
            enabled=row["enabled"], fields=fields, depends_on=depends_on,
            business_key_column=row.get("business_key_column"),
        )

    def fields_for(self, pass_direction: Direction) -> tuple[FieldMapping, ...]:
        return tuple(f for f in self.fields if f.direction.runs(pass_direction))

    @property
    def match_fields(self) -> tuple[FieldMapping, ...]:
        chosen = [f for f in self.fields
                  if f.use_for_matching and f.local_column and f.remote_property
                  and not f.lookup_mapping]
        return tuple(sorted(chosen, key=lambda f: (f.match_priority, f.id)))


@dataclass(frozen=True)
class Coupling:
    """One row of ``crmsync.couplings``: a local record paired with a remote one."""

    id: int
    mapping_name: str
    local_id: str
    remote_id: str
    state: CouplingState
    remote_version: str | None
    remote_modified_on: datetime | None
    synced_values: Mapping[str, Any] | None
    last_result_to: str | None
    last_result_from: str | None
    last_error: str | None
    skipped: bool
    # The snapshot an update or delete in flight leaves when the service applies it (its
    # answer not recorded yet): see transfer.settle_pending.
    pending_values: Mapping[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Coupling:
        return cls(
            id=row["id"], mapping_name=row["mapping_name"], local_id=row["local_id"],
            remote_id=row["remote_id"], state=CouplingState(row["state"]),
            remote_version=row["remote_version"], remote_modified_on=row["remote_modified_on"],
            synced_values=row["synced_values"], last_result_to=row["last_result_to"],
            last_result_from=row["last_result_from"], last_error=row["last_error"],
            skipped=row["skipped"], pending_values=row.get("pending_values"),
        )

    def last_result(self, pass_direction: Direction) -> str | None:
        if pass_direction is Direction.TO_INTEGRATION:
            return self.last_result_to
        return self.last_result_from

    def snapshot(self, side: str) -> Mapping[str, Any] | None:
        """The values of side 'l' (local) or 'r' (remote) at the last sync, by field key."""
        if not self.synced_values:
            return None
        values = self.synced_values.get(side)
        return values if isinstance(values, dict) else None
