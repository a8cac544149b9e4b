"""The OData v4 / Dataverse Web API client: one :class:`ODataClient` per connection, and an
:class:`EntitySet` per remote table addressed by set name, key property and modified-on
property (nothing Dataverse-only is assumed; the connection's Dialect says how the service
differs).

Reads stream page by page through ``@odata.nextLink`` (memory stays flat however many
records match). Writes are safe to repeat: a create carries the key the caller chose, so a
retry after a lost response finds the record there (``already_existed``) instead of making
a second one; an update or delete carries ``If-Match``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from worker.remote import filters, links, wire
from worker.remote.calls import Call, WriteResult
from worker.remote.changes import ChangeFeed
from worker.remote.config import ConnectionSettings
from worker.remote.errors import RemoteConflict, RemoteNotFound, RemoteProtocolError
from worker.remote.filters import FilterError, KeyType
from worker.remote.observer import RequestObserver
from worker.remote.service_metadata import ServiceMetadata
from worker.remote.transport import Reply, Transport
from worker.remote.wire import Select, parse_datetime

if TYPE_CHECKING:
    from worker.remote.batch import Operation, OperationResult
    from worker.remote.bulk import BulkRecord, BulkSupport

log = logging.getLogger(__name__)


class ODataClient:
    """The client of one connection (one service as one user). Thread-safe: share it
    between the threads of a process; requests go through one session whose pool is as
    large as the connection's concurrency, past one throttle gate."""

    def __init__(
        self,
        settings: ConnectionSettings,
        observer: RequestObserver | None = None,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport or Transport(settings, observer)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._bulk: BulkSupport | None = None
        # The one $metadata of this connection, shared by every user (service_metadata.py).
        self.service_metadata = ServiceMetadata(self.metadata)

    @property
    def base_url(self) -> str:
        return self.settings.url

    def entity_set(
        self,
        name: str,
        key: str,
        modified_on: str = "modifiedon",
        *,
        key_type: KeyType | None = None,
    ) -> EntitySet:
        """The entity set ``name`` (as in the URL, e.g. ``accounts``) whose key property
        is ``key`` and whose last-modified stamp is ``modified_on``."""
        return EntitySet(self, name, key, modified_on,
                         key_type or self.settings.dialect.key_type)

    def metadata(self) -> str:
        """The service's ``$metadata`` document (CSDL XML), read now; what reads it more
        than once goes through ``service_metadata``, which reads it once."""
        reply = self.transport.send("GET", f"{self.base_url}/$metadata",
                                    headers={"Accept": "application/xml"})
        return reply.body.decode("utf-8")

    def bind(self, target_set: str, key: str, *, key_type: KeyType | None = None) -> str:
        """The value of a ``<lookup>@odata.bind`` property: ``/target_set(key)``."""
        return bind(target_set, key, key_type or self.settings.dialect.key_type)

    def batch(self, operations: Sequence[Operation]) -> list[OperationResult]:
        """Run the operations, in $batch requests of ``batch_size`` when the dialect has
        $batch, else one request each — creates and updates as Dataverse's bulk messages
        when the dialect's ``bulk_messages`` is ``on`` (``remote.bulk.run_writes``); one
        result per operation, in order."""
        from worker.remote.bulk import run_writes

        return run_writes(self, operations)

    def bulk_support(self) -> BulkSupport:
        """What this connection knows of Dataverse's bulk messages (``remote.bulk``)."""
        from worker.remote.bulk import BulkSupport

        with self._pool_lock:
            if self._bulk is None:
                self._bulk = BulkSupport(self)
            return self._bulk

    def executor(self) -> ThreadPoolExecutor:
        """The threads that send a batch's requests in parallel (``concurrency`` of them,
        started on first use and shared by every caller of this client)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.concurrency,
                    thread_name_prefix=f"crmsync-remote-{self.settings.name}")
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.transport.close()

    def __enter__(self) -> ODataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ODataClient({self.settings.name!r}, {self.base_url!r})"


class EntitySet:
    """One entity set of the service: reads (streamed), idempotent writes, lookups."""

    def __init__(self, client: ODataClient, name: str, key: str, modified_on: str,
                 key_type: KeyType) -> None:
        self.client = client
        self.name = filters.prop(name)
        self.key = filters.prop(key)
        self.modified_on = filters.prop(modified_on)
        self.key_type = key_type
        self.url = f"{client.base_url}/{name}"

    def __repr__(self) -> str:
        return f"EntitySet({self.name!r}, key={self.key!r}, modified_on={self.modified_on!r})"

    def record_url(self, key: str) -> str:
        return f"{self.url}({filters.key_segment(key, self.key_type)})"

    def bind(self, target_set: str, key: str) -> str:
        """The value of a ``<lookup>@odata.bind`` property pointing at ``target_set(key)``
        (the target's key written like this set's keys)."""
        return bind(target_set, key, self.key_type)

    # ------------------------------------------------------------------------ reads

    def read_pages(
        self,
        *,
        select: Select = None,
        filter: str | None = None,
        orderby: str | None = None,
        top: int | None = None,
        on_reply: Callable[[Reply], None] | None = None,
        on_count: Callable[[int, bool], None] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """The matching records page by page, following ``@odata.nextLink`` exactly as the
        service sent it (``on_reply`` sees each page's reply). ``on_count``: ``$count=true``
        is asked for, and told the first page's ``@odata.count`` and whether that is only a
        lower bound (Dataverse stops counting at 5,000). Raises RemoteProtocolError
        when a next link repeats, leaves the service's origin or passes ``max_pages``
        (see :mod:`worker.remote.links`)."""
        settings = self.client.settings
        params = wire.query_params(select=select, filter=filter, orderby=orderby, top=top)
        if on_count is not None:
            params["$count"] = "true"
        url: str | None = self.url + ("?" + wire.encode_query(params) if params else "")
        headers = {}
        prefer = wire.prefer(
            f"odata.maxpagesize={settings.page_size}" if settings.dialect.prefer_maxpagesize
            else None,
            wire.annotations_preference(settings.dialect.annotations),
        )
        if prefer:
            headers["Prefer"] = prefer
        pager = links.Pager(self.client.base_url, settings.max_pages, urlsplit(self.url).path)
        while url is not None:
            reply = self.client.transport.send("GET", url, headers=headers)
            if on_reply is not None:
                on_reply(reply)
            doc = wire.parse_json(reply, "GET", url)
            rows = doc.get("value") if isinstance(doc, dict) else None
            if not isinstance(rows, list):
                raise RemoteProtocolError("the response has no 'value' array", status=reply.status,
                                          method="GET", path=urlsplit(self.url).path)
            if on_count is not None and pager.pages == 0:
                _tell_count(doc, settings.dialect.name, on_count)
            pager.page_read()
            log.debug("page read", extra={"connection": settings.name, "entity_set": self.name,
                                          "page": pager.pages, "records": len(rows)})
            url = pager.next_url(doc.get("@odata.nextLink"), url, reply.status)
            yield rows

    def read(
        self,
        *,
        select: Select = None,
        filter: str | None = None,
        orderby: str | None = None,
        top: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The matching records one by one (streamed page by page)."""
        for page in self.read_pages(select=select, filter=filter, orderby=orderby, top=top):
            yield from page

    def read_modified_since(
        self,
        since: datetime | None,
        *,
        select: Select = None,
        filter: str | None = None,
        overlap: timedelta = timedelta(seconds=1),
        after: bool = False,
        on_count: Callable[[int, bool], None] | None = None,
    ) -> ModifiedRead:
        """Records modified at or after ``since - overlap`` (all records when ``since`` is
        None), ordered by (modified-on, key). Stamps have second precision and many records
        share one, so the read is inclusive and overlaps the previous one: the caller
        skips records whose stamp it already stored. ``after``: only records modified
        strictly after ``since`` (the caller knows every record stamped ``since`` or
        earlier was read). The result's ``server_time`` is the service's clock when the
        read began. ``on_count``: told how many records the read will give (see
        :meth:`read_pages`), when the dialect has ``count_reads``."""
        clause = None if since is None else (
            filters.gt(self.modified_on, since) if after
            else filters.ge(self.modified_on, since - overlap))
        counted = on_count if self.client.settings.dialect.count_reads else None
        return ModifiedRead(self, select=wire.with_required(select, self.key, self.modified_on),
                            filter=filters.and_(clause, filter),
                            orderby=filters.orderby(self.modified_on, self.key),
                            on_count=counted)

    def read_by_keys(
        self,
        keys: Iterable[str],
        *,
        select: Select = None,
        chunk_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The records with these keys (missing ones are simply absent), fetched
        ``chunk_size`` keys per request (``key eq a or key eq b …``) so URLs stay short."""
        size = chunk_size or self.client.settings.key_chunk_size
        if size < 1:
            raise ValueError("chunk_size must be >= 1")
        columns = wire.with_required(select, self.key)
        seen: set[str] = set()
        chunk: list[str] = []
        for key in keys:
            text = filters.key_literal(key, self.key_type)  # validates early
            if text in seen:
                continue
            seen.add(text)
            chunk.append(key)
            if len(chunk) == size:
                yield from self.read(select=columns,
                                     filter=filters.key_in(self.key, chunk, self.key_type))
                chunk = []
        if chunk:
            yield from self.read(select=columns,
                                 filter=filters.key_in(self.key, chunk, self.key_type))

    def read_changes(self, delta_link: str | None = None, *,
                     select: Select = None) -> ChangeFeed:
        """Records created, changed or deleted since ``delta_link`` (everything when None),
        through change tracking; the feed's ``delta_link`` is the next one to use. Needs
        the dialect's ``change_tracking``."""
        return ChangeFeed(self, delta_link, select)

    def get(self, key: str, *, select: Select = None) -> dict[str, Any] | None:
        """One record by key, or None when there is none."""
        params = wire.query_params(select=select)
        url = self.record_url(key) + ("?" + wire.encode_query(params) if params else "")
        headers = {}
        prefer = wire.annotations_preference(self.client.settings.dialect.annotations)
        if prefer:
            headers["Prefer"] = prefer
        reply = self.client.transport.send("GET", url, headers=headers, accept={404})
        if reply.status == 404:
            return None
        doc = wire.parse_json(reply, "GET", url)
        if not isinstance(doc, dict):
            raise RemoteProtocolError("the record is not a JSON object", status=reply.status,
                                      method="GET", path=urlsplit(self.url).path)
        return doc

    # ------------------------------------------------------------------------ writes

    def create(self, key: str, values: Mapping[str, Any]) -> WriteResult:
        """Create the record with the caller-chosen ``key``. Idempotent: when the record
        already exists the result says ``already_existed`` and nothing is written."""
        return self._run(self.create_call(key, values))

    def update(self, key: str, values: Mapping[str, Any], *,
               etag: str | None = None) -> WriteResult:
        """Write the changed ``values`` of an existing record (``If-Match: *``, or
        ``If-Match: etag`` for optimistic concurrency: RemoteConflict when the record
        changed since). RemoteNotFound when it does not exist."""
        if not values:
            return WriteResult(key=key, status=304)
        return self._run(self.update_call(key, values, etag=etag))

    def delete(self, key: str, *, etag: str | None = None) -> WriteResult:
        """Delete the record; ``already_gone`` when there was none."""
        return self._run(self.delete_call(key, etag=etag))

    def supports_bulk(self) -> bool:
        """Whether writes of this set can go as Dataverse's bulk messages (``remote.bulk``:
        the dialect's ``bulk_messages``, ``$metadata``, and what the service answered)."""
        return self.client.bulk_support().supports(self.name)

    def create_multiple(self, records: Sequence[BulkRecord], *,
                        read_back: bool = True) -> list[OperationResult]:
        """Create the records (caller-chosen keys) with ``CreateMultiple`` (see
        ``remote.bulk``); one result per record, in order, as ``ODataClient.batch``."""
        from worker.remote.bulk import run_bulk

        return run_bulk(self, "create", records, read_back=read_back)

    def update_multiple(self, records: Sequence[BulkRecord], *,
                        read_back: bool = True) -> list[OperationResult]:
        """Update existing records with ``UpdateMultiple``; results as ``create_multiple``."""
        from worker.remote.bulk import run_bulk

        return run_bulk(self, "update", records, read_back=read_back)

    def upsert_multiple(self, records: Sequence[BulkRecord], *,
                        read_back: bool = True) -> list[OperationResult]:
        """Create or update records, named by key or by ``alternate`` key, with
        ``UpsertMultiple``; results as ``create_multiple``."""
        from worker.remote.bulk import run_bulk

        return run_bulk(self, "upsert", records, read_back=read_back)

    def _run(self, call: Call) -> WriteResult:
        reply = self.client.transport.send(call.method, call.url, body=call.body,
                                           headers=call.headers, accept=call.accept)
        return call.interpret(reply)

    def create_call(self, key: str, values: Mapping[str, Any]) -> Call:
        dialect = self.client.settings.dialect
        headers = self._write_headers()
        if dialect.create_method == "patch":
            url = self.record_url(key)
            headers["If-None-Match"] = "*"
            method, exists, body = "PATCH", frozenset({412}), dict(values)
        else:
            # A POST has no precondition, so 412 can only be Dataverse's "duplicate key";
            # other services say 409 Conflict.
            url = self.url
            method, exists = "POST", frozenset({409, 412})
            body = {**values, self.key: wire.key_value(key, self.key_type)}

        def interpret(reply: Reply) -> WriteResult:
            if reply.status in exists:
                return WriteResult(key=key, status=reply.status, already_existed=True)
            return self._result(key, reply)

        return Call(method, url, headers, wire.dumps(body), exists, interpret)

    def update_call(self, key: str, values: Mapping[str, Any], *,
                    etag: str | None = None) -> Call:
        headers = self._write_headers()
        headers["If-Match"] = _etag(etag)
        url = self.record_url(key)

        def interpret(reply: Reply) -> WriteResult:
            if reply.status == 412 and etag is None:
                # ``If-Match: *`` fails only when there is no record (HTTP semantics;
                # Dataverse answers 404 instead).
                raise self.client.transport.error(reply, "PATCH", url, cls=RemoteNotFound)
            if reply.status in (404, 412):
                raise self.client.transport.error(
                    reply, "PATCH", url,
                    cls=RemoteNotFound if reply.status == 404 else RemoteConflict)
            return self._result(key, reply)

        return Call("PATCH", url, headers, wire.dumps(dict(values)), frozenset({404, 412}),
                    interpret)

    def delete_call(self, key: str, *, etag: str | None = None) -> Call:
        url = self.record_url(key)
        headers = {"If-Match": _etag(etag)} if etag else {}

        def interpret(reply: Reply) -> WriteResult:
            if reply.status == 404:
                return WriteResult(key=key, status=404, already_gone=True)
            if reply.status == 412:
                raise self.client.transport.error(reply, "DELETE", url, cls=RemoteConflict)
            return WriteResult(key=key, status=reply.status)

        return Call("DELETE", url, headers, None, frozenset({404, 412}), interpret)

    def _write_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.client.settings.dialect.return_representation:
            headers["Prefer"] = "return=representation"
        return headers

    def _result(self, key: str, reply: Reply) -> WriteResult:
        record: dict[str, Any] | None = None
        if reply.body.strip() and "json" in reply.headers.get("Content-Type", "json"):
            doc = wire.parse_json(reply, "PATCH", self.url)
            record = doc if isinstance(doc, dict) else None
        etag = (record or {}).get("@odata.etag") or reply.headers.get("ETag")
        stamp = parse_datetime((record or {}).get(self.modified_on))
        return WriteResult(key=key, status=reply.status, etag=etag, modified_on=stamp,
                           record=record)


class ModifiedRead:
    """A read of records modified since a mark, streamed page by page, that remembers the
    service's own clock (its ``Date`` header) when the read began: stamps and that clock
    come from the same server, so comparing them needs no synchronized clocks."""

    def __init__(self, entity_set: EntitySet, **query: Any) -> None:
        self.entity_set = entity_set
        self.query = query
        self.server_time: datetime | None = None

    def _note(self, reply: Reply) -> None:
        if self.server_time is None:
            self.server_time = http_date(reply.headers.get("Date"))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for page in self.entity_set.read_pages(on_reply=self._note, **self.query):
            yield from page


def http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header as an aware datetime (None when absent or malformed)."""
    if not value:
        return None
    try:
        stamp = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- helpers

DATAVERSE_COUNT_LIMIT = 5000  # Dataverse's $count counts no further


def _tell_count(doc: Any, dialect: str, on_count: Callable[[int, bool], None]) -> None:
    """A page's ``@odata.count`` to ``on_count`` (nothing when absent or not a number)."""
    count = doc.get("@odata.count") if isinstance(doc, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return
    capped = any(k.endswith(".totalrecordcountlimitexceeded") and v is True
                 for k, v in doc.items()) or \
        (dialect == "dataverse" and count >= DATAVERSE_COUNT_LIMIT)
    on_count(count, capped)


def _etag(etag: str | None) -> str:
    """An ``If-Match`` value: the etag as the service sent it, or ``*``. An etag with a
    control character is refused: it would end the header (or the $batch part's head)."""
    if not etag:
        return "*"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in etag):
        raise FilterError(f"etag {etag!r} contains a control character")
    return etag


def bind(target_set: str, key: str, key_type: KeyType = "guid") -> str:
    """``/target_set(key)``, the value of a ``<navigation property>@odata.bind``."""
    return f"/{filters.prop(target_set)}({filters.key_segment(key, key_type)})"
