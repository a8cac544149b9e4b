"""Push: ``POST /webhooks/dataverse/<connection>`` on the worker's HTTP listener accepts the
call a Dataverse webhook (service endpoint) makes after a create, update or delete, and wakes
at once the entries of the mappings that read that table.

Off unless the connection sets ``webhook = true`` and a ``webhook_secret`` (kept like the
other secrets: environment, secret file or systemd credential; never logged). A call must
carry the secret in the configured header (Dataverse "HttpHeader" authentication) or as the
``code`` query parameter ("WebhookKey"); a bad or missing secret is answered 401 and wakes
nothing. The request thread only checks and parses (body at most 64 KiB) and queues the
table's logical name; a consumer thread resolves it to entity sets (the service's
``$metadata``) and mappings and pulls their entries forward (a short UPDATE whose NOTIFY
wakes every worker), so the answer, 202, comes at once and no sync runs on that thread.

Dataverse calls for crmsync's own writes too. A call whose ``InitiatingUserId`` is the
connection's own user (``WhoAmI``, asked once) wakes nothing: it only echoes a pass's write."""

from __future__ import annotations

import hmac
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from worker.db.engine import translate_errors
from worker.errors import ConfigurationError
from worker.metrics import WEBHOOK_CALLS
from worker.queue.wake import wake
from worker.remote.config import ConnectionSettings, load_connection

if TYPE_CHECKING:
    from worker.sync.clients import Clients

log = logging.getLogger(__name__)

PATH_PREFIX = "/webhooks/dataverse/"
MAX_BODY = 64 * 1024
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")
_LOGICAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @classmethod
    def of(cls, status: int, text: str) -> Answer:
        return cls(status, json.dumps({"status": status, "message": text}).encode() + b"\n")


@dataclass(frozen=True)
class Call:
    """One webhook request as the HTTP handler saw it."""

    connection: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    content_length: str | None
    read_body: Callable[[int], bytes]


class WebhookReceiver:
    """Checks webhook calls on the request thread; wakes entries on its own thread."""

    def __init__(self, engine: Engine, clients: Clients, *,
                 settings: Callable[[str], ConnectionSettings] = load_connection) -> None:
        self.engine = engine
        self.clients = clients  # the runs' clients: one $metadata, one request budget
        self._cache = SettingsCache(settings)
        self._warnings = RateLimitedWarnings(log)
        self._queue: queue.Queue[_Wake | None] = queue.Queue(maxsize=10_000)
        self._own_users: dict[str, str | None] = {}
        self.handled = 0  # batches of queued calls the consumer has dealt with
        self._thread = threading.Thread(target=self._consume, name="crmsync-webhook",
                                        daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=1)
            except queue.Full:
                return  # a daemon thread: it ends with the process
            self._thread.join(5)

    # -- the request thread --------------------------------------------------------------
    def handle(self, call: Call) -> Answer:
        answer, wake = self._check(call)
        WEBHOOK_CALLS.labels(call.connection if answer.status != 404 else "",
                             str(answer.status)).inc()
        if wake is not None:
            try:
                self._queue.put_nowait(wake)
            except queue.Full:
                return Answer.of(503, "too many calls waiting; try again")
            log.debug("webhook call accepted",
                      extra={"connection": call.connection, "entity": wake.entity})
        return answer

    def _check(self, call: Call) -> tuple[Answer, _Wake | None]:
        settings = self._enabled(call.connection)
        if settings is None:
            return Answer.of(404, "not found"), None
        if not _authentic(call, settings):
            self._warnings.warn("webhook call refused: bad or missing secret",
                                connection=call.connection)
            return Answer.of(401, "bad or missing webhook secret"), None
        length = call.content_length
        if length is None or not (length.isascii() and length.isdigit()):
            return Answer.of(411, "Content-Length required"), None
        if int(length) > MAX_BODY:
            return Answer.of(413, f"body larger than {MAX_BODY} bytes"), None
        try:
            doc = json.loads(call.read_body(int(length)))
        except (ValueError, OSError, RecursionError):
            return Answer.of(400, "body: expected a JSON object"), None
        entity = doc.get("PrimaryEntityName") if isinstance(doc, dict) else None
        if not isinstance(entity, str) or not _LOGICAL_NAME.fullmatch(entity):
            return Answer.of(400, "PrimaryEntityName: expected a table's logical name"), None
        user = doc.get("InitiatingUserId")
        return Answer.of(202, "accepted"), _Wake(
            call.connection, entity.lower(), user.lower() if isinstance(user, str) else None)

    def _enabled(self, connection: str) -> ConnectionSettings | None:
        if not _NAME.fullmatch(connection):
            return None
        try:
            settings = self._cache.get(connection)
        except ConfigurationError as exc:
            self._warnings.warn("webhook call for a connection whose configuration fails",
                                connection=connection, error=str(exc))
            return None
        return settings if settings.webhook and settings.webhook_secret is not None else None

    # -- the consumer thread -------------------------------------------------------------
    def _consume(self) -> None:
        while True:
            item = self._queue.get()
            calls: set[tuple[str, str]] = set()
            while item is not None:
                if not self._own_write(item):
                    calls.add((item.connection, item.entity))
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            for connection, entity in sorted(calls):
                try:
                    self._wake(connection, entity)
                except Exception as exc:  # the next call or the schedule catches up
                    log.warning("webhook wake failed", extra={
                        "connection": connection, "entity": entity, "error": str(exc)})
            self.handled += 1
            if item is None:
                return

    def _own_write(self, wake: _Wake) -> bool:
        """The call echoes a write of crmsync's own user on that connection."""
        if wake.user is None:
            return False
        if wake.connection not in self._own_users:
            self._own_users[wake.connection] = own_user(self.clients, wake.connection)
        own = self._own_users[wake.connection]
        if own is None:
            del self._own_users[wake.connection]  # ask again with the next call
            return False
        if wake.user == own:
            log.debug("webhook: own write ignored",
                      extra={"connection": wake.connection, "entity": wake.entity})
            return True
        return False

    def _wake(self, connection: str, entity: str) -> None:
        sets = entity_sets(self.clients, connection, entity)
        with translate_errors(), self.engine.begin() as conn:
            woken = wake(conn, timedelta(0), connection=connection, entity_sets=sets)
        log.info("webhook: entries woken", extra={
            "connection": connection, "entity": entity, "mappings": sorted(set(woken)),
            "entries": len(woken)})


