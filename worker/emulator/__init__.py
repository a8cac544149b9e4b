"""A local Dataverse-compatible Web API server: a test double for demos, tests and
benchmarks, not a CRM."""
