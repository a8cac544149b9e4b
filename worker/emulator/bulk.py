"""Dataverse's bulk operation messages, bound to an entity set:
``POST …/accounts/Microsoft.Dynamics.CRM.CreateMultiple`` (and ``UpdateMultiple``,
``UpsertMultiple``) with ``{"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.account",
…}, …]}``.

As on a standard (SQL-backed) Dataverse table, a message is one transaction: any record it
refuses refuses the whole request and nothing of it is written (``Store.atomic``). The
error is the one the record would get on its own (a duplicate key 412, a missing record
404, a bad value 400), its message naming the record's position in ``Targets``.

- ``CreateMultiple``: creates (client-chosen keys allowed); 200 with ``{"Ids": […]}``.
- ``UpdateMultiple``: updates records named by their primary key in the body; a missing
  one is 404; 204.
- ``UpsertMultiple``: each record named by its primary key in the body or by ``@odata.id``
  (``accounts(<guid>)`` or an alternate key, ``accounts(accountnumber='C1')``); created
  when missing, else updated; 204 (Dataverse returns no ``UpsertMultipleResponse`` body).

Every item needs ``@odata.type`` naming the set's entity type, and one request may name a
record only once (Dataverse refuses duplicates within ``Targets``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from worker.emulator import errors
from worker.emulator.paths import BadKey, EntityRef, parse_entity_ref
from worker.emulator.profiles import Profile
from worker.emulator.protocol import Request, Response, empty_response, json_response
from worker.emulator.schema import EntitySet, Schema
from worker.emulator.store import Store
from worker.emulator.values import coerce, parse_body

MESSAGES = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")
ACTION_PREFIX = "Microsoft.Dynamics.CRM."
MAX_TARGETS = 5000  # more than any client should send at once; Dataverse's limit is size


class BulkMessages:
    """Runs one bulk message against the store, all or nothing, when the profile has them.
    ``unsupported``: sets whose entity refuses the messages (not every standard table has
    them)."""

    def __init__(self, schema: Schema, store: Store, profile: Profile,
                 unsupported: frozenset[str] = frozenset()) -> None:
        self.schema = schema
        self.store = store
        self.namespace = profile.namespace
        self.enabled = profile.bulk_messages
        self.unsupported = unsupported

    @property
    def actions(self) -> tuple[str, ...]:
        """The bound actions ``$metadata`` declares."""
        return MESSAGES if self.enabled else ()

    def route(self, request: Request, path: str) -> Response | None:
        """The answer to ``path`` when it names a bulk message of a set; else None."""
        action = split_action(path) if self.enabled else None
        if action is None or action[0] not in self.schema:
            return None
        return self.run(request, self.schema[action[0]], action[1])

    def run(self, request: Request, entity_set: EntitySet, message: str) -> Response:
        if message not in MESSAGES:
            raise errors.ODataError(404, errors.RESOURCE_NOT_FOUND,
                                    f"Resource not found for the segment '{ACTION_PREFIX}"
                                    f"{message[:100]}'.")
        if request.method != "POST":
            raise errors.ODataError(405, errors.QUERY_SYNTAX, f"{message} takes POST.",
                                    {"Allow": "POST"})
        if entity_set.name in self.unsupported:
            raise errors.bad_payload(
                f"The '{message}' method does not support entities of type "
                f"'{entity_set.entity_type}'. MessageProcessorCache returned "
                "MessageProcessor.Empty.")
        targets = self._targets(request, entity_set)
        run: Callable[[EntitySet, int, dict[str, Any]], str] = {
            "CreateMultiple": self._create, "UpdateMultiple": self._update,
            "UpsertMultiple": self._upsert}[message]
        ids: list[str] = []
        seen: set[str] = set()
        with self.store.atomic():  # one refused record undoes every write before it
            for n, target in enumerate(targets):
                key = self._each(run, entity_set, n, target)
                if key in seen:
                    raise errors.bad_payload(f"Targets[{n}]: the record {key} is named more "
                                             "than once in one request.")
                ids.append(key)
                seen.add(key)
        if message == "CreateMultiple":
            return json_response(200, {
                "@odata.context": f"{request.service_root}/$metadata#{self.namespace}"
                                  ".CreateMultipleResponse", "Ids": ids})
        return empty_response(204)

    def _targets(self, request: Request, entity_set: EntitySet) -> list[dict[str, Any]]:
        body = request.json()
        targets = body.get("Targets") if isinstance(body, dict) else None
        if not isinstance(targets, list) or not targets:
            raise errors.bad_payload("The parameter 'Targets' must be a non-empty array of "
                                     "entities.")
        if len(targets) > MAX_TARGETS:
            raise errors.bad_payload(f"'Targets' holds {len(targets)} records; at most "
                                     f"{MAX_TARGETS} a request.")
        wanted = f"{self.namespace}.{entity_set.entity_type}"
        for n, target in enumerate(targets):
            if not isinstance(target, dict):
                raise errors.bad_payload(f"Targets[{n}] is not an entity object.")
            if target.get("@odata.type") != wanted:
                raise errors.bad_payload(
                    f"Targets[{n}]: the @odata.type annotation must be '{wanted}' "
                    f"(found {str(target.get('@odata.type'))[:80]!r}).")
        return targets

    @staticmethod
    def _each(run: Callable[[EntitySet, int, dict[str, Any]], str], entity_set: EntitySet,
              n: int, target: dict[str, Any]) -> str:
        try:
            return run(entity_set, n, target)
        except errors.ODataError as exc:
            raise errors.ODataError(exc.status, exc.code, f"Targets[{n}]: {exc.message}",
                                    exc.headers) from exc

    def _create(self, entity_set: EntitySet, n: int, target: dict[str, Any]) -> str:
        changes = parse_body(entity_set, target)
        record = self.store.create(entity_set.name, changes)
        return str(record[entity_set.key])

    def _update(self, entity_set: EntitySet, n: int, target: dict[str, Any]) -> str:
        changes = parse_body(entity_set, target)
        if changes.key is None:
            raise errors.bad_payload(f"The record has no {entity_set.key}: UpdateMultiple "
                                     "names each record by its primary key.")
        record, _ = self.store.upsert(entity_set.name, changes.key, changes, if_match="*")
        return str(record[entity_set.key])

    def _upsert(self, entity_set: EntitySet, n: int, target: dict[str, Any]) -> str:
        changes = parse_body(entity_set, target)
        ref = self._reference(entity_set, target.get("@odata.id"))
        alternate: tuple[tuple[str, Any], ...] = ()
        key = changes.key
        if ref is not None:
            key = self.store.resolve(ref)
            if key is None and ref.key is None:  # a new record named by its alternate key
                alternate = tuple((name, coerce(entity_set, entity_set.properties[name], v))
                                  for name, v in ref.alternate)
            key = key or ref.key or changes.key or str(uuid.uuid4())
            if changes.key is not None and changes.key != key:
                raise errors.bad_payload("The key in the body differs from @odata.id.")
        if key is None:
            raise errors.bad_payload(f"The record has neither {entity_set.key} nor "
                                     "@odata.id: UpsertMultiple cannot tell which it is.")
        changes.key = None
        record, _ = self.store.upsert(entity_set.name, key, changes, alternate=alternate)
        return str(record[entity_set.key])

    @staticmethod
    def _reference(entity_set: EntitySet, raw: Any) -> EntityRef | None:
        if raw is None:
            return None
        try:
            ref = parse_entity_ref(raw) if isinstance(raw, str) else None
        except BadKey:
            ref = None
        if ref is None or ref.set_name != entity_set.name:
            raise errors.bad_payload(f"@odata.id {str(raw)[:120]!r} does not name a record of "
                                     f"{entity_set.name}.")
        return ref


def split_action(path: str) -> tuple[str, str] | None:
    """``("accounts", "CreateMultiple")`` for ``/accounts/Microsoft.Dynamics.CRM.
    CreateMultiple``; None for any other path."""
    set_name, slash, action = path.lstrip("/").partition("/")
    if not slash or not action.startswith(ACTION_PREFIX) or "/" in action:
        return None
    return set_name, action[len(ACTION_PREFIX):]
