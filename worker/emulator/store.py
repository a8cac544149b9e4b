"""The in-memory tables behind the emulator, safe to share between request threads.

One re-entrant lock guards everything: requests are short, and a ``$batch`` change set holds
the lock for its whole length, which is what makes it atomic without any other machinery.
Records are copy-on-write: a write stores a new dict and never mutates a stored one, so a
reader may keep and render a record after releasing the lock, and the undo journal of a change
set is just the list of the records it replaced.

Change tracking (``Prefer: odata.track-changes``) rests on the global ``versionnumber``: a
record changed since a position has a greater version, and every delete also takes the next
version and is remembered, per set, as a tombstone (key, version, time). A ``ChangeToken`` is
such a position plus the time it was taken; it expires when older than the retention, when
the tombstones it would need were dropped (``expire_change_tokens``, ``clear``, ``load``), or
when it names a position this store never had."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.emulator import errors
from worker.emulator.indexes import SetIndexes
from worker.emulator.paths import EntityRef
from worker.emulator.schema import EntitySet, Schema
from worker.emulator.values import Changes, record_from_json, record_to_json

Record = dict[str, Any]
Clock = Callable[[], datetime]
Tombstone = tuple[int, datetime]  # (version of the delete, when)
Listener = Callable[[str, str, str], None]  # (message, set name, key)

# Dataverse keeps change-tracking data for 7 days (Organization.ExpireChangeTrackingInDays).
DEFAULT_CHANGE_RETENTION = 7 * 24 * 3600.0
_TOKEN_TIME = "%m/%d/%Y %H:%M:%S"
_TRIM_EVERY = 1024  # tombstones added to a set between two sweeps of expired ones


def whole_seconds_utc() -> datetime:
    """Now, truncated to the second as Dataverse stores ``modifiedon``."""
    return datetime.now(UTC).replace(microsecond=0)


def etag_of(record: Record) -> str:
    return f'W/"{record["versionnumber"]}"'


def etag_matches(header: str, record: Record) -> bool:
    """Whether an ``If-Match`` / ``If-None-Match`` value names this record's version."""
    if header.strip() == "*":
        return True
    version = str(record["versionnumber"])
    return any(tag.strip().removeprefix("W/").strip('"') == version
               for tag in header.split(","))


@dataclass(frozen=True)
class ChangeToken:
    """A position in the store's change sequence and the (UTC) time it was taken.

    Its text is Dataverse's ``$deltatoken`` shape, ``<version>!<MM/dd/yyyy HH:mm:ss>``
    (``919042!08/22/2017 08:10:44``); clients treat it as opaque."""

    version: int
    issued: datetime

    def __str__(self) -> str:
        return f"{self.version}!{self.issued.astimezone(UTC).strftime(_TOKEN_TIME)}"

    @classmethod
    def parse(cls, text: str) -> ChangeToken:
        """The token ``str()`` made; ValueError for anything else."""
        version, bang, issued = text.partition("!")
        if not bang or not version.isdigit():
            raise ValueError(f"not a change tracking token: {text!r}")
        return cls(int(version), datetime.strptime(issued, _TOKEN_TIME).replace(tzinfo=UTC))


