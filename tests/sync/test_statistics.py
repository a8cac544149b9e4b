"""The planner's statistics of the couplings while an initial sync fills them: without them,
each chunk's lookup of its couplings by key is planned as a scan of every coupling the
mapping has, so a long initial sync slows down as it goes (O(n) a chunk)."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from tests.sync.conftest import World, add_customers
from worker.db.engine import text_array
from worker.sync import couplings as coupling_store
from worker.sync.context import ANALYZE_AFTER


def _plan(world: World, mapping: str, local_ids: list[str]) -> str:
    """The plan of the to-pass's lookup of a chunk's couplings by local id, as JSON."""
    with world.engine.connect() as conn:
        plan = conn.scalar(sa.text(
            "EXPLAIN (FORMAT JSON) SELECT * FROM crmsync.couplings "
            "WHERE mapping_name = :m AND local_id = ANY(:ids)"), {"m": mapping, "ids": local_ids})
    return json.dumps(plan)


def test_an_initial_sync_tells_the_planner_of_the_couplings_it_adds(world: World) -> None:
    count = ANALYZE_AFTER + 200
    add_customers(world, count)
    assert world.counts("CURRENCY", "CUSTOMER")[("CUSTOMER", "to")]["inserted"] == count
    common = world.scalar(
        "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'crmsync' "
        "AND tablename = 'couplings' AND attname = 'mapping_name'")
    assert common is not None and "CUSTOMER" in common
    # A chunk's couplings are probed by key, not found by reading all of the mapping's.
    plan = _plan(world, "CUSTOMER", [f"C{n:04d}" for n in range(1, 501)])
    assert "local_id = ANY" in plan.split('"Index Cond"', 1)[-1].split('"Rows Removed', 1)[0]


def test_a_small_pass_leaves_the_statistics_alone(world: World) -> None:
    add_customers(world, 20)
    before = world.scalar("SELECT analyze_count FROM pg_stat_user_tables "
                          "WHERE schemaname = 'crmsync' AND relname = 'couplings'")
    world.counts("CURRENCY", "CUSTOMER")
    after = world.scalar("SELECT analyze_count FROM pg_stat_user_tables "
                         "WHERE schemaname = 'crmsync' AND relname = 'couplings'")
    assert after == before


def test_a_table_another_worker_is_analyzing_is_left_to_it(world: World) -> None:
    with world.engine.connect() as holder:
        holder.execute(sa.text("BEGIN"))
        holder.execute(sa.text(
            "LOCK TABLE crmsync.couplings IN SHARE UPDATE EXCLUSIVE MODE"))  # as ANALYZE takes
        started = time.monotonic()
        assert coupling_store.analyze(world.engine) is False
        waited = time.monotonic() - started
        holder.execute(sa.text("ROLLBACK"))
    assert waited < 30  # it gave up at its lock timeout, it did not wait for the holder
    assert coupling_store.analyze(world.engine) is True


def test_keys_sent_as_one_array_literal_arrive_as_they_were(world: World) -> None:
    """Coupling lookups send a chunk's keys as one text[] literal: whatever a key holds,
    PostgreSQL reads it back exactly, and a lookup finds the coupling of each."""
    keys = ['plain', 'q"uote', 'back\\slash', '', ' spaced ', '{braces}', 'com,ma', 'NULL',
            'ünïcode', 'new\nline', '\\"', "it's"]
    with world.engine.connect() as conn:
        got = conn.scalar(sa.text("SELECT CAST(:a AS text[])"), {"a": text_array(keys)})
        assert got == keys
        assert conn.scalar(sa.text("SELECT CAST(:a AS text[])"), {"a": text_array([])}) == []
    world.sql("INSERT INTO crmsync.couplings (mapping_name, local_id, remote_id, state) "
              "SELECT 'CUSTOMER', k, 'r-' || k, 'coupled' FROM unnest(CAST(:k AS text[])) k",
              k=keys)
    with world.engine.connect() as conn:
        found = coupling_store.by_local_ids(conn, "CUSTOMER", keys)
        assert {k: c.remote_id for k, c in found.items()} == {k: f"r-{k}" for k in keys}
        assert set(coupling_store.by_remote_ids(conn, "CUSTOMER",
                                                [f"r-{k}" for k in keys])) == {
            f"r-{k}" for k in keys}
