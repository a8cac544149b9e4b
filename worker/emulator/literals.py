"""How dates and GUIDs are spelled on the wire, shared by bodies, keys and ``$filter``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def format_datetime(value: datetime) -> str:
    """Dataverse's spelling: UTC, ``Z``, whole seconds, or microseconds when there are any
    (a server that keeps them)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def format_date(value: date) -> str:
    return value.isoformat()


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 date-time with offset (or a bare date, read as midnight UTC), in UTC;
    ValueError for anything else, including an instant outside years 1-9999 in UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        if "T" in text:
            raise ValueError(f"date-time without offset: {text}")
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text} is outside years 1-9999 in UTC") from None


def parse_date(text: str) -> date:
    """A calendar date ``YYYY-MM-DD``; ValueError for anything else."""
    if not _DATE.match(text):
        raise ValueError(f"not a date: {text}")
    return date.fromisoformat(text)


def normalize_guid(text: str) -> str | None:
    """The GUID in lower case, or None when ``text`` is not a GUID."""
    return text.lower() if _GUID.match(text) else None
