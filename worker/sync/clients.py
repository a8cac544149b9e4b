"""One OData client per named connection per process, and each service's parsed
``$metadata``, created on first use and shared by every run of the process."""

from __future__ import annotations

import threading
from collections.abc import Callable

from worker.remote.client import ODataClient
from worker.remote.config import load_connection
from worker.remote.observer import RequestObserver
from worker.sync import metadata


class Clients:
    """``observers`` makes the request observer of a connection from its name."""

    def __init__(self, observers: Callable[[str], RequestObserver] | None = None) -> None:
        self._observers = observers
        self._clients: dict[str, ODataClient] = {}
        self._metadata: dict[str, dict[str, metadata.EntitySetInfo]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> ODataClient:
        """The client of connection ``name``. Settings are read again on every call (cheap),
        so a changed configuration or rotated secret file takes effect at the next run."""
        settings = load_connection(name)
        with self._lock:
            client = self._clients.get(name)
            if client is not None and client.settings != settings:
                client.close()
                self._metadata.pop(name, None)
                client = None
            if client is None:
                observer = self._observers(name) if self._observers else None
                client = ODataClient(settings, observer)
                self._clients[name] = client
            return client

    def metadata(self, name: str) -> dict[str, metadata.EntitySetInfo]:
        with self._lock:
            cached = self._metadata.get(name)
        if cached is None:
            cached = metadata.parse(self.get(name).metadata())
            with self._lock:
                self._metadata[name] = cached
        return cached

    def max_lengths(self, name: str, entity_set: str) -> dict[str, int]:
        """Text properties' maximum lengths (empty when the service does not say)."""
        try:
            info = self.metadata(name).get(entity_set)
        except Exception:  # a service without $metadata still syncs, just without cutting
            return {}
        if info is None:
            return {}
        return {p.name: p.max_length for p in info.properties.values() if p.max_length}

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
