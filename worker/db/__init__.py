"""The database seam: engine creation, the embedded server, migrations and table definitions."""
