"""A write as the client sends it: the request (:class:`Call`), ready to go alone or as a
part of a ``$batch``, and what the service's answer means (:class:`WriteResult`). Kept
apart from the client so that the modules that send writes many at a time (``batch``,
``bulk``) depend on it and not on the client, which depends on them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.remote.transport import Reply


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a create, update or delete that the service accepted.

    ``etag`` and ``modified_on`` are the record's version after the write, when the
    service returned a representation (or an ETag header): store them to recognise the
    write's own echo in the next incremental read. ``already_existed``: a create found the
    record there (a retry after a lost response, or another writer); ``already_gone``: a
    delete found nothing to delete. ``status`` is 304 for an update with nothing to send.
    """

    key: str
    status: int
    etag: str | None = None
    modified_on: datetime | None = None
    record: dict[str, Any] | None = None
    already_existed: bool = False
    already_gone: bool = False


@dataclass(frozen=True)
class Call:
    """One write request, ready for sending alone or as a part of a $batch, with the
    function that turns its reply into a WriteResult (or raises the RemoteError)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    accept: frozenset[int]
    interpret: Callable[[Reply], WriteResult]
