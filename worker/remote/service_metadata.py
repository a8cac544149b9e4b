"""One connection's ``$metadata``: read once by the connection's client and shared by
everything that needs it (the mapping check, the passes' property facets, the bulk
messages, the webhook's table names), so a process asks the service for it once.

The document is kept for the client's life (a changed connection configuration makes a new
client, and so a new read). A read the service answered with an error (no ``$metadata``,
a refusal) is remembered for ``RETRY_AFTER`` seconds and raised again to every caller
meanwhile, so a service without the document is not asked on every pass; a read that got
no answer (unreachable, signing in failed) is not remembered: the next caller asks again.
Each view of the document (parsed entity sets, declared actions) is computed once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from worker.errors import CrmsyncError
from worker.remote.errors import RemoteAuthError, RemoteUnavailable

T = TypeVar("T")
RETRY_AFTER = 60.0  # seconds a service's refusal of $metadata is believed


class ServiceMetadata:
    """The ``$metadata`` document of one client, read at first use through ``read``."""

    def __init__(self, read: Callable[[], str]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._text: str | None = None
        self._failed: tuple[float, CrmsyncError] | None = None
        self._views: dict[Callable[[str], Any], Any] = {}

    def document(self) -> str:
        """The CSDL XML; raises what the read raised (a remembered refusal, see above)."""
        with self._lock:  # concurrent first users wait for the one read
            return self._document()

    def view(self, parse: Callable[[str], T]) -> T:
        """``parse(document)``, computed once per ``parse`` function for this client (an
        error of ``parse`` itself is raised, and computed again at the next call)."""
        with self._lock:
            if parse not in self._views:
                self._views[parse] = parse(self._document())
            value: T = self._views[parse]
            return value

    def _document(self) -> str:
        if self._text is not None:
            return self._text
        if self._failed is not None and time.monotonic() - self._failed[0] < RETRY_AFTER:
            raise self._failed[1]
        try:
            self._text = self._read()
        except (RemoteUnavailable, RemoteAuthError):
            raise
        except CrmsyncError as exc:
            self._failed = (time.monotonic(), exc)
            raise
        self._failed = None
        return self._text
