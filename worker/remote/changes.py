"""Change tracking: reading what changed since the last read through OData delta links
(Dataverse: ``Prefer: odata.track-changes``, for tables with change tracking enabled).

The first read (no delta link) returns every record and, after its last page, a delta link;
each later read with that link returns the records created or changed since, and the
deleted ones (Dataverse and OData 4.0 send ``{"@odata.context": "…$deletedEntity",
"id": …}``, OData 4.01 ``{"@removed": …, "@id": …}``). Store the new delta link only once
the changes are applied; an expired link raises RemoteDeltaExpired (read everything again).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from worker.errors import ConfigurationError
from worker.remote import links, wire
from worker.remote.errors import RemoteDeltaExpired, RemoteProtocolError

if TYPE_CHECKING:
    from worker.remote.client import EntitySet

log = logging.getLogger(__name__)

_ID_IN_URL = re.compile(r"\(([^()]*)\)\s*$")


@dataclass(frozen=True)
class Change:
    """A record created or changed since the delta link (``record``), or deleted
    (``record`` is None)."""

    key: str
    record: dict[str, Any] | None

    @property
    def deleted(self) -> bool:
        return self.record is None


class ChangeFeed:
    """The changes of one entity set since ``delta_link`` (all records when None), page
    by page or one by one. Once iterated to the end, :attr:`delta_link` is the link for the
    next read."""

    def __init__(self, entity_set: EntitySet, delta_link: str | None,
                 select: wire.Select = None) -> None:
        self.entity_set = entity_set
        self.since = delta_link
        self.select = select
        self.delta_link: str | None = None

    def __iter__(self) -> Iterator[Change]:
        for page in self.pages():
            yield from page

    def pages(self) -> Iterator[list[Change]]:
        es = self.entity_set
        settings = es.client.settings
        if not settings.dialect.change_tracking:
            raise ConfigurationError(
                f"connection {settings.name!r}: change tracking is off "
                f"(set change_tracking = true for a service that supports delta links)")
        path = urlsplit(es.url).path
        if self.since:
            url = links.resolve(self.since, es.url, es.client.base_url,
                                what="@odata.deltaLink (stored)")
        else:
            params = wire.query_params(select=wire.with_required(self.select, es.key))
            url = es.url + ("?" + wire.encode_query(params) if params else "")
        headers = {"Prefer": wire.prefer(
            "odata.track-changes",
            f"odata.maxpagesize={settings.page_size}" if settings.dialect.prefer_maxpagesize
            else None)}
        pager = links.Pager(es.client.base_url, settings.max_pages, path)
        while True:
            reply = es.client.transport.send("GET", url, headers=headers, accept={410})
            if reply.status == 410:
                raise es.client.transport.error(reply, "GET", url, cls=RemoteDeltaExpired)
            doc = wire.parse_json(reply, "GET", url)
            rows = doc.get("value") if isinstance(doc, dict) else None
            if not isinstance(rows, list):
                raise RemoteProtocolError("the response has no 'value' array",
                                          status=reply.status, method="GET", path=path)
            yield [self._change(row) for row in rows]
            pager.page_read()
            next_url = pager.next_url(doc.get("@odata.nextLink"), url, reply.status)
            if next_url is not None:
                url = next_url
                continue
            delta = doc.get("@odata.deltaLink")
            if not isinstance(delta, str) or not delta:
                raise RemoteProtocolError(
                    "the service sent no @odata.deltaLink: is change tracking enabled for "
                    f"{es.name}?", status=reply.status, method="GET", path=path)
            self.delta_link = links.resolve(delta, url, es.client.base_url,
                                            what="@odata.deltaLink")
            log.debug("changes read", extra={"connection": settings.name,
                                             "entity_set": es.name})
            return

    def _change(self, row: Any) -> Change:
        if not isinstance(row, dict):
            raise RemoteProtocolError("a change is not a JSON object")
        removed = ("@removed" in row or "@odata.removed" in row
                   or str(row.get("@odata.context", "")).endswith("$deletedEntity"))
        key = row.get(self.entity_set.key) or row.get("id")
        if key is None:
            match = _ID_IN_URL.search(str(row.get("@id") or row.get("@odata.id") or ""))
            key = match.group(1).strip("'") if match else None
        if key is None:
            raise RemoteProtocolError(f"a change in {self.entity_set.name} has no key")
        return Change(str(key), None if removed else row)
