"""Webhooks: after each committed create, update or delete, the emulator POSTs a Dataverse
``RemoteExecutionContext``-shaped JSON body to every configured URL, as a Dataverse webhook
service endpoint registered for those messages would.

    {"MessageName": "Create", "PrimaryEntityName": "account",
     "PrimaryEntityId": "<key>", "OperationCreatedOn": "2026-11-26T10:00:00Z",
     "OrganizationName": "emulator", "Depth": 1}

Calls are made from one background thread, in the order of the writes; a write only puts an
event on a bounded queue, so a slow or unreachable receiver never delays or fails it. A call
that fails is logged and dropped (no retries); so are events beyond the queue's bound."""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from worker.emulator import jsoncodec

log = logging.getLogger(__name__)

MESSAGES = ("Create", "Update", "Delete")
_QUEUE_BOUND = 10_000
_TIMEOUT = 5.0
# Receivers are called directly, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Webhook:
    """A receiver: its URL and the headers sent with every call (an auth key, say)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL {self.url!r}: expected http(s)://host[:port]/path")
        for name, value in self.headers.items():
            if not (isinstance(name, str) and isinstance(value, str)) or any(
                    c in name + value for c in "\r\n") or not name.strip() or ":" in name:
                raise ValueError(f"webhook header {name!r}: expected a name and a one-line "
                                 "text value")

    @property
    def address(self) -> str:
        """The URL without its query (a webhook key may travel there): safe to log."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]  # without user:password
        return f"{parts.scheme}://{host}{parts.path}"

    def describe(self) -> dict[str, Any]:
        """Address and header names (values and query may hold secrets: never shown)."""
        return {"url": self.address, "headers": sorted(self.headers)}


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` (the command's ``--webhook-header``) as (name, value)."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"webhook header {text.split(':')[0]!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def context_body(message: str, entity_type: str, key: str) -> dict[str, Any]:
    """The JSON body of one call (the fields of Dataverse's RemoteExecutionContext that a
    receiver needs to know what changed)."""
    return {"MessageName": message, "PrimaryEntityName": entity_type,
            "PrimaryEntityId": key,
            "OperationCreatedOn": datetime.now(UTC).isoformat(timespec="milliseconds")
                                  .replace("+00:00", "Z"),
            "OrganizationName": "emulator", "Depth": 1}


class WebhookNotifier:
    """The configured webhooks and the thread that calls them."""

    def __init__(self, timeout: float = _TIMEOUT) -> None:
        self.timeout = timeout
        self._hooks: tuple[Webhook, ...] = ()
        self._lock = threading.Lock()
        self._events: queue.Queue[tuple[tuple[Webhook, ...], bytes] | None] = queue.Queue(
            _QUEUE_BOUND)
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    @property
    def hooks(self) -> tuple[Webhook, ...]:
        return self._hooks

    def add(self, hook: Webhook) -> None:
        with self._lock:
            self._hooks = (*self._hooks, hook)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="crmsync-emulator-webhooks")
                self._thread.start()

    def clear(self) -> None:
        with self._lock:
            self._hooks = ()

    def notify(self, message: str, entity_type: str, key: str) -> None:
        """Queue one call per webhook; returns at once."""
        hooks = self._hooks
        if not hooks:
            return
        body = jsoncodec.dumps(context_body(message, entity_type, key)).encode()
        try:
            self._events.put_nowait((hooks, body))
        except queue.Full:
            self.failed += len(hooks)
            log.warning("webhook queue full: event dropped",
                        extra={"message": message, "entity": entity_type})

    def close(self) -> None:
        """Stop the delivery thread (events still queued are dropped)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            while True:  # make room for the stop marker: what is queued is dropped anyway
                try:
                    self._events.get_nowait()
                except queue.Empty:
                    break
            self._events.put(None)
            thread.join(self.timeout + 1)

    def _run(self) -> None:
        while (event := self._events.get()) is not None:
            hooks, body = event
            for hook in hooks:
                self._deliver(hook, body)

    def _deliver(self, hook: Webhook, body: bytes) -> None:
        headers = {"Content-Type": "application/json", **hook.headers}
        request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read()
            self.delivered += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.failed += 1
            reason = getattr(exc, "reason", None) or exc
            log.warning("webhook call failed", extra={"url": hook.address,
                                                      "error": str(reason)})
