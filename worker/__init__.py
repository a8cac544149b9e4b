"""crmsync: keeps ERP tables in PostgreSQL and a CRM (Dataverse / OData v4) in sync."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crmsync")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
