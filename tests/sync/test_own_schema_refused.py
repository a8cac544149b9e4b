"""A mapping may not read or write crmsync's own tables: one whose local_table is in schema
crmsync is a check problem, and its runs fail without touching the table."""

from __future__ import annotations

from tests.sync.conftest import World
from worker.sync.check import check_all


def test_a_mapping_of_a_crmsync_table_is_refused(world: World) -> None:
    world.sql("INSERT INTO crmsync.integration_table_mappings (name, local_table, entity_set, "
              "remote_key) VALUES ('STATE', 'crmsync.job_queue_entries', 'accounts', "
              "'accountid')")
    before = world.sql("SELECT count(*) AS n FROM crmsync.job_queue_entries")[0].n
    problems = [str(p) for p in check_all(world.engine, world.sync_engine.clients)]
    assert ("mapping STATE: local_table: crmsync.job_queue_entries is in schema crmsync, "
            "which holds crmsync's own state; map a table of the ERP's schema") in problems
    summaries = {s.mapping: s for s in world.sync()}
    assert "is in schema crmsync" in (summaries["STATE"].error or "")
    assert world.sql("SELECT count(*) AS n FROM crmsync.job_queue_entries")[0].n == before
