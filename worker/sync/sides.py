"""What a side's writer is: the one protocol the ERP side (``local_writes.LocalWriter``) and
the CRM side (``remote_writes.RemoteWriter``) follow, so one pass runner (``runner``) drives
either direction.

A writer is given a chunk's decisions one by one (``enact``), commits what must be known
before anything is sent (``commit_intents``: the ids and values of records about to be
created, what an update leaves), then applies them and records each outcome — the
couplings, the job log's counters and errors — in one transaction (``finish``). An outcome
is only ever what the side confirmed or was read to hold: a write whose answer is unknown
leaves its intent, and the next pass reads the record back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from worker.sync.decide import Action


class Answer(enum.Enum):
    """A side's answer to one action, as its writer records it."""

    CONFIRMED = "confirmed"  # done: the side said so, or was read to hold it
    REFUSED = "refused"      # refused for a reason that lasts (a value, a constraint): the
    #                          same failure twice in a row skips the record
    FAILED = "failed"        # failed for a reason that may pass (throttled, a 5xx, a lock
    #                          or deadlock): retried by every pass, never skipped
    UNKNOWN = "unknown"      # no usable answer: nothing is assumed, the intent stays and
    #                          the next pass reads the record back


@dataclass(frozen=True)
class Again:
    """Decisions taken again after a fresh read of their records (a create answered
    "already exists", an update refused by a changed ETag), to be applied by a new writer
    of the same side. ``second_look``: a refusal of these is final for this pass."""

    actions: list[Action]
    second_look: bool = False


@dataclass
class Finished:
    """What a writer's ``finish`` leaves to the runner: decisions to apply again, and the
    connection failure that stopped it (raised once everything confirmed is recorded)."""

    again: list[Again] = field(default_factory=list)
    failure: Exception | None = None


class Writer(Protocol):
    def enact(self, action: Action) -> None: ...

    def commit_intents(self) -> None: ...

    def finish(self) -> Finished: ...
