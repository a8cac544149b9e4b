"""The emulator without its transport: routes a ``Request`` to the token endpoint, the admin
endpoints or the data API, applying authentication and fault injection to data requests."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.emulator import errors, jsoncodec
from worker.emulator.admin import AdminApi
from worker.emulator.api import DataApi
from worker.emulator.auth import TOKEN_PATH, TokenIssuer, unauthorized
from worker.emulator.batch import BatchRunner
from worker.emulator.bulk import split_action
from worker.emulator.faults import FaultInjector, FaultKind, Verdict
from worker.emulator.limits import ServiceLimits, ServiceProtection
from worker.emulator.metadata import NOTICE
from worker.emulator.paths import SERVICE_PATH
from worker.emulator.profiles import DATAVERSE, Profile, profile_named
from worker.emulator.protocol import Request, Response, error_response, json_response
from worker.emulator.schema import Schema
from worker.emulator.seed import seed_sample_users
from worker.emulator.store import DEFAULT_CHANGE_RETENTION, Store
from worker.emulator.webhooks import Webhook, WebhookNotifier

log = logging.getLogger(__name__)

_FAULT_ERRORS = {
    429: (errors.THROTTLED, "Number of requests exceeded the limit of 6000 over time window "
                            "of 300 seconds."),
    503: (errors.SERVICE_UNAVAILABLE, "The service is temporarily unavailable."),
    500: (errors.UNEXPECTED, "An unexpected error occurred."),
}


@dataclass(frozen=True)
class Outcome:
    """A response, and whether to drop the connection instead of sending it."""

    response: Response
    drop: bool = False


class Stats:
    """Request counters for ``/_admin/stats`` (a lock, since handler threads share them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_method: Counter[str] = Counter()
            self.by_status: Counter[int] = Counter()
            self.by_set: Counter[str] = Counter()
            self.by_message: Counter[str] = Counter()

    def record(self, method: str, path: str, status: int) -> None:
        resource = path[len(SERVICE_PATH) + 1:]
        segment = resource.split("(", 1)[0].split("?", 1)[0].split("/", 1)[0] or "(root)"
        action = split_action(resource)
        with self._lock:
            if action is not None:
                self.by_message[action[1]] += 1
            self.total += 1
            self.by_method[method] += 1
            self.by_status[status] += 1
            self.by_set[segment] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.total, "by_method": dict(self.by_method),
                    "by_status": {str(k): v for k, v in self.by_status.items()},
                    "by_set": dict(self.by_set), "by_message": dict(self.by_message),
                    "uptime_seconds": round(time.time() - self.started, 3)}


