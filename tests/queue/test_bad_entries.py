"""Bad job queue entries, as a user would write them with psql: each is caught either by a
named database constraint (revision 0004) or, when the database accepts it, recorded on that
entry alone while a healthy entry beside it keeps running."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.queue.test_schema import insert_entry
from tests.queue.test_worker import scalar, wait_for
from tests.support.handlers import scripted
from worker.app import App
from worker.errors import DatabaseError
from worker.queue.manager import QueueManager
from worker.queue.models import JobKind
from worker.runtime.worker import Worker, WorkerConfig

LEASE = timedelta(seconds=30)
DEEP = '{"a": ' + "[" * 11 + "1" + "]" * 11 + "}"

REFUSED = [
    ({"expires_at": "infinity"}, "job_queue_entries_expires_at_must_be_in_1970_to_2999"),
    ({"earliest_start_at": "infinity"},
     "job_queue_entries_earliest_start_at_must_be_in_1970_to_2999"),
    ({"earliest_start_at": "-infinity"},
     "job_queue_entries_earliest_start_at_must_be_in_1970_to_2999"),
    ({"next_run_at": "infinity"}, "job_queue_entries_next_run_at_must_be_in_1970_to_2999"),
    ({"next_run_at": "10000-01-01"}, "job_queue_entries_next_run_at_must_be_in_1970_to_2999"),
    ({"expires_at": "0044-03-15 BC"}, "job_queue_entries_expires_at_must_be_in_1970_to_2999"),
    ({"created_at": "infinity"}, "job_queue_entries_created_at_must_be_in_1970_to_2999"),
    ({"run_interval": "9000 years"},
     "job_queue_entries_run_interval_must_be_1s_to_366_days"),
    ({"run_interval": "1 millisecond"},
     "job_queue_entries_run_interval_must_be_1s_to_366_days"),
    ({"run_interval": "-5 minutes"},
     "job_queue_entries_run_interval_must_be_1s_to_366_days"),
    ({"inactivity_timeout": "9000 years"},
     "job_queue_entries_inactivity_timeout_must_be_1s_to_366_days"),
    ({"inactivity_timeout": "1 ms"},
     "job_queue_entries_inactivity_timeout_must_be_1s_to_366_days"),
    ({"job_timeout": "100000000 years"},
     "job_queue_entries_job_timeout_must_be_1s_to_366_days"),
    ({"job_timeout": "0 seconds"}, "job_queue_entries_job_timeout_must_be_1s_to_366_days"),
    ({"rerun_delay": "-1 second"}, "job_queue_entries_rerun_delay_must_be_0_to_1_hour"),
    ({"rerun_delay": "2 hours"}, "job_queue_entries_rerun_delay_must_be_0_to_1_hour"),
    ({"max_attempts": 0}, "job_queue_entries_max_attempts_must_be_1_to_100"),
    ({"max_attempts": 2147483647}, "job_queue_entries_max_attempts_must_be_1_to_100"),
    ({"attempts": -1}, "job_queue_entries_attempts_must_be_0_to_max_attempts"),
    ({"attempts": 11}, "job_queue_entries_attempts_must_be_0_to_max_attempts"),
    ({"starting_time": "24:00"}, "job_queue_entries_starting_time_must_be_before_24_00"),
    ({"ending_time": "24:00"}, "job_queue_entries_ending_time_must_be_before_24_00"),
    ({"parameters": DEEP}, "job_queue_entries_parameters_must_nest_at_most_10_levels"),
    ({"parameters": "[1]"}, "job_queue_entries_parameters_must_be_an_object"),
    ({"time_zone": "Mars/Olympus_Mons"}, "job_queue_entries_time_zone_must_be_iana_name"),
    ({"run_on_weekdays": [0]}, "job_queue_entries_run_on_weekdays_must_be_iso_1_to_7"),
    ({"run_on_weekdays": [1, None]}, "job_queue_entries_run_on_weekdays_must_be_iso_1_to_7"),
    ({"status": "in_process", "locked_by": "w", "lease_expires_at": "infinity"},
     "job_queue_entries_lease_expires_at_must_be_in_1970_to_2999"),
]


@pytest.mark.parametrize(("values", "constraint"), REFUSED)
def test_the_database_refuses_it_by_name(engine: Engine, values: dict, constraint: str) -> None:
    healthy = insert_entry(engine)
    with pytest.raises(DatabaseError, match=constraint):
        insert_entry(engine, **values)
    # The same value by UPDATE of an existing row is refused the same way.
    with pytest.raises(DatabaseError, match=constraint):
        update_entry(engine, healthy, **values)
    claim = QueueManager(engine).claim_next("w1", LEASE)
    assert claim is not None and claim.entry.id == healthy


def update_entry(engine: Engine, entry_id: int, **values: object) -> None:
    from worker.db.engine import translate_errors

    sets = ", ".join(f"{k} = :{k}" for k in values)
    with translate_errors(), engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE crmsync.job_queue_entries SET {sets} WHERE id = :id"),
                     {**values, "id": entry_id})


# What the database accepts (or accepted before revision 0004: the constraint dropped by hand,
# as on a database restored from an old dump) and the worker must survive. Each: the values,
# SQL to run first, the entry's expected status and a text its message contains.
ACCEPTED = [
    pytest.param({"parameters": '{"days": 1e400}', "max_attempts": 1}, None, "error",
                 "parameters.days: expected a number of days from 0 to 36500", id="days-inf"),
    pytest.param({"parameters": '{"days": "thirty"}', "max_attempts": 1}, None, "error",
                 "parameters.days", id="days-text"),
    pytest.param({"status": "in_process", "locked_by": "ghost",
                  "lease_expires_at": "2999-12-31"}, None, "finished",
                 None, id="in-process-by-hand"),
    pytest.param({"expires_at": "infinity"},
                 "job_queue_entries_expires_at_must_be_in_1970_to_2999", "error",
                 "entry #2 cannot be read: column expires_at", id="old-infinite-expiry"),
    pytest.param({"starting_time": "24:00"},
                 "job_queue_entries_starting_time_must_be_before_24_00", "error",
                 "entry #2 cannot be read: column starting_time", id="old-24-00"),
    pytest.param({"run_interval": "9000 years", "recurring": True},
                 "job_queue_entries_run_interval_must_be_1s_to_366_days", "error",
                 "entry #2 could not be rescheduled: run_interval", id="old-9000-years"),
    pytest.param({"inactivity_timeout": "9000 years", "parameters": '{"changed": false}',
                  "job_kind": "sync_all_modified", "recurring": True},
                 "job_queue_entries_inactivity_timeout_must_be_1s_to_366_days", "error",
                 "entry #2 could not be rescheduled: inactivity_timeout", id="old-inactivity"),
    pytest.param({"max_attempts": 1, "attempts": 5, "parameters": '{"days": -1}'},
                 "job_queue_entries_attempts_must_be_0_to_max_attempts", "error",
                 "parameters.days", id="old-attempts-over-max"),
]


@pytest.fixture
def running_worker(engine: Engine) -> Iterator[Callable[[], Worker]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start() -> Worker:
        # The real cleanup handler reads its parameters itself; sync_all_modified is the
        # scripted test job (it reports "changed" as its parameters say).
        app = App(engine)
        app.handlers[JobKind.SYNC_ALL_MODIFIED] = scripted
        worker = app.worker(WorkerConfig(
            poll_interval=0.5, lease=timedelta(seconds=5), reap_interval=0.5))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.started.wait(10)
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop(immediately=True)
        thread.join(10)


@pytest.mark.parametrize(("values", "drop", "status", "message"), ACCEPTED)
def test_the_worker_records_it_on_that_entry_and_goes_on(
    engine: Engine, running_worker: Callable[[], Worker], values: dict, drop: str | None,
    status: str, message: str | None,
) -> None:
    healthy = insert_entry(engine, run_interval="1 second")
    if drop:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE crmsync.job_queue_entries DROP CONSTRAINT {drop}"))
    bad = insert_entry(engine, **{"recurring": False, "rerun_delay": "0 seconds", **values})
    assert bad == 2
    worker = running_worker()
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                                    "WHERE id = :id", id=bad) == status, timeout=20)
    if message:
        text = scalar(engine, "SELECT last_error FROM crmsync.job_queue_entries WHERE id = :id",
                      id=bad)
        assert message in str(text)
        assert "Failing row contains" not in str(text)
    healthy_runs = lambda: scalar(  # noqa: E731
        engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                "WHERE entry_id = :id AND status = 'success'", id=healthy)
    before = healthy_runs()
    wait_for(lambda: healthy_runs() >= before + 2, timeout=20)  # type: ignore[operator]
    assert worker.running_count() <= 1
    assert scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "
                          "WHERE status = 'in_process' AND entry_id = :id", id=bad) == 0


def test_a_value_broken_during_the_run_is_recorded_on_that_entry(
    engine: Engine, running_worker: Callable[[], Worker],
) -> None:
    """A row changed while it runs (its constraint dropped, as on a restored old dump) so
    that it cannot be read back: the run is still recorded, the entry goes to error naming
    the column, the healthy entry keeps running."""
    healthy = insert_entry(engine, run_interval="1 second")
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE crmsync.job_queue_entries DROP CONSTRAINT "
                             "job_queue_entries_expires_at_must_be_in_1970_to_2999"))
    bad = insert_entry(engine, job_kind="sync_all_modified", parameters='{"sleep": 2}')
    running_worker()
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                                    "WHERE id = :id", id=bad) == "in_process")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE crmsync.job_queue_entries SET expires_at = 'infinity' "
                             "WHERE id = :id"), {"id": bad})
    wait_for(lambda: scalar(engine, "SELECT status FROM crmsync.job_queue_entries "
                                    "WHERE id = :id", id=bad) == "error")
    message = str(scalar(engine, "SELECT last_error FROM crmsync.job_queue_entries "
                                 "WHERE id = :id", id=bad))
    assert message.startswith("entry #2 could not be rescheduled: column expires_at: ")
    assert scalar(engine, "SELECT status FROM crmsync.job_queue_log_entries "
                          "WHERE entry_id = :id", id=bad) == "success"
    before = int(scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "  # type: ignore[arg-type]
                                "WHERE entry_id = :id", id=healthy))
    wait_for(lambda: int(scalar(engine, "SELECT count(*) FROM crmsync.job_queue_log_entries "  # type: ignore[arg-type]
                                        "WHERE entry_id = :id", id=healthy)) >= before + 2)
