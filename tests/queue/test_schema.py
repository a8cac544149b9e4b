"""The database itself refuses bad job queue rows, with constraint names that say why."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.db import migrate
from worker.db.engine import create_engine, translate_errors
from worker.errors import DatabaseError, SchemaOutOfDate


def insert_entry(engine: Engine, **values: object) -> int:
    values.setdefault("job_kind", "cleanup")
    cols = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    with translate_errors(), engine.begin() as conn:
        return conn.scalar(sa.text(
            f"INSERT INTO crmsync.job_queue_entries ({cols}) VALUES ({params}) RETURNING id"),
            values)


def add_mappings(engine: Engine, *names: str) -> None:
    with engine.begin() as conn:
        for name in names:
            conn.execute(sa.text(
                "INSERT INTO crmsync.integration_table_mappings (name) VALUES (:n)"), {"n": name})


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"run_interval": "0 seconds"},
         "job_queue_entries_run_interval_must_be_1s_to_366_days"),
        ({"run_interval": "-5 minutes"},
         "job_queue_entries_run_interval_must_be_1s_to_366_days"),
        ({"status": "sleeping"}, "job_queue_entries_status_must_be_known"),
        ({"time_zone": "Mars/Olympus_Mons"}, "job_queue_entries_time_zone_must_be_iana_name"),
        ({"run_on_weekdays": [1, 8]}, "job_queue_entries_run_on_weekdays_must_be_iso_1_to_7"),
        ({"run_on_weekdays": []}, "job_queue_entries_run_on_weekdays_must_be_iso_1_to_7"),
        ({"job_kind": "sync_mapping", "mapping_name": "NOPE"},
         "job_queue_entries_mapping_must_exist"),
        ({"job_kind": "sync_mapping"},
         "job_queue_entries_mapping_name_set_exactly_for_sync_mapping"),
        ({"job_kind": "reboot"}, "job_queue_entries_job_kind_must_be_known"),
        ({"max_attempts": 0}, "job_queue_entries_max_attempts_must_be_1_to_100"),
        ({"rerun_delay": "2 hours"}, "job_queue_entries_rerun_delay_must_be_0_to_1_hour"),
        ({"starting_time": "08:00", "ending_time": "08:00"},
         "job_queue_entries_time_window_must_not_be_empty"),
        ({"status": "in_process"}, "job_queue_entries_in_process_only_with_a_lease"),
    ],
)
def test_bad_entries_are_refused_by_name(engine: Engine, values: dict, constraint: str) -> None:
    with pytest.raises(DatabaseError, match=constraint):
        insert_entry(engine, **values)
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM crmsync.job_queue_entries")) == 0


def test_unknown_time_zone_message_names_the_value(engine: Engine) -> None:
    with pytest.raises(DatabaseError, match='unknown time zone "Europe/Atlantis"'):
        insert_entry(engine, time_zone="Europe/Atlantis")


def test_valid_entry_gets_nav_defaults(engine: Engine) -> None:
    entry_id = insert_entry(engine, time_zone="Europe/Berlin")
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT *, next_run_at <= now() AS due FROM crmsync.job_queue_entries WHERE id = :id"),
            {"id": entry_id}).mappings().one()
    assert row["status"] == "ready"
    assert row["max_attempts"] == 10
    assert row["rerun_delay"].total_seconds() == 30
    assert row["job_timeout"].total_seconds() == 12 * 3600
    assert list(row["run_on_weekdays"]) == [1, 2, 3, 4, 5, 6, 7]
    assert row["due"] is True


def test_dependency_cycle_is_refused_naming_the_cycle(engine: Engine) -> None:
    add_mappings(engine, "CURRENCY", "CUSTOMER", "CONTACTS")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mapping_dependencies VALUES "
            "('CUSTOMER', 'CURRENCY'), ('CONTACTS', 'CUSTOMER')"))
    with pytest.raises(DatabaseError) as caught, translate_errors(), engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO crmsync.integration_table_mapping_dependencies "
            "VALUES ('CURRENCY', 'CONTACTS')"))
    message = str(caught.value)
    assert "CURRENCY -> CONTACTS -> CUSTOMER -> CURRENCY" in message
    assert "mapping_dependencies_must_not_form_a_cycle" in message


def test_restarting_an_entry_in_error_resets_attempts(engine: Engine) -> None:
    entry_id = insert_entry(engine, status="error", attempts=10, next_run_at=None)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET status = 'ready' WHERE id = :id"),
            {"id": entry_id})
        row = conn.execute(sa.text(
            "SELECT attempts, next_run_at FROM crmsync.job_queue_entries WHERE id = :id"),
            {"id": entry_id}).one()
    assert row.attempts == 0
    assert row.next_run_at is not None


def test_worker_refuses_an_out_of_date_schema(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url, pool_size=1)
    with pytest.raises(SchemaOutOfDate, match="run `crmsync db upgrade`"):
        migrate.require_current(engine)
    migrate.upgrade(engine)
    migrate.require_current(engine)
    with engine.connect() as conn:
        tables = set(conn.scalars(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'crmsync'")))
    engine.dispose()
    assert {"job_queue_entries", "job_queue_log_entries", "workers",
            "integration_table_mappings", "integration_table_mapping_dependencies"} <= tables
