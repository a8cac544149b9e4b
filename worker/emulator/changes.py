"""Change tracking: ``Prefer: odata.track-changes`` and the delta links it leads to.

A collection read of a tracked set with the preference ends, on its last page, with an
``@odata.deltaLink``: the same URL (``$select`` and all) with ``$deltatoken=<token>``. Reading
that link answers what changed in the set since the token: the current state of records
created or changed since (in version order), then ``$deletedEntity`` entries for records
deleted since; and a new ``@odata.deltaLink``. The token is Dataverse-shaped,
``<versionnumber>!<MM/dd/yyyy HH:mm:ss>`` (see ``store.ChangeToken``).

As on Dataverse: ``$filter``, ``$orderby``, ``$top`` (and ``$expand``) are refused with the
preference or a delta token (400); an expired token is Dataverse's ExpiredVersionStamp
(``0x80044352``), sent with status 410 Gone. A delta response is paged by
``odata.maxpagesize`` like any read: its ``@odata.nextLink`` repeats the delta token and adds a
``$skiptoken`` holding the position reached and the token the last page will hand out, so
records changed while the client pages are not lost (they come in the next delta).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.emulator import errors, query
from worker.emulator.protocol import Request, Response, collection_url, json_response
from worker.emulator.schema import EntitySet
from worker.emulator.store import ChangeToken, Record, Store
from worker.emulator.values import render

TRACK_CHANGES = "odata.track-changes"
# System query options Dataverse does not allow with change tracking.
_UNTRACKABLE = ("$filter", "$orderby", "$top", "$expand")
_CHANGED, _DELETED = 0, 1  # the two parts of a delta response, in this order

Entry = tuple[int, int, Record | str]  # (part, version, record or deleted key)


def refuse_untrackable_options(params: Mapping[str, str]) -> None:
    """400 for a query option that change tracking does not support."""
    for option in _UNTRACKABLE:
        if option in params:
            raise errors.not_with_change_tracking(option)


def delta_link(request: Request, entity_set: EntitySet, token: str) -> str:
    """The request's URL without paging or delta tokens, with ``$deltatoken=token``."""
    params = [(k, v) for k, v in request.query.items() if k not in ("$skiptoken", "$deltatoken")]
    params.append(("$deltatoken", token))
    return collection_url(request, entity_set.name, params)


def read_delta(store: Store, entity_set: EntitySet, request: Request, *,
               annotations: bool) -> Response:
    """One page of the changes since the request's ``$deltatoken``."""
    if not store.is_tracked(entity_set.name):
        raise errors.bad_query(f"Change tracking is not enabled for the entity "
                               f"'{entity_set.entity_type}'.")
    refuse_untrackable_options(request.query)
    options = query.parse_query(entity_set, request.query)
    try:
        since = ChangeToken.parse(request.query["$deltatoken"])
    except ValueError as exc:
        raise errors.bad_query("The $deltatoken is not valid.") from exc
    prefs = request.preferences()
    page_size = query.page_size_from(prefs)
    skiptoken = request.query.get("$skiptoken")
    with store.lock:
        store.check_change_token(entity_set.name, since)
        if skiptoken:
            upto, cursor, token_page_size = _decode_skiptoken(skiptoken)
            page_size = page_size or token_page_size
        else:
            upto, cursor = store.change_token(), None
        changed, deleted = store.changes_since(entity_set.name, since.version, upto.version)
    entries: list[Entry] = [(_CHANGED, r["versionnumber"], r) for r in changed]
    entries += [(_DELETED, version, key) for version, key in deleted]
    total = len(entries)
    if cursor is not None:
        entries = [e for e in entries if (e[0], e[1]) > cursor]
    limit = page_size or query.DEFAULT_PAGE_SIZE
    chosen = entries[:limit]

    doc = _delta_page(request, entity_set, options, annotations, chosen, total)
    if len(entries) > limit:
        last_part, last_version, _ = chosen[-1]
        token = _encode_skiptoken(upto, (last_part, last_version), limit)
        params = [(k, v) for k, v in request.query.items() if k != "$skiptoken"]
        doc["@odata.nextLink"] = collection_url(request, entity_set.name,
                                                [*params, ("$skiptoken", token)])
    else:
        doc["@odata.deltaLink"] = delta_link(request, entity_set, str(upto))
    applied = [TRACK_CHANGES] if TRACK_CHANGES in prefs else []
    if page_size is not None and "odata.maxpagesize" in prefs:
        applied.append(f"odata.maxpagesize={page_size}")
    headers = [("Preference-Applied", ",".join(applied))] if applied else []
    return json_response(200, doc, headers)


def _delta_page(request: Request, entity_set: EntitySet, options: Any, annotations: bool,
                chosen: list[Entry], total: int) -> dict[str, Any]:
    """The page's document: changed records as they are now, deleted ones as
    ``$deletedEntity`` entries."""
    context = f"{request.service_root}/$metadata#{entity_set.name}"
    selected = f"({','.join(options.select)})" if options.select else ""
    doc: dict[str, Any] = {"@odata.context": f"{context}{selected}/$delta"}
    if options.count:
        doc["@odata.count"] = total
    doc["value"] = [
        render(entity_set, item, options.select, annotations) if isinstance(item, dict)
        else {"@odata.context": f"{context}/$deletedEntity", "id": item, "reason": "deleted"}
        for _, _, item in chosen]
    return doc


def _encode_skiptoken(upto: ChangeToken, cursor: tuple[int, int], page_size: int) -> str:
    return query.encode_opaque({"d": str(upto), "c": list(cursor), "p": page_size})


def _decode_skiptoken(token: str) -> tuple[ChangeToken, tuple[int, int], int | None]:
    try:
        doc = query.decode_opaque(token)
        part, version = doc["c"]
        upto, page_size = doc["d"], doc.get("p")
        if not (isinstance(part, int) and isinstance(version, int) and isinstance(upto, str)
                and (page_size is None or isinstance(page_size, int))):
            raise TypeError("bad cursor")
        return ChangeToken.parse(upto), (part, version), page_size
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_query("The $skiptoken is not valid.") from exc
