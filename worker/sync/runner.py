"""One runner for the chunks of both passes: a chunk's decisions (the pass's reader made
them: read → decide) are handed to the writer of the side the pass writes to; its intents
are committed before anything is sent; then the writes are applied and recorded. What a
decision asks of the pass's *source* side — a record deleted there, or a local row put back
(``restore_records``) — is an action for that side's writer, applied right after: neither
writer nor pass reaches into the other side.

``prepare`` and ``Prepared.finish`` are the two halves the local→remote pass's pipeline
runs on different threads (the next chunk is read and decided while this one is sent);
``apply`` runs both at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from worker.sync.context import PassContext
from worker.sync.decide import Action, Kind
from worker.sync.local_writes import LocalWriter
from worker.sync.model import Direction
from worker.sync.remote_writes import RemoteWriter
from worker.sync.sides import Finished, Writer

TO = Direction.TO_INTEGRATION


def apply(px: PassContext, actions: Sequence[Action],
          records: Iterable[dict[str, Any]] = ()) -> None:
    """Apply a chunk's decisions and record them (``records``: the CRM records they were
    decided from, for a remote→local pass)."""
    prepare(px, actions, records).finish()


def prepare(px: PassContext, actions: Sequence[Action],
            records: Iterable[dict[str, Any]] = ()) -> Prepared:
    """Enact the decisions on the destination's writer (its intents are committed by
    ``Prepared.finish``, just before its writes are sent)."""
    return Prepared(px, actions, records)


class Prepared:
    """A chunk decided, ready to be applied (``finish``)."""

    def __init__(self, px: PassContext, actions: Sequence[Action],
                 records: Iterable[dict[str, Any]]) -> None:
        self.px = px
        self.decided = len(actions)  # one per record: the chunk's progress
        self.writer = destination_writer(px, records)
        self.for_source: list[Action] = []
        for action in actions:
            moved = for_source_side(px, action)
            if moved is not None:
                self.for_source.append(moved)
            else:
                self.writer.enact(action)

    def finish(self) -> None:
        """Commit the chunk's intents, apply and record it, then what it asks of the source
        side; a connection failure is raised after everything confirmed was recorded. (On
        the pipeline's thread: the next chunk is read and decided meanwhile.)"""
        self.px.read(self.decided)
        self.writer.commit_intents()
        failure = self._drain(self.writer)
        if self.for_source:
            source = source_writer(self.px)
            for action in self.for_source:
                source.enact(action)
            source.commit_intents()
            failure = self._drain(source) or failure
        if failure is not None:
            raise failure

    def _drain(self, writer: Writer) -> Exception | None:
        """Finish a writer, and the writers of the decisions it took again."""
        done: Finished = writer.finish()
        failure = done.failure
        for again in done.again:
            redo = same_side_writer(writer, self.px, second_look=again.second_look)
            for action in again.actions:
                moved = for_source_side(self.px, action)
                if moved is not None:
                    self.for_source.append(moved)
                else:
                    redo.enact(action)
            redo.commit_intents()
            failure = self._drain(redo) or failure
        return failure


def destination_writer(px: PassContext, records: Iterable[dict[str, Any]] = ()) -> Writer:
    if px.direction is TO:
        return RemoteWriter(px)
    return LocalWriter(px, records)


def source_writer(px: PassContext) -> Writer:
    return LocalWriter(px) if px.direction is TO else RemoteWriter(px)


def same_side_writer(writer: Writer, px: PassContext, *, second_look: bool) -> Writer:
    if isinstance(writer, RemoteWriter):
        return RemoteWriter(px, second_look=second_look)
    return LocalWriter(px)


def for_source_side(px: PassContext, action: Action) -> Action | None:
    """A decision that writes the pass's source side, as that side's writer takes it (its
    key: the record's id on the other side, as each writer keys its records); None for a
    decision about the destination."""
    c = action.coupling
    if c is None:
        return None
    if action.kind is Kind.DELETE_SOURCE:
        key = c.remote_id if px.direction is TO else c.local_id
        return replace(action, kind=Kind.DELETE, key=key)
    if action.kind is Kind.RESTORE:
        if px.direction is TO:  # the local row was deleted: put back from the CRM record
            return replace(action, kind=Kind.RECREATE, key=c.remote_id, values=())
        # The CRM record was deleted: it is created again by the next local→remote pass.
        return replace(action, key=c.local_id)
    return None
