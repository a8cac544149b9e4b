"""The embedded PostgreSQL used when ``CRMSYNC_DATABASE_URL`` is unset.

``pgserver`` ships the server binaries on PyPI; the data directory lives under
``CRMSYNC_HOME/pgdata`` and is reused on the next start. The server is stopped when the last
process using it exits (pgserver's own reference counting)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worker.errors import ConfigurationError

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def start_embedded(home: Path, database: str = "postgres") -> str:
    """Start (or attach to) the embedded server under ``home`` and return a SQLAlchemy URL."""
    pgdata = (home / "pgdata").resolve()
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a declared dependency
        raise ConfigurationError(
            "CRMSYNC_DATABASE_URL is unset and the embedded server (pgserver) is not installed"
        ) from exc
    if pgdata not in _servers:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is
        # unset (services, containers); the fallback it takes is fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        log.info("starting embedded PostgreSQL", extra={"pgdata": str(pgdata)})
        _servers[pgdata] = pgserver.get_server(pgdata)
    return sqlalchemy_url(_servers[pgdata].get_uri(database))


def sqlalchemy_url(libpq_uri: str) -> str:
    """Turn pgserver's ``postgresql://user:@/db?host=/socket`` into a psycopg 3 URL."""
    parts = urlsplit(libpq_uri)
    host = parse_qs(parts.query).get("host", [""])[0]
    user = parts.username or "postgres"
    return f"postgresql+psycopg://{user}@/{parts.path.lstrip('/')}?host={host}"
