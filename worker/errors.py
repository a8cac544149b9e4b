"""The one exception hierarchy of crmsync and the exit statuses of the ``crmsync`` command.
Every error a user can meet is a CrmsyncError whose message names the row, field or
argument at fault; its class attribute ``exit_status`` is the status the command ends with
when the error reaches it."""

from __future__ import annotations

# Exit statuses of the crmsync command (README, "Bad input").
EXIT_OK = 0
EXIT_RECORDS_FAILED = 1  # the command ran, but records failed (sync)
EXIT_USAGE = 2  # bad argument, setting, TOML file or mapping
EXIT_DATABASE = 3  # database unreachable, missing or not upgraded
EXIT_REMOTE = 4  # CRM connection failure: refused, unresolvable, TLS, auth, timeout
EXIT_INTERNAL = 5  # anything else: a bug


class CrmsyncError(Exception):
    """Base of every error crmsync raises on purpose."""

    exit_status = EXIT_USAGE


class ConfigurationError(CrmsyncError):
    """A setting, argument or configuration file is missing or wrong."""


class DatabaseError(CrmsyncError):
    """The database refused a statement; the message says which row and constraint."""


class DatabaseUnavailable(CrmsyncError):
    """The database cannot be reached right now; callers retry with backoff."""

    exit_status = EXIT_DATABASE


class SchemaOutOfDate(CrmsyncError):
    """The crmsync schema is older (or newer) than this version of crmsync expects."""

    exit_status = EXIT_DATABASE


class JobError(CrmsyncError):
    """A job queue run failed; the message is stored in the log entry."""

    exit_status = EXIT_INTERNAL


class JobCancelled(JobError):
    """A run was asked to stop (job timeout or worker shutdown) and did so."""
