"""The fixed vocabularies every floor speaks, on the ground floor so that anything may
name them: job kinds, entry and run statuses, sync directions. Each is a StrEnum whose
values are those the database stores (its check constraints list the same)."""

from __future__ import annotations

import enum


class JobKind(enum.StrEnum):
    SYNC_MAPPING = "sync_mapping"
    SYNC_ALL_MODIFIED = "sync_all_modified"
    CLEANUP = "cleanup"
    AUDIT = "audit"


class EntryStatus(enum.StrEnum):
    READY = "ready"
    IN_PROCESS = "in_process"
    ERROR = "error"
    ON_HOLD = "on_hold"
    ON_HOLD_INACTIVITY = "on_hold_inactivity"
    WAITING = "waiting"
    FINISHED = "finished"


class RunStatus(enum.StrEnum):
    IN_PROCESS = "in_process"
    SUCCESS = "success"
    ERROR = "error"
    ABANDONED = "abandoned"


class Direction(enum.StrEnum):
    TO_INTEGRATION = "to_integration"
    FROM_INTEGRATION = "from_integration"
    BIDIRECTIONAL = "bidirectional"

    def runs(self, pass_direction: Direction) -> bool:
        """Whether a mapping or field with this direction takes part in a pass."""
        return self is Direction.BIDIRECTIONAL or self is pass_direction
