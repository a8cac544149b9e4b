"""What the CLI prints: tables and lines whose text came from data (mapping names,
descriptions, error messages, CRM values). Control characters in such text are shown
escaped (``\\x1b``, ``\\r``, ``\\n`` …), so a value cannot move the cursor, recolour or clear
the terminal, or forge a line of output. The text log format (worker.logs) uses it too."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

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
