"""How dates and GUIDs are spelled on the wire, shared by bodies, keys and ``$filter``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def format_datetime(value: datetime) -> str:
    """Dataverse's spelling: UTC, whole seconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 date-time with offset (or a bare date, read as midnight UTC)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        if "T" in text:
            raise ValueError(f"date-time without offset: {text}")
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def normalize_guid(text: str) -> str | None:
    """The GUID in lower case, or None when ``text`` is not a GUID."""
    return text.lower() if _GUID.match(text) else None
