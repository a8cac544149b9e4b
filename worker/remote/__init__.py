"""The remote side: an OData v4 / Dataverse Web API client on ``requests``.

``load_connection`` reads a named connection's settings, ``ODataClient`` talks to it,
``EntitySet`` reads and writes one remote table, ``Operation`` / ``ODataClient.batch``
write many records at once. docs/remote.md is the configuration reference."""

from __future__ import annotations

from worker.remote.batch import Operation, OperationResult
from worker.remote.changes import Change, ChangeFeed
from worker.remote.client import EntitySet, ODataClient, WriteResult, bind
from worker.remote.config import ConnectionSettings, Dialect, load_connection
from worker.remote.errors import (
    RemoteAuthError,
    RemoteConflict,
    RemoteDeltaExpired,
    RemoteError,
    RemoteNotFound,
    RemoteProtocolError,
    RemoteRedirected,
    RemoteThrottled,
    RemoteUnavailable,
)
from worker.remote.observer import CallbackObserver, RequestObserver
from worker.remote.retry import RetryPolicy
from worker.remote.secrets import Secret

__all__ = [
    "CallbackObserver",
    "Change",
    "ChangeFeed",
    "ConnectionSettings",
    "Dialect",
    "EntitySet",
    "ODataClient",
    "Operation",
    "OperationResult",
    "RemoteAuthError",
    "RemoteConflict",
    "RemoteDeltaExpired",
    "RemoteError",
    "RemoteNotFound",
    "RemoteProtocolError",
    "RemoteRedirected",
    "RemoteThrottled",
    "RemoteUnavailable",
    "RequestObserver",
    "RetryPolicy",
    "Secret",
    "WriteResult",
    "bind",
    "load_connection",
]
