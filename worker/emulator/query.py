"""Collection reads: ``$select``, ``$orderby``, ``$top``, ``$count`` and keyset paging.

A page ends with an ``@odata.nextLink`` whose ``$skiptoken`` is an opaque token holding the
sort values of the page's last row. The next page is "rows sorting after those values" under
the same order, which always ends with the primary key; so each row is returned exactly once
however records are inserted, changed or deleted between pages, unless a change moves a row
across the cursor (changing a sort column), which Dataverse does not protect against either.

A read with change tracking carries, in its skiptoken, the change token taken at its first
page, so the last page can end with the ``@odata.deltaLink`` for that position even when the
client does not repeat ``Prefer: odata.track-changes`` on later pages.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import cmp_to_key
from itertools import islice
from typing import Any, Protocol

from worker.emulator import errors, jsoncodec
from worker.emulator.filters import Predicate, Shape, parse_filter
from worker.emulator.literals import parse_date, parse_datetime
from worker.emulator.schema import EntitySet

DEFAULT_PAGE_SIZE = 5000
_DIGITS = re.compile(r"[0-9]{1,18}")
MAX_PAGE_SIZE = 5000
_UNSUPPORTED = {
    "$skip": "The query parameter $skip is not supported",
    "$expand": "$expand is not implemented by the crmsync emulator",
    "$apply": "$apply is not implemented by the crmsync emulator",
    "$search": "$search is not implemented by the crmsync emulator",
}
_KNOWN = {"$filter", "$select", "$orderby", "$top", "$count", "$skiptoken", "$format",
          "$deltatoken"}

Record = Mapping[str, Any]
SortValues = tuple[Any, ...]


@dataclass(frozen=True)
class CollectionQuery:
    """The parsed query options of a collection read."""

    predicate: Predicate | None
    filter_text: str
    select: tuple[str, ...] | None
    order: tuple[tuple[str, bool], ...]  # (property, descending); ends with the key
    top: int | None
    count: bool
    shape: Shape | None = None  # what an index can use of the filter (``access``)

    def sort_values(self, record: Record) -> SortValues:
        return tuple(_sortable(record.get(name)) for name, _ in self.order)

    def compare(self, a: SortValues, b: SortValues) -> int:
        for x, y, (_, descending) in zip(a, b, self.order, strict=True):
            if x == y:
                continue
            # NULLs sort first ascending and last descending, as on SQL Server.
            result = -1 if x is None else 1 if y is None else (-1 if x < y else 1)
            return -result if descending else result
        return 0

    def fingerprint(self) -> str:
        """Ties a skiptoken to the filter and order it was made for."""
        text = json.dumps([self.filter_text, self.order])
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Page:
    """One page of a collection read; ``track`` is the change token of a tracked read."""

    rows: list[Record]
    total: int
    next_token: str | None
    track: str | None = None


def parse_select(entity_set: EntitySet, text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in entity_set.properties:
            raise errors.bad_query(f"Could not find a property named '{name}' on type "
                                   f"'Microsoft.Dynamics.CRM.{entity_set.entity_type}'.")
    return names


def parse_query(entity_set: EntitySet, params: Mapping[str, str]) -> CollectionQuery:
    """The query options, validated against the set; 400 for anything Dataverse refuses."""
    for name in params:
        if name in _UNSUPPORTED:
            raise errors.bad_query(_UNSUPPORTED[name])
        if name.startswith("$") and name not in _KNOWN:
            raise errors.bad_query(f"The query parameter {name} is not supported")
    filter_text = params.get("$filter", "")
    predicate, shape = (parse_filter(filter_text, entity_set) if filter_text.strip()
                        else (None, None))
    return CollectionQuery(
        shape=shape,
        predicate=predicate,
        filter_text=filter_text,
        select=parse_select(entity_set, params.get("$select")),
        order=_parse_orderby(entity_set, params.get("$orderby", "")),
        top=_parse_top(params.get("$top")),
        count=_parse_count(params.get("$count")),
    )


def _parse_count(text: str | None) -> bool:
    if text is None or text.lower() in ("true", "false"):
        return text is not None and text.lower() == "true"
    raise errors.bad_query(f"Invalid value '{text[:40]}' for $count: true or false.")


def _parse_orderby(entity_set: EntitySet, text: str) -> tuple[tuple[str, bool], ...]:
    order: list[tuple[str, bool]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, direction = item.partition(" ")
        direction = direction.strip().lower() or "asc"
        if name not in entity_set.properties or direction not in ("asc", "desc"):
            raise errors.bad_query(f"Invalid $orderby item '{item}' for "
                                   f"'Microsoft.Dynamics.CRM.{entity_set.entity_type}'.")
        order.append((name, direction == "desc"))
    if not any(name == entity_set.key for name, _ in order):
        order.append((entity_set.key, False))  # the tie-breaker that makes paging exact
    return tuple(order)


def _parse_top(text: str | None) -> int | None:
    if text is None:
        return None
    if not _DIGITS.fullmatch(text):
        raise errors.bad_query(f"Invalid value '{text[:40]}' for $top: a non-negative "
                               "integer.")
    return int(text)


class RowSource(Protocol):
    """The rows of one collection read (``access.IndexedRows``)."""

    def in_order(self, after: SortValues | None) -> Iterator[Record] | None:
        """The matching records sorting after ``after`` (all when None), in the query's
        order; None when the source cannot give them in that order."""

    def matching(self) -> Iterable[Record]:
        """Every matching record, in no particular order."""


def read_page(query: CollectionQuery, rows: RowSource, page_size: int | None,
              skiptoken: str | None, *, track: str | None = None,
              default_size: int = DEFAULT_PAGE_SIZE, count_limit: int | None = None) -> Page:
    """One page of ``rows`` after the position in ``skiptoken``.

    The page size is the request's ``Prefer``, else the one the token was made with (a client
    that does not repeat the header keeps its page size), else the server's ``default_size``
    (Dataverse's is 5000).
    ``track`` (a change token, for the first page of a tracked read) is handed on from page
    to page in the skiptoken and returned in ``Page.track``. ``total`` is counted only
    for ``$count=true``."""
    remaining = query.top
    cursor: SortValues | None = None
    if skiptoken:
        cursor, remaining, token_page_size, track = _decode_token(query, skiptoken)
        page_size = page_size or token_page_size
    page_size = page_size or default_size
    limit = page_size if remaining is None else min(page_size, remaining)
    try:
        chosen = _first(query, rows, cursor, limit + 1)
    except TypeError as exc:  # a forged token whose values are not of the sort's types
        raise errors.bad_query("The $skiptoken is not valid.") from exc
    matching = rows.matching() if query.count else ()
    # A capped count stops one past the limit: enough to say the limit was exceeded.
    total = sum(1 for _ in (matching if count_limit is None
                            else islice(matching, count_limit + 1)))
    more = len(chosen) > limit and (remaining is None or remaining > limit)
    chosen = chosen[:limit]
    token = None
    if more and chosen:
        left = None if remaining is None else remaining - limit
        token = _encode_token(query, query.sort_values(chosen[-1]), left, page_size, track)
    return Page(chosen, total, token, track)


def _first(query: CollectionQuery, rows: RowSource, cursor: SortValues | None,
           count: int) -> list[Record]:
    """The first ``count`` matching records after ``cursor``, in the query's order: from an
    index walk when the source has one, else sorted here."""
    ordered = rows.in_order(cursor)
    if ordered is not None:
        return list(islice(ordered, count))
    candidates: Iterable[Record] = rows.matching()
    if cursor is not None:
        compare, after = query.compare, query.sort_values
        candidates = [r for r in candidates if compare(after(r), cursor) > 0]
    key = cmp_to_key(query.compare)
    return heapq.nsmallest(count, candidates, key=lambda r: key(query.sort_values(r)))


def _sortable(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _encode_token(query: CollectionQuery, values: SortValues, remaining: int | None,
                  page_size: int, track: str | None = None) -> str:
    doc = {"f": query.fingerprint(), "v": [_encode_value(v) for v in values],
           "r": remaining, "p": page_size}
    if track is not None:
        doc["t"] = track
    return encode_opaque(doc)


def _decode_token(query: CollectionQuery,
                  token: str) -> tuple[SortValues, int | None, int | None, str | None]:
    try:
        doc = decode_opaque(token)
        values = tuple(_decode_value(v) for v in doc["v"])
        valid = doc["f"] == query.fingerprint() and len(values) == len(query.order)
        track = doc.get("t")
        if track is not None and not isinstance(track, str):
            raise TypeError("bad change token")
        for name in ("r", "p"):
            if doc.get(name) is not None and (not isinstance(doc[name], int)
                                              or isinstance(doc[name], bool) or doc[name] < 1):
                raise TypeError(f"bad {name}")
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_query("The $skiptoken is not valid.") from exc
    if not valid:
        raise errors.bad_query("The $skiptoken was made for another $filter or $orderby.")
    return values, doc.get("r"), doc.get("p"), track


def encode_opaque(doc: Mapping[str, Any]) -> str:
    """JSON in URL-safe base64 without padding: the body of the emulator's skiptokens."""
    return base64.urlsafe_b64encode(jsoncodec.dumps(doc).encode()).decode().rstrip("=")


def decode_opaque(token: str) -> dict[str, Any]:
    """The inverse of ``encode_opaque``; ValueError or TypeError when it is not one."""
    padded = token + "=" * (-len(token) % 4)
    doc = jsoncodec.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    return doc


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, date):
        return {"d": value.isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return parse_datetime(value["dt"]) if "dt" in value else parse_date(value["d"])
    if isinstance(value, list):
        raise TypeError("not a sort value")
    return value


def page_size_from(preferences: Mapping[str, str]) -> int | None:
    """``Prefer: odata.maxpagesize=N``, capped like Dataverse's 5000; None when absent."""
    raw = preferences.get("odata.maxpagesize")
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) < 1:
        raise errors.bad_query(f"Invalid odata.maxpagesize '{raw[:40]}'.")
    return min(int(raw), MAX_PAGE_SIZE)