class SettingsCache:
    """Connection settings (and their secrets) kept a few seconds: a flood of calls reads
    the configuration file and the secret files once per ``seconds``, not once per call.
    A configuration that fails (an unknown name too) is remembered the same way; when
    ``size`` names are kept, a new one takes the place of the oldest failure, so calls for
    made-up names never push out a connection that loads."""

    def __init__(self, load: Callable[[str], ConnectionSettings], seconds: float = 5.0,
                 size: int = 64) -> None:
        self._load = load
        self._seconds = seconds
        self._size = size
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ConnectionSettings | ConfigurationError]] = {}

    def get(self, name: str) -> ConnectionSettings:
        with self._lock:
            now = time.monotonic()
            entry = self._entries.get(name)
            if entry is None or now - entry[0] >= self._seconds:
                try:
                    value: ConnectionSettings | ConfigurationError = self._load(name)
                except ConfigurationError as exc:
                    value = exc
                self._entries.pop(name, None)
                if len(self._entries) >= self._size:
                    self._forget_one()
                entry = self._entries[name] = (now, value)
        if isinstance(entry[1], ConfigurationError):
            raise entry[1]
        return entry[1]

    def _forget_one(self) -> None:
        """Drop the oldest failure (entries are in insertion order), else the oldest."""
        failed = next((n for n, (_, v) in self._entries.items()
                       if isinstance(v, ConfigurationError)), None)
        del self._entries[failed if failed is not None else next(iter(self._entries))]


class RateLimitedWarnings:
    """One WARNING per message per ``seconds``; the ones left out are counted in the next
    (``suppressed``), so a flood of bad calls is visible without flooding the log."""

    def __init__(self, logger: logging.Logger, seconds: float = 60.0) -> None:
        self._log = logger
        self._seconds = seconds
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, message: str, **fields: object) -> None:
        with self._lock:
            now = time.monotonic()
            at, suppressed = self._last.get(message, (-float("inf"), 0))
            if now - at < self._seconds:
                self._last[message] = (at, suppressed + 1)
                return
            self._last[message] = (now, 0)
        self._log.warning(message, extra={**fields, "suppressed": suppressed})


@dataclass(frozen=True)
class _Wake:
    connection: str
    entity: str
    user: str | None  # InitiatingUserId, lower case


def own_user(clients: Clients, connection: str) -> str | None:
    """The connection's own user id (``WhoAmI``), lower case; None when it cannot be read."""
    try:
        client = clients.get(connection)
        reply = client.transport.send("GET", f"{client.base_url}/WhoAmI")
        user = json.loads(reply.body).get("UserId")
    except Exception as exc:
        log.debug("webhook: WhoAmI unavailable", extra={"error": str(exc)})
        return None
    return user.lower() if isinstance(user, str) else None


def _authentic(call: Call, settings: ConnectionSettings) -> bool:
    assert settings.webhook_secret is not None
    expected = settings.webhook_secret.reveal().encode()
    offered = call.headers.get(settings.webhook_header)
    if offered is None:
        codes = call.query.get("code") or []
        offered = codes[0] if len(codes) == 1 else None
    return offered is not None and hmac.compare_digest(offered.encode(), expected)


def entity_sets(clients: Clients, connection: str, logical_name: str) -> list[str]:
    """The entity sets (lower case) whose entity type is ``logical_name``, from the
    service's ``$metadata``; Dataverse's plural when it cannot be read."""
    try:
        info = clients.metadata(connection)
    except Exception as exc:
        log.debug("webhook: $metadata unavailable", extra={"error": str(exc)})
        info = {}
    found = [name.lower() for name, es in info.items()
             if es.entity_type.rsplit(".", 1)[-1].lower() == logical_name]
    return found or [plural(logical_name)]


def plural(logical_name: str) -> str:
    """Dataverse's default entity set name: account → accounts, currency → currencies."""
    if logical_name.endswith("y") and logical_name[-2:-1] not in tuple("aeiou"):
        return logical_name[:-1] + "ies"
    if logical_name.endswith(("s", "x", "ch", "sh")):
        return logical_name + "es"
    return logical_name + "s"
