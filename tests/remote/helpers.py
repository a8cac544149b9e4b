"""Shared set-up of the integration tests: a client for an emulator, configured the way a
user would (CRMSYNC_CRM_* variables through load_connection), and direct seeding of the
emulator's store."""

from __future__ import annotations

import uuid
from typing import Any

from worker.emulator.server import EmulatorServer
from worker.emulator.values import Changes
from worker.remote.client import ODataClient
from worker.remote.config import load_connection
from worker.remote.observer import RequestObserver


def client_for(server: EmulatorServer, observer: RequestObserver | None = None,
               **settings: Any) -> ODataClient:
    """A client of ``server``; ``settings`` are CRMSYNC_CRM_<NAME> values (page_size=…).
    Retries are quick so failure tests stay fast."""
    env = {"CRMSYNC_CRM_URL": server.base_url, "CRMSYNC_CRM_RETRY_BASE": "0.05",
           "CRMSYNC_CRM_CONNECT_TIMEOUT": "2", "CRMSYNC_CRM_READ_TIMEOUT": "10"}
    env.update({f"CRMSYNC_CRM_{k.upper()}": str(v) for k, v in settings.items()})
    return ODataClient(load_connection("crm", env=env), observer)


def seed_accounts(server: EmulatorServer, count: int, marker: str) -> list[str]:
    """``count`` accounts written straight into the store, ``description`` = marker."""
    keys = [str(uuid.uuid4()) for _ in range(count)]
    for i, key in enumerate(keys):
        server.store.create("accounts", Changes(
            values={"name": f"{marker} {i}", "description": marker}, key=key))
    return keys


def marker() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"