class Store:
    """Records of every entity set by lower-case GUID, with alternate-key indexes, the
    global ``versionnumber`` counter and, for change tracking, the tombstones of deletes.

    ``change_retention`` is how many seconds a change token stays valid (None: forever);
    ``tracked`` the sets with change tracking enabled."""

    def __init__(self, schema: Schema, clock: Clock = whole_seconds_utc, *,
                 change_retention: float | None = DEFAULT_CHANGE_RETENTION,
                 change_tracking: bool | Iterable[str] = True) -> None:
        self.schema = schema
        self.lock = threading.RLock()
        self._clock = clock
        self._tables: dict[str, dict[str, Record]] = {s.name: {} for s in schema}
        self._indexes: dict[str, dict[str, dict[Any, str]]] = {
            s.name: {alt: {} for alt in s.alternate_keys} for s in schema}
        self._ordered = {s.name: SetIndexes(s.modified_on) for s in schema}
        self._version = 0
        self._journal: list[tuple[str, str, Record | None, Tombstone | None]] | None = None
        self._listeners: list[Listener] = []
        self._held: list[tuple[str, str, str]] = []  # events of the open atomic() block
        self.change_retention = change_retention
        names = ([s.name for s in schema] if change_tracking is True
                 else [] if change_tracking is False else list(change_tracking))
        self._check_sets(names)
        self.tracked: set[str] = set(names)
        self._tombstones: dict[str, dict[str, Tombstone]] = {s.name: {} for s in schema}
        self._trim_countdown: dict[str, int] = {s.name: _TRIM_EVERY for s in schema}
        # The oldest valid token position per set, and the time before which no token of
        # this store can have been issued.
        self._token_floor: dict[str, int] = {s.name: 0 for s in schema}
        self._tracking_since = clock()

    # -- reads ---------------------------------------------------------------------------

    def get(self, set_name: str, key: str) -> Record | None:
        with self.lock:
            return self._tables[set_name].get(key)

    def resolve(self, ref: EntityRef) -> str | None:
        """The primary key ``ref`` designates, or None when no record matches."""
        entity_set = self.schema[ref.set_name]
        if ref.key is not None:
            return ref.key
        values = dict(ref.alternate)
        if set(values) == {entity_set.key} and isinstance(values[entity_set.key], str):
            return values[entity_set.key]
        if len(values) != 1 or next(iter(values)) not in entity_set.alternate_keys:
            raise errors.bad_query(
                f"The key {sorted(values)} is not a key of {entity_set.entity_type}; "
                f"alternate keys: {list(entity_set.alternate_keys)}")
        (name, value), = values.items()
        with self.lock:
            return self._indexes[ref.set_name][name].get(_fold(value))

    def alternate_owner(self, set_name: str, name: str, value: Any) -> str | None:
        """The key of the record whose alternate key ``name`` is ``value``, if any."""
        with self.lock:
            return self._indexes[set_name][name].get(_fold(value))

    def indexes(self, set_name: str) -> SetIndexes:
        """The ordered indexes of a set (read them under ``lock``)."""
        return self._ordered[set_name]

    def require(self, set_name: str, key: str) -> Record:
        record = self.get(set_name, key)
        if record is None:
            raise errors.not_found(self.schema[set_name].entity_type, key)
        return record

    def scan(self, set_name: str, predicate: Callable[[Record], bool] | None) -> list[Record]:
        """The records of a set matching ``predicate``, as of one instant."""
        with self.lock:
            rows = self._tables[set_name].values()
            return [r for r in rows if predicate(r)] if predicate else list(rows)

    def count(self, set_name: str) -> int:
        with self.lock:
            return len(self._tables[set_name])

    # -- writes --------------------------------------------------------------------------

    def create(self, set_name: str, changes: Changes,
               alternate: tuple[tuple[str, Any], ...] = ()) -> Record:
        """A new record; 412 (duplicate) when the client-chosen key exists."""
        entity_set = self.schema[set_name]
        with self.lock:
            key = changes.key or str(uuid.uuid4())
            if key in self._tables[set_name]:
                raise errors.duplicate(entity_set.entity_type)
            record = entity_set.blank_record()
            record.update(alternate)
            record[entity_set.key] = key
            record["createdon"] = self._clock()
            record = self._apply(entity_set, key, record, changes)
            self._changed("Create", set_name, key)
            return record

    def upsert(self, set_name: str, key: str | None, changes: Changes, *,
               if_match: str | None = None, if_none_match: str | None = None,
               alternate: tuple[tuple[str, Any], ...] = ()) -> tuple[Record, bool]:
        """PATCH semantics: update, or create when missing; returns (record, created).

        ``If-Match`` makes it update-only (404 when missing, 412 on another version);
        ``If-None-Match: *`` makes it create-only (412 when the record exists)."""
        entity_set = self.schema[set_name]
        if changes.key is not None and key is not None and changes.key != key:
            raise errors.bad_payload("The key in the body differs from the key in the URL.")
        with self.lock:
            current = self._tables[set_name].get(key) if key else None
            if current is None:
                if if_match is not None:
                    raise errors.not_found(entity_set.entity_type, key or str(dict(alternate)))
                changes.key = key
                return self.create(set_name, changes, alternate), True
            if if_none_match is not None and etag_matches(if_none_match, current):
                raise errors.duplicate(entity_set.entity_type)
            if if_match is not None and not etag_matches(if_match, current):
                raise errors.version_mismatch()
            record = self._apply(entity_set, key or "", dict(current), changes)
            self._changed("Update", set_name, record[entity_set.key])
            return record, False

    def delete(self, set_name: str, key: str, *, if_match: str | None = None) -> None:
        entity_set = self.schema[set_name]
        with self.lock:
            current = self.require(set_name, key)
            if if_match is not None and not etag_matches(if_match, current):
                raise errors.version_mismatch()
            self._store(entity_set, key, None)
            self._unlink(set_name, key)
            self._changed("Delete", set_name, key)

    # -- listeners -----------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(message, set_name, key)`` after each committed create, update
        ("Update") or delete; a write inside ``atomic()`` is reported when the block
        commits, and never when it is undone. Listeners run under the store's lock: they
        must only hand the event on (to a queue), never wait."""
        self._listeners.append(listener)

    def _changed(self, message: str, set_name: str, key: str) -> None:
        if self._journal is not None:
            self._held.append((message, set_name, key))
            return
        for listener in self._listeners:
            listener(message, set_name, key)

    # -- change tracking -----------------------------------------------------------------

    def is_tracked(self, set_name: str) -> bool:
        """Whether change tracking is enabled for the set."""
        return set_name in self.tracked

    def set_change_tracking(self, set_name: str, enabled: bool = True) -> None:
        """Enable or disable change tracking for one set (disabling expires its tokens)."""
        self._check_sets([set_name])
        with self.lock:
            if enabled:
                self.tracked.add(set_name)
            else:
                self.tracked.discard(set_name)
                self.expire_change_tokens(set_name)

    def change_token(self) -> ChangeToken:
        """The current position: every write so far is at or before it."""
        with self.lock:
            return ChangeToken(self._version, self._clock())

    def check_change_token(self, set_name: str, token: ChangeToken) -> None:
        """410 (Dataverse's ExpiredVersionStamp) unless ``token`` can still be answered."""
        with self.lock:
            now = self._clock()
            too_old = (self.change_retention is not None
                       and token.issued < now - timedelta(seconds=self.change_retention))
            if (too_old or token.version < self._token_floor[set_name]
                    or token.version > self._version or token.issued < self._tracking_since):
                raise errors.change_token_expired()

    def changes_since(self, set_name: str, since: int,
                      upto: int) -> tuple[list[Record], list[tuple[int, str]]]:
        """What changed in a set after version ``since`` up to ``upto`` (inclusive): the
        current records with a version in that range, and the (version, key) of records
        deleted in it and not there now; both in version order."""
        with self.lock:
            self._trim_tombstones(set_name)
            table = self._tables[set_name]
            changed = [r for r in table.values() if since < r["versionnumber"] <= upto]
            deleted = [(version, key) for key, (version, _) in self._tombstones[set_name].items()
                       if since < version <= upto and key not in table]
        changed.sort(key=lambda r: r["versionnumber"])
        deleted.sort()
        return changed, deleted

    def expire_change_tokens(self, *set_names: str) -> None:
        """Make every change token issued so far (for these sets; all when none) expired, as
        if the retention had passed: their next delta read answers 410."""
        names = set_names or tuple(self._tables)
        self._check_sets(names)
        with self.lock:
            self._version += 1  # tokens issued from now on are past the new floor
            for name in names:
                self._token_floor[name] = self._version
                self._tombstones[name].clear()

    def _check_sets(self, names: Iterable[str]) -> None:
        unknown = sorted(set(names) - set(self._tables))
        if unknown:
            raise KeyError(f"no entity set {', '.join(unknown)} in the schema")

    def _trim_tombstones(self, set_name: str) -> None:
        """Forget deletes only expired tokens could ask about (older than the retention)."""
        self._trim_countdown[set_name] = _TRIM_EVERY
        if self.change_retention is None:
            return
        horizon = self._clock() - timedelta(seconds=self.change_retention)
        tombstones = self._tombstones[set_name]
        for key in [k for k, (_, when) in tombstones.items() if when < horizon]:
            del tombstones[key]

    def _apply(self, entity_set: EntitySet, key: str, record: Record, changes: Changes) -> Record:
        record.update(changes.values)
        lookups = {lk.attribute: lk for lk in entity_set.lookups}
        for attribute, (target_set, ref) in changes.binds.items():
            target_key = self.resolve(ref) if ref is not None else None
            if ref is not None and (target_key is None
                                    or target_key not in self._tables[target_set]):
                raise errors.not_found(self.schema[target_set].entity_type,
                                       target_key or str(dict(ref.alternate)))
            lookup = lookups[attribute]
            record[lookup.value_name] = target_key
            if lookup.read_as is None:  # Dataverse names the target's type beside the id
                record[lookup.annotation_name] = (
                    self.schema[target_set].entity_type if target_key else None)
        for prop in entity_set.properties.values():
            if prop.computed_from:
                parts = [record.get(name) for name in prop.computed_from]
                record[prop.name] = " ".join(p for p in parts if p) or None
        self._stamp(entity_set, record)
        self._store(entity_set, key, record)
        return record

    def _stamp(self, entity_set: EntitySet, record: Record) -> None:
        self._version += 1
        record["versionnumber"] = self._version
        record[entity_set.modified_on] = self._clock()

    def _store(self, entity_set: EntitySet, key: str, record: Record | None) -> None:
        """Put (or remove, for None) one record, keeping the alternate-key indexes exact.

        Checks come before any change, so a refused write leaves nothing half-done."""
        table = self._tables[entity_set.name]
        old = table.get(key)
        indexes = self._indexes[entity_set.name]
        for name, index in indexes.items():
            value = record.get(name) if record else None
            owner = index.get(_fold(value)) if value is not None else None
            if owner is not None and owner != key:
                raise errors.duplicate(entity_set.entity_type)
        for name, index in indexes.items():
            if old is not None and old.get(name) is not None:
                index.pop(_fold(old[name]), None)
            if record is not None and record.get(name) is not None:
                index[_fold(record[name])] = key
        self._ordered[entity_set.name].put(key, old, record)
        tombstones = self._tombstones[entity_set.name]
        if self._journal is not None:
            self._journal.append((entity_set.name, key, old, tombstones.get(key)))
        if record is None:
            if table.pop(key, None) is not None:
                self._version += 1  # a delete is a change too: it takes the next version
                tombstones[key] = (self._version, self._clock())
                self._trim_countdown[entity_set.name] -= 1
                if self._trim_countdown[entity_set.name] <= 0:
                    self._trim_tombstones(entity_set.name)
        else:
            table[key] = record
            tombstones.pop(key, None)  # created again: its record tells the story now

    def _unlink(self, set_name: str, key: str) -> None:
        """Clear lookups that pointed at a deleted record (Dataverse's "remove link")."""
        for entity_set in self.schema:
            lookups = [lk for lk in entity_set.lookups if set_name in lk.targets.values()]
            if not lookups:
                continue
            for other_key, other in list(self._tables[entity_set.name].items()):
                hits = [lk for lk in lookups if other.get(lk.value_name) == key]
                if hits:
                    record = dict(other)
                    for lk in hits:
                        record[lk.value_name] = None
                        if lk.read_as is None:
                            record[lk.annotation_name] = None
                    self._stamp(entity_set, record)
                    self._store(entity_set, other_key, record)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Run several writes as one: all of them, or (on an exception) none of them."""
        with self.lock:
            if self._journal is not None:  # nested: the outer block decides
                yield
                return
            self._journal = []
            self._held = []
            try:
                yield
            except BaseException:
                self._held = []
                journal, self._journal = self._journal, None
                for set_name, key, old, tombstone in reversed(journal):
                    self._store(self.schema[set_name], key, old)
                    if tombstone is None:
                        self._tombstones[set_name].pop(key, None)
                    else:
                        self._tombstones[set_name][key] = tombstone
                raise
            finally:
                self._journal = None
            held, self._held = self._held, []
            for message, set_name, key in held:
                self._changed(message, set_name, key)

    # -- whole-store operations -----------------------------------------------------------

    def clear(self) -> None:
        """Remove every record (no tombstones: change tokens issued so far expire)."""
        with self.lock:
            for set_name, table in self._tables.items():
                table.clear()
                self._ordered[set_name].clear()
                for index in self._indexes[set_name].values():
                    index.clear()
            self.expire_change_tokens()

    def dump(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (for ``--data-file`` and the admin endpoint)."""
        with self.lock:
            return {"versionnumber": self._version, "sets": {
                name: [record_to_json(r) for r in table.values()]
                for name, table in self._tables.items()}}

    def load(self, doc: dict[str, Any]) -> None:
        """Replace the content with a ``dump()`` (tokens issued before expire: tombstones
        are not saved)."""
        with self.lock:
            self.clear()
            self._version = max(self._version, int(doc.get("versionnumber", 0)))
            self.expire_change_tokens()
            for set_name, rows in doc.get("sets", {}).items():
                if set_name not in self.schema:
                    continue
                entity_set = self.schema[set_name]
                for row in rows:
                    record = record_from_json(entity_set, row)
                    self._store(entity_set, record[entity_set.key], record)


def _fold(value: Any) -> Any:
    """Alternate keys compare like Dataverse's case-insensitive collation."""
    return value.casefold() if isinstance(value, str) else value