class Emulator:
    """Everything the emulator holds, and the routing of one request.

    ``profile``: the server imitated (``dataverse`` or ``odata``, see ``profiles``), with
    ``page_size`` as its own page size; ``change_retention``: seconds a change-tracking
    token stays valid (Dataverse's default is 7 days; None: forever); ``change_tracking``:
    True (every set), False, or the names of the sets with change tracking enabled (None:
    the profile's default); ``webhooks``: receivers called after every write; ``auth``: a
    token issuer of the caller's (certificates, managed identities) instead of the one built
    from ``client_id`` / ``client_secret``; ``limits``: Dataverse's service protection limits
    and headers (off when None); ``bulk_unsupported``: entity sets that refuse the bulk
    messages."""

    def __init__(self, *, client_id: str | None = None, client_secret: str | None = None,
                 token_lifetime: float = 3600, sample_users: int = 0,
                 data_file: str | os.PathLike[str] | None = None,
                 schema: Schema | None = None,
                 change_retention: float | None = DEFAULT_CHANGE_RETENTION,
                 change_tracking: bool | Iterable[str] | None = None,
                 profile: str | Profile = DATAVERSE, page_size: int | None = None,
                 webhooks: Iterable[Webhook] = (), auth: TokenIssuer | None = None,
                 limits: ServiceLimits | None = None,
                 bulk_unsupported: Iterable[str] = ()) -> None:
        self.profile = profile_named(profile).with_page_size(page_size)
        self.protection = ServiceProtection(limits) if limits is not None else None
        self.schema = schema or self.profile.schema()
        tracking = self.profile.change_tracking if change_tracking is None else change_tracking
        self.store = Store(self.schema, change_retention=change_retention,
                           change_tracking=tracking)
        self.webhooks = WebhookNotifier()
        for hook in webhooks:
            self.webhooks.add(hook)
        self.store.add_listener(self._notify)
        self._seeding = False  # sample data is there "before", and calls no webhook
        self.faults = FaultInjector()
        self.auth = auth or TokenIssuer(client_id, client_secret, token_lifetime)
        self.stats = Stats()
        self.sample_users = sample_users
        self.data_file = Path(data_file) if data_file else None
        self.api = DataApi(self.schema, self.store, self.profile, bulk_unsupported)
        self.batch = BatchRunner(self.store, self.dispatch_data,
                                 absolute_urls=self.profile.absolute_batch_urls)
        self.admin = AdminApi(self)
        if self.data_file and self.data_file.exists():
            self.store.load(jsoncodec.loads(self.data_file.read_bytes()))
        self._seed()

    def _seed(self) -> None:
        self._seeding = True
        try:
            seed_sample_users(self.store, self.sample_users)
        finally:
            self._seeding = False

    def _notify(self, message: str, set_name: str, key: str) -> None:
        if not self._seeding:
            self.webhooks.notify(message, self.schema[set_name].entity_type, key)

    def handle(self, request: Request) -> Outcome:
        path = request.path
        if path.startswith("/_admin/"):
            return Outcome(self.admin.handle(request))
        if path == SERVICE_PATH or path.startswith(SERVICE_PATH + "/"):
            outcome = self._data(request)
            self.stats.record(request.method, path, outcome.response.status)
            return outcome
        signed_in = self.auth.route(request)
        if signed_in is not None:
            return Outcome(signed_in)
        if path == "/" and request.method == "GET":
            return Outcome(json_response(200, {
                "notice": NOTICE, "service_root": request.service_root,
                "token_url": request.root + TOKEN_PATH, "auth_required": self.auth.required}))
        return Outcome(error_response(errors.no_segment(path.strip("/"))))

    def _data(self, request: Request) -> Outcome:
        refusal = self.auth.check(request.headers.get("authorization"))
        if refusal is not None:
            return Outcome(unauthorized(refusal, request.root + TOKEN_PATH))
        protection = self.protection
        if protection is None:
            return self._serve(request)
        entry = protection.admit()
        if isinstance(entry, errors.ODataError):
            return Outcome(error_response(entry))
        started = time.perf_counter()
        outcome = self._serve(request)
        outcome.response.headers += protection.finish(entry, time.perf_counter() - started)
        return outcome

    def set_limits(self, limits: ServiceLimits | None) -> None:
        """Turn the service protection limits on (a fresh window) or off (None)."""
        self.protection = ServiceProtection(limits) if limits is not None else None

    def _serve(self, request: Request) -> Outcome:
        """A data request past authentication and the limits: faults, then the API."""
        verdict = self.faults.decide(request.method)
        if verdict.delay:
            time.sleep(verdict.delay)
        if verdict.status is not None:
            return Outcome(self._fault_response(verdict))
        response = self.dispatch_data(request)
        if verdict.drop:
            log.info("fault: dropping the connection after the write",
                     extra={"method": request.method, "path": request.path,
                            "status": response.status})
        return Outcome(response, drop=verdict.drop)

    def dispatch_data(self, request: Request) -> Response:
        """A data request, without authentication and faults (also used by ``$batch``)."""
        path = request.path[len(SERVICE_PATH):]
        if not request.path.startswith(SERVICE_PATH):  # a $batch part outside the service
            return error_response(errors.no_segment(request.path.strip("/")[:200]))
        try:
            if path == "/$batch":
                if request.method != "POST":
                    raise errors.ODataError(405, errors.QUERY_SYNTAX, "$batch takes POST.")
                return self.batch.run(request)
            return self.api.handle(request, path)
        except errors.ODataError as exc:
            return error_response(exc)
        except RecursionError:  # the parsers are iterative or bounded; this is a safety net
            log.warning("request too deeply nested", extra={"path": request.path})
            return error_response(errors.bad_query("The request is nested too deeply."))
        except Exception:  # a bug in the emulator must not look like a dropped connection
            log.exception("emulator failed on a request", extra={"path": request.path})
            return error_response(errors.ODataError(500, errors.UNEXPECTED,
                                                    "An unexpected error occurred."))

    @staticmethod
    def _fault_response(verdict: Verdict) -> Response:
        code, message = _FAULT_ERRORS[verdict.status or 500]
        headers = {"Retry-After": str(verdict.retry_after)} if verdict.retry_after else {}
        if verdict.kind is FaultKind.ERROR_RATE:
            message += " (injected)"
        return error_response(errors.ODataError(verdict.status or 500, code, message, headers))

    def reset(self) -> None:
        """Empty store, no faults, zeroed counters, sample users seeded again (webhooks
        stay configured)."""
        self.faults.clear()
        self.stats.reset()
        self.store.clear()
        self._seed()

    def save(self) -> Path | None:
        """Write the data file (atomically: a crash leaves the previous one intact)."""
        if self.data_file is None:
            return None
        temporary = self.data_file.with_suffix(self.data_file.suffix + ".tmp")
        temporary.write_text(jsoncodec.dumps(self.store.dump()))
        os.replace(temporary, self.data_file)
        return self.data_file
