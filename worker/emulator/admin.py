"""``/_admin/...``: the test hooks. Not part of the Dataverse protocol; never authenticated,
never faulted, so a test can always reach them.

- ``GET /_admin/stats``: request counters and injected faults
- ``POST /_admin/reset``: empty the store, clear faults and counters, seed users again
- ``GET|POST|DELETE /_admin/faults``: list, add (an object or a list of them), clear
- ``GET /_admin/records/<set>``: every stored record of a set, annotations included
- ``POST /_admin/save``: write the ``--data-file`` now
- ``POST /_admin/expire-change-tokens``: every change-tracking token issued so far expires
  (body ``{"sets": [...]}`` to limit it to some sets)
- ``GET|POST|DELETE /_admin/webhooks``: list, add ``{"url": ..., "headers": {...}}``, remove
  all (see ``webhooks``)
- ``GET|POST|DELETE /_admin/limits``: show, set ``{"requests": 6000, "window": 300, ...}``
  (a fresh window), or turn off Dataverse's service protection limits (see ``limits``)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from worker.emulator import errors, jsoncodec
from worker.emulator.faults import FaultInjector
from worker.emulator.limits import ServiceLimits
from worker.emulator.protocol import Request, Response, error_response, json_response
from worker.emulator.schema import Schema
from worker.emulator.store import Store
from worker.emulator.values import record_to_json
from worker.emulator.webhooks import Webhook, WebhookNotifier


class StatsSource(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class Administered(Protocol):
    """What the admin endpoints reach into: the ``Emulator`` (a protocol, so that this module
    does not import the one that routes requests to it)."""

    schema: Schema
    store: Store
    faults: FaultInjector
    webhooks: WebhookNotifier

    @property
    def stats(self) -> StatsSource: ...

    @property
    def protection(self) -> StatsSource | None: ...

    def set_limits(self, limits: ServiceLimits | None) -> None: ...

    def reset(self) -> None: ...

    def save(self) -> Path | None: ...


class AdminApi:
    """Answers ``/_admin/`` requests for one emulator."""

    def __init__(self, emulator: Administered) -> None:
        self.emulator = emulator

    def handle(self, request: Request) -> Response:
        route = request.path.removeprefix("/_admin/").rstrip("/")
        try:
            if route == "stats" and request.method == "GET":
                return json_response(200, self._stats())
            if route == "reset" and request.method == "POST":
                self.emulator.reset()
                return json_response(200, {"reset": True})
            if route == "save" and request.method == "POST":
                saved = self.emulator.save()
                return json_response(200, {"saved": str(saved) if saved else None})
            if route == "expire-change-tokens" and request.method == "POST":
                return self._expire_change_tokens(request)
            if route == "faults":
                return self._faults(request)
            if route == "webhooks":
                return self._webhooks(request)
            if route == "limits":
                return self._limits(request)
            if route.startswith("records/") and request.method == "GET":
                return self._records(route.removeprefix("records/"))
        except errors.ODataError as exc:
            return error_response(exc)
        return error_response(errors.no_segment(request.path))

    def _stats(self) -> dict[str, Any]:
        doc = self.emulator.stats.snapshot()
        doc["faults_injected"] = self.emulator.faults.injected_counts()
        doc["records"] = {s.name: self.emulator.store.count(s.name)
                          for s in self.emulator.schema}
        return doc

    def _limits(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.emulator.set_limits(ServiceLimits.from_json(
                    jsoncodec.loads(request.body or b"{}")))
            except (ValueError, TypeError) as exc:
                raise errors.bad_payload(f"Bad service limits: {exc}") from exc
        elif request.method == "DELETE":
            self.emulator.set_limits(None)
        elif request.method != "GET":
            raise errors.ODataError(405, errors.QUERY_SYNTAX, "GET, POST or DELETE")
        protection = self.emulator.protection
        return json_response(200, {"limits": protection.snapshot() if protection else None})

    def _faults(self, request: Request) -> Response:
        faults = self.emulator.faults
        if request.method == "GET":
            return json_response(200, {"faults": faults.active()})
        if request.method == "DELETE":
            faults.clear()
            return json_response(200, {"faults": []})
        if request.method != "POST":
            raise errors.ODataError(405, errors.QUERY_SYNTAX, "GET, POST or DELETE")
        try:
            doc = jsoncodec.loads(request.body or b"null")
            items = doc if isinstance(doc, list) else [doc]
            added = [faults.add_from_json(item).id for item in items]
        except (ValueError, TypeError, AttributeError) as exc:
            raise errors.bad_payload(f"Bad fault description: {exc}") from exc
        return json_response(201, {"added": added, "faults": faults.active()})

    def _webhooks(self, request: Request) -> Response:
        notifier = self.emulator.webhooks
        if request.method == "DELETE":
            notifier.clear()
        elif request.method == "POST":
            try:
                doc = jsoncodec.loads(request.body or b"null")
                if not isinstance(doc, dict) or not isinstance(doc.get("headers", {}), dict):
                    raise TypeError('expected {"url": "http://...", "headers": {...}}')
                notifier.add(Webhook(str(doc.get("url", "")), dict(doc.get("headers", {}))))
            except (ValueError, TypeError) as exc:
                raise errors.bad_payload(f"Bad webhook: {exc}") from exc
        elif request.method != "GET":
            raise errors.ODataError(405, errors.QUERY_SYNTAX, "GET, POST or DELETE")
        status = 201 if request.method == "POST" else 200
        return json_response(status, {"webhooks": [h.describe() for h in notifier.hooks],
                                      "delivered": notifier.delivered,
                                      "failed": notifier.failed})

    def _expire_change_tokens(self, request: Request) -> Response:
        try:
            doc = jsoncodec.loads(request.body or b"{}")
            names = (doc.get("sets") or []) if isinstance(doc, dict) else None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TypeError("'sets' must be a list of entity set names")
        except (ValueError, TypeError) as exc:
            raise errors.bad_payload(f"Bad request: {exc}") from exc
        for name in names:
            if name not in self.emulator.schema:
                raise errors.no_segment(name)
        self.emulator.store.expire_change_tokens(*names)
        expired = names or [s.name for s in self.emulator.schema]
        return json_response(200, {"expired": expired})

    def _records(self, set_name: str) -> Response:
        if set_name not in self.emulator.schema:
            raise errors.no_segment(set_name)
        rows = self.emulator.store.scan(set_name, None)
        return json_response(200, {"value": [record_to_json(r) for r in rows]})
