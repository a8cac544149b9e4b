"""Process settings read from the environment (``CRMSYNC_*``). Connection settings for the
remote side live in ``worker.remote.config``; this module holds what every command needs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where the database is and where crmsync keeps its local files."""

    database_url: str | None
    home: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = env.get("CRMSYNC_HOME") or str(Path.home() / ".local" / "share" / "crmsync")
        return cls(
            database_url=env.get("CRMSYNC_DATABASE_URL") or None,
            home=Path(home).expanduser(),
        )
