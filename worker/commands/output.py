"""What the CLI prints: tables and lines whose text came from data (mapping names,
descriptions, error messages, CRM values). Control characters in such text are shown
escaped (``\\x1b``, ``\\r``, ``\\n`` …), so a value cannot move the cursor, recolour or clear
the terminal, or forge a line of output. The text log format (worker.logs) uses it too."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta

# C0 and C1 controls and DEL; bidirectional overrides and isolates (they reorder what is
# shown); line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object) -> str:
    """``value`` as text that is safe to print on a terminal (one line, no controls)."""
    return _UNSAFE.sub(_escape, str(value))


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def format_table(rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines of a table: the first row is the header, underlined; every cell is
    :func:`clean`-ed, columns are padded to their widest cell."""
    if not rows:
        return []
    cells = [[clean("" if cell is None else cell) for cell in row] for row in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for n, row in enumerate(cells):
        padded = (cell + " " * (w - width(cell)) for cell, w in zip(row, widths, strict=True))
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def print_table(rows: Sequence[Sequence[object]]) -> None:
    for line in format_table(rows):
        print(line)


def print_line(text: object) -> None:
    """One line of text from data, cleaned."""
    print(clean(text))


def when(value: datetime | None) -> str:
    """A time for a table: date, time and zone, in this machine's zone."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def interval(value: timedelta | None) -> str:
    """An interval as people write it and ``entries edit --every`` takes it: '30 minutes',
    '1 hour 30 minutes', '10 seconds'."""
    if value is None:
        return "-"
    left, parts = round(value.total_seconds()), []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts) or "0 seconds"


def yes_no(value: object) -> str:
    return "yes" if value else "no"
