"""One OData client per named connection, created on first use and shared by everything
of the process that talks to that connection (runs, probe, webhook): one HTTP session and
one request budget per connection, and its one ``$metadata`` (the client's)."""

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
        self._lock = threading.Lock()

    def get(self, name: str) -> ODataClient:
        """The client of connection ``name``. Settings are read again on every call (cheap),
        so a changed configuration or rotated secret file takes effect at the next run."""
        settings = load_connection(name)
        with self._lock:
            client = self._clients.get(name)
            if client is not None and client.settings != settings:
                client.close()  # and its $metadata: the new settings may name another service
                client = None
            if client is None:
                observer = self._observers(name) if self._observers else None
                client = ODataClient(settings, observer)
                self._clients[name] = client
            return client

    def metadata(self, name: str) -> dict[str, metadata.EntitySetInfo]:
        """The entity sets of connection ``name``'s service; raises when its ``$metadata``
        cannot be read."""
        return self.get(name).service_metadata.view(metadata.parse)

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
