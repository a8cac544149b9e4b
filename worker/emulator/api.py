"""The data endpoints below ``/api/data/v9.2``: service document, ``$metadata``, ``WhoAmI``,
collection reads, and reads and writes of single records."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from worker.emulator import changes, errors, query
from worker.emulator.access import IndexedRows
from worker.emulator.bulk import BulkMessages
from worker.emulator.metadata import metadata_xml, service_document
from worker.emulator.paths import BadKey, EntityRef, parse_resource
from worker.emulator.profiles import Profile
from worker.emulator.protocol import (
    ODATA_HEADERS,
    Request,
    Response,
    collection_url,
    empty_response,
    json_response,
)
from worker.emulator.schema import EntitySet, Schema
from worker.emulator.store import Store, etag_matches, etag_of
from worker.emulator.values import coerce, parse_body, render

# WhoAmI answers with these when no system user exists yet (the emulator has no sign-in).
_ORGANIZATION_ID = "4f4b1e0a-9f3c-4a52-9e43-0c0c5e0d0001"
_BUSINESS_UNIT_ID = "4f4b1e0a-9f3c-4a52-9e43-0c0c5e0d0002"
_ANONYMOUS_USER_ID = "4f4b1e0a-9f3c-4a52-9e43-0c0c5e0d0003"


class DataApi:
    """Answers one data request (``path`` relative to the service root) from the store."""

    def __init__(self, schema: Schema, store: Store, profile: Profile,
                 bulk_unsupported: Iterable[str] = ()) -> None:
        self.schema = schema
        self.store = store
        self.profile = profile
        self.bulk = BulkMessages(schema, store, profile, frozenset(bulk_unsupported))

    def handle(self, request: Request, path: str) -> Response:
        if path in ("", "/"):
            self._allow(request, "GET")
            return json_response(200, service_document(self.schema, request.service_root))
        if path == "/$metadata":
            self._allow(request, "GET")
            return Response(200, [("Content-Type", "application/xml"), *ODATA_HEADERS],
                            metadata_xml(self.schema, self.profile.namespace, self.bulk.actions))
        if path == "/WhoAmI" and self.profile.who_am_i:
            self._allow(request, "GET")
            return json_response(200, self._who_am_i(request))
        if (answer := self.bulk.route(request, path)) is not None:
            return answer
        try:
            resource = parse_resource(path[1:])
        except BadKey as exc:
            shown = path if len(path) <= 200 else path[:200] + "..."
            raise errors.bad_query(f"Bad key in '{shown}': {str(exc)[:200]}") from exc
        if resource is None or resource.set_name not in self.schema:
            raise errors.no_segment(path[1:].split("(")[0].split("/")[0])
        entity_set = self.schema[resource.set_name]
        if resource.ref is None:
            if request.method == "GET":
                return self._read_collection(request, entity_set)
            self._allow(request, "POST")
            return self._create(request, entity_set)
        if request.method == "GET":
            return self._read_one(request, entity_set, resource.ref)
        if request.method == "DELETE":
            return self._delete(request, entity_set, resource.ref)
        self._allow(request, "PATCH")
        return self._upsert(request, entity_set, resource.ref)

    @staticmethod
    def _allow(request: Request, *methods: str) -> None:
        if request.method not in methods:
            raise errors.ODataError(405, errors.QUERY_SYNTAX,
                                    f"The HTTP method '{request.method}' is not allowed here.",
                                    {"Allow": ", ".join(methods)})

    # -- reads ---------------------------------------------------------------------------

    def _read_collection(self, request: Request, entity_set: EntitySet) -> Response:
        prefs = request.preferences()
        annotations = _wants_annotations(prefs)
        if "$deltatoken" in request.query:
            return changes.read_delta(self.store, entity_set, request, annotations=annotations)
        skiptoken = request.query.get("$skiptoken")
        # A tracked read starts with the preference; its later pages know from the skiptoken.
        tracking = (changes.TRACK_CHANGES in prefs and not skiptoken
                    and self.store.is_tracked(entity_set.name))
        if tracking:
            changes.refuse_untrackable_options(request.query)
        options = query.parse_query(entity_set, request.query)
        page_size = query.page_size_from(prefs)
        if not self.profile.honours_maxpagesize:
            page_size = None  # pages of the server's own size, whatever the client prefers
        with self.store.lock:  # the token is the first page's position; walks read live indexes
            token = str(self.store.change_token()) if tracking else None
            rows = IndexedRows(self.store, entity_set, options)
            page = query.read_page(options, rows, page_size, skiptoken, track=token,
                                   default_size=self.profile.page_size,
                                   count_limit=self.profile.count_limit)
        doc: dict[str, Any] = {"@odata.context": self._context(request, entity_set,
                                                                options.select)}
        if options.count:
            limit = self.profile.count_limit
            doc["@odata.count"] = page.total if limit is None else min(page.total, limit)
            if limit is not None and page.total > limit:
                doc[f"@{self.profile.namespace}.totalrecordcountlimitexceeded"] = True
        doc["value"] = [render(entity_set, r, options.select, annotations) for r in page.rows]
        if page.next_token:
            doc["@odata.nextLink"] = self._next_link(request, entity_set, page.next_token)
        elif page.track:
            doc["@odata.deltaLink"] = changes.delta_link(request, entity_set, page.track)
        applied = [changes.TRACK_CHANGES] if page.track else []
        if page_size is not None:
            applied.append(f"odata.maxpagesize={page_size}")
        if annotations:
            applied.append(f'odata.include-annotations="{prefs["odata.include-annotations"]}"')
        headers = [("Preference-Applied", ",".join(applied))] if applied else []
        return json_response(200, doc, headers)

    def _read_one(self, request: Request, entity_set: EntitySet, ref: EntityRef) -> Response:
        select = query.parse_select(entity_set, request.query.get("$select"))
        record = self.store.require(entity_set.name, self._key(entity_set, ref))
        etag = etag_of(record)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and etag_matches(if_none_match, record):
            return empty_response(304, [("ETag", etag)])
        return self._entity_response(request, entity_set, record, select, 200)

    def _who_am_i(self, request: Request) -> dict[str, Any]:
        users = self.store.scan("systemusers", None) if "systemusers" in self.schema else []
        key = self.schema["systemusers"].key if users else ""
        first = min((u[key] for u in users), default=_ANONYMOUS_USER_ID)
        return {"@odata.context": f"{request.service_root}/$metadata"
                                  "#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": _BUSINESS_UNIT_ID, "UserId": first,
                "OrganizationId": _ORGANIZATION_ID}

    # -- writes --------------------------------------------------------------------------

    def _create(self, request: Request, entity_set: EntitySet) -> Response:
        changes = parse_body(entity_set, request.json())
        with self.store.lock:  # no write between the check and the create
            if changes.key is not None and self.store.get(entity_set.name, changes.key):
                raise self._duplicate_key(entity_set)
            record = self.store.create(entity_set.name, changes)
        return self._write_response(request, entity_set, record, created=True)

    def _duplicate_key(self, entity_set: EntitySet) -> errors.ODataError:
        """A POST of an existing key: Dataverse's 412, or the profile's (a generic server's
        primary-key violation, 500)."""
        status = self.profile.duplicate_create_status
        if status == 412:
            return errors.duplicate(entity_set.entity_type)
        return errors.ODataError(status, str(status), f"UNIQUE constraint failed: "
                                                      f"{entity_set.name}.{entity_set.key}")

    def _require_if_match(self, request: Request) -> None:
        if self.profile.requires_if_match and not request.headers.get("if-match"):
            raise errors.precondition_required()

    def _upsert(self, request: Request, entity_set: EntitySet, ref: EntityRef) -> Response:
        changes = parse_body(entity_set, request.json())
        if not request.headers.get("if-none-match"):
            self._require_if_match(request)  # a create-only PATCH has no version to match
        # Resolving an alternate key and writing happen under one lock hold, so two
        # concurrent upserts of the same alternate key cannot both create a record.
        with self.store.lock:
            key = self.store.resolve(ref)
            if key is None and ref.alternate and changes.key is None:
                changes.key = str(uuid.uuid4())
            alternate = tuple((name, coerce(entity_set, entity_set.properties[name], value))
                              for name, value in ref.alternate) if key is None else ()
            record, created = self.store.upsert(
                entity_set.name, key or changes.key, changes,
                if_match=request.headers.get("if-match"),
                if_none_match=request.headers.get("if-none-match"), alternate=alternate)
        return self._write_response(request, entity_set, record, created=created)

    def _delete(self, request: Request, entity_set: EntitySet, ref: EntityRef) -> Response:
        key = self._key(entity_set, ref)
        self._require_if_match(request)
        self.store.delete(entity_set.name, key, if_match=request.headers.get("if-match"))
        return empty_response(204)

    def _write_response(self, request: Request, entity_set: EntitySet,
                        record: dict[str, Any], *, created: bool) -> Response:
        """204 with ``OData-EntityId``, or the record itself for ``return=representation``."""
        entity_id = f"{request.service_root}/{entity_set.name}({record[entity_set.key]})"
        if (self.profile.return_representation
                and request.preferences().get("return") == "representation"):
            select = query.parse_select(entity_set, request.query.get("$select"))
            response = self._entity_response(request, entity_set, record, select,
                                             201 if created else 200)
            response.headers += [("OData-EntityId", entity_id),
                                 ("Preference-Applied", "return=representation")]
            return response
        return empty_response(204, [("OData-EntityId", entity_id),
                                    ("ETag", etag_of(record))])

    # -- helpers -------------------------------------------------------------------------

    def _key(self, entity_set: EntitySet, ref: EntityRef) -> str:
        key = self.store.resolve(ref)
        if key is None:
            raise errors.not_found(entity_set.entity_type, str(dict(ref.alternate)))
        return key

    def _entity_response(self, request: Request, entity_set: EntitySet, record: dict[str, Any],
                         select: tuple[str, ...] | None, status: int) -> Response:
        doc = {"@odata.context": self._context(request, entity_set, select) + "/$entity"}
        annotations = _wants_annotations(request.preferences())
        doc.update(render(entity_set, record, select, annotations))
        return json_response(status, doc, [("ETag", etag_of(record))])

    @staticmethod
    def _context(request: Request, entity_set: EntitySet,
                 select: tuple[str, ...] | None) -> str:
        selected = f"({','.join(select)})" if select else ""
        return f"{request.service_root}/$metadata#{entity_set.name}{selected}"

    def _next_link(self, request: Request, entity_set: EntitySet, token: str) -> str:
        params = [(k, v) for k, v in request.query.items() if k != "$skiptoken"]
        params.append(("$skiptoken", token))
        url = collection_url(request, entity_set.name, params)
        if self.profile.relative_nextlinks:  # relative to the service root, as many send it
            url = url.removeprefix(request.service_root + "/")
        return url


def _wants_annotations(prefs: dict[str, str]) -> bool:
    wanted = prefs.get("odata.include-annotations", "")
    return "*" in wanted or "lookuplogicalname" in wanted
