"""Logging set-up, done once at the entry point: one line per event, structured fields from
``extra=``. Readable text on a terminal; JSON lines when stderr goes elsewhere (a file, a
pipe, a log shipper). Under systemd, with stderr connected to the journal (``JOURNAL_STREAM``
names it), every line starts with its syslog priority (``<3>`` for an error, ``<4>`` a
warning …): journald takes the prefix off and stores it as the entry's PRIORITY, so
``journalctl -u crmsync -p err`` shows the errors. There the text has no time stamp (the
journal has its own); ``CRMSYNC_LOG_FORMAT=json`` still gives JSON lines, prefixed alike."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from worker.commands.output import clean

# Attributes every LogRecord has; anything else came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(fields_of(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, *, timestamp: bool = True) -> None:
        super().__init__()
        self.timestamp = timestamp

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in fields_of(record).items())
        line = f"{record.levelname:<7} {record.getMessage()}"
        if self.timestamp:
            line = datetime.fromtimestamp(record.created).strftime("%H:%M:%S ") + line
        if extras:
            line += f"  [{extras}]"
        # Values from data (mapping names, messages) must not drive the terminal; the JSON
        # formatter escapes them by itself.
        line = clean(line)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Python's levels as syslog priorities (sd-daemon(3)): 2 crit, 3 err, 4 warning, 6 info,
# 7 debug.
def syslog_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class JournalFormatter(logging.Formatter):
    """Each line of ``inner``'s text prefixed with the record's syslog priority: a
    traceback's lines too, since journald stores every line as an entry of its own."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def stderr_is_journal() -> bool:
    """Whether stderr is the journal stream systemd connected (``JOURNAL_STREAM`` is its
    ``device:inode``; a redirected stderr of a child does not match)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{stat.st_dev}:{stat.st_ino}"


def configure(level: str = "INFO", json_lines: bool | None = None) -> None:
    journal = stderr_is_journal()
    if json_lines is None:
        json_lines = not journal and not sys.stderr.isatty()
    formatter: logging.Formatter = JsonFormatter() if json_lines \
        else TextFormatter(timestamp=not journal)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(formatter) if journal else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays at WARNING unless asked for.
    for noisy in ("apscheduler", "urllib3", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
