"""The one exception hierarchy of crmsync. Every error a user can meet is a CrmsyncError
whose message names the row, field or argument at fault."""

from __future__ import annotations


class CrmsyncError(Exception):
    """Base of every error crmsync raises on purpose."""


class ConfigurationError(CrmsyncError):
    """A setting, argument or configuration file is missing or wrong."""


class DatabaseError(CrmsyncError):
    """The database refused a statement; the message says which row and constraint."""


class DatabaseUnavailable(CrmsyncError):
    """The database cannot be reached right now; callers retry with backoff."""


class SchemaOutOfDate(CrmsyncError):
    """The crmsync schema is older (or newer) than this version of crmsync expects."""


class JobError(CrmsyncError):
    """A job queue run failed; the message is stored in the log entry."""


class JobCancelled(JobError):
    """A run was asked to stop (job timeout or worker shutdown) and did so."""
