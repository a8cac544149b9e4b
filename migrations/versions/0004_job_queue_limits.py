"""Job queue entries: finite timestamps and bounded intervals; schedule edits recompute the next run.

Every value the table accepts can be loaded by the driver and used in the scheduling rules
without overflow: instants lie in 1970..2999, intervals in 1 second..366 days (rerun_delay
0..1 hour), times of day before 24:00, attempts 0..max_attempts <= 100, parameters nested at
most 10 levels. Rows that an older version accepted and these rules refuse are repaired
first (clamped, or put on hold with a message in last_error), so the upgrade never fails on
them.

A change of a schedule column (interval, weekdays, window, time zone, earliest start,
expiry, recurring) or a restart flags the row (``schedule_changed``); a worker woken by the
statement's NOTIFY, or ``crmsync entries edit/restart`` itself, recomputes ``next_run_at``
with the Python rules of worker/queue/schedule.py. ``waiting_reason`` says why a waiting
entry waits.

Revision ID: 0004_job_queue_limits
Revises: 0003_sync_recovery
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004_job_queue_limits"
down_revision = "0003_sync_recovery"
branch_labels = None
depends_on = None

INSTANTS = ("earliest_start_at", "expires_at", "next_run_at", "lease_expires_at",
            "running_since", "scheduled_for", "created_at", "updated_at")
INTERVALS = ("run_interval", "inactivity_timeout", "job_timeout")
LOW, HIGH = "1970-01-01 00:00:00+00", "3000-01-01 00:00:00+00"

REPAIR = rf"""
CREATE FUNCTION crmsync.is_schedulable_instant(ts timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT ts >= timestamptz '{LOW}' AND ts < timestamptz '{HIGH}'
$$;

CREATE FUNCTION crmsync.is_schedulable_interval(i interval) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT i >= interval '1 second' AND i <= interval '366 days'
$$;

-- The repairs of rows an older version accepted. Each appends to last_error what it did.
CREATE FUNCTION pg_temp.note(old text, what text) RETURNS text LANGUAGE sql AS $$
    SELECT concat_ws(' | ', old, 'upgrade 0004: ' || what)
$$;

UPDATE crmsync.job_queue_entries
   SET status = CASE WHEN status = 'in_process' THEN status ELSE 'on_hold' END,
       last_error = pg_temp.note(last_error, 'put on hold: earliest_start_at ' || earliest_start_at
                    || ' is outside 1970..2999 and was cleared'),
       earliest_start_at = NULL
 WHERE NOT crmsync.is_schedulable_instant(earliest_start_at);
UPDATE crmsync.job_queue_entries
   SET status = CASE WHEN status = 'in_process' THEN status ELSE 'on_hold' END,
       last_error = pg_temp.note(last_error, 'put on hold: expires_at ' || expires_at
                    || ' is outside 1970..2999 and was cleared'),
       expires_at = NULL
 WHERE NOT crmsync.is_schedulable_instant(expires_at);
UPDATE crmsync.job_queue_entries
   SET status = CASE WHEN status = 'in_process' THEN status ELSE 'on_hold' END,
       last_error = pg_temp.note(last_error, 'put on hold: next_run_at ' || next_run_at
                    || ' is outside 1970..2999 and was set to now'),
       next_run_at = now()
 WHERE NOT crmsync.is_schedulable_instant(next_run_at);
-- Worker-maintained instants: an impossible lease is an expired one (the reaper rescues it).
UPDATE crmsync.job_queue_entries
   SET lease_expires_at = CASE WHEN crmsync.is_schedulable_instant(lease_expires_at)
                               THEN lease_expires_at ELSE now() END,
       running_since = CASE WHEN crmsync.is_schedulable_instant(running_since)
                            THEN running_since ELSE now() END,
       scheduled_for = CASE WHEN crmsync.is_schedulable_instant(scheduled_for)
                            THEN scheduled_for ELSE now() END,
       created_at = CASE WHEN crmsync.is_schedulable_instant(created_at)
                         THEN created_at ELSE now() END
 WHERE NOT (crmsync.is_schedulable_instant(lease_expires_at)
            AND crmsync.is_schedulable_instant(running_since)
            AND crmsync.is_schedulable_instant(scheduled_for)
            AND crmsync.is_schedulable_instant(created_at));

UPDATE crmsync.job_queue_entries
   SET last_error = pg_temp.note(last_error, 'run_interval ' || run_interval
                    || ' clamped to 1 second..366 days'),
       run_interval = LEAST(GREATEST(run_interval, interval '1 second'), interval '366 days')
 WHERE NOT crmsync.is_schedulable_interval(run_interval);
UPDATE crmsync.job_queue_entries
   SET last_error = pg_temp.note(last_error, 'inactivity_timeout ' || inactivity_timeout
                    || ' clamped to 1 second..366 days'),
       inactivity_timeout = LEAST(GREATEST(inactivity_timeout, interval '1 second'),
                                  interval '366 days')
 WHERE NOT crmsync.is_schedulable_interval(inactivity_timeout);
UPDATE crmsync.job_queue_entries
   SET last_error = pg_temp.note(last_error, 'job_timeout ' || job_timeout
                    || ' clamped to 1 second..366 days'),
       job_timeout = LEAST(GREATEST(job_timeout, interval '1 second'), interval '366 days')
 WHERE NOT crmsync.is_schedulable_interval(job_timeout);
UPDATE crmsync.job_queue_entries
   SET last_error = pg_temp.note(last_error, 'max_attempts ' || max_attempts
                    || ' clamped to 1..100'),
       max_attempts = LEAST(GREATEST(max_attempts, 1), 100)
 WHERE max_attempts NOT BETWEEN 1 AND 100;
UPDATE crmsync.job_queue_entries SET attempts = LEAST(GREATEST(attempts, 0), max_attempts)
 WHERE attempts NOT BETWEEN 0 AND max_attempts;
-- 24:00 is a valid PostgreSQL time that no client library can represent: it means midnight,
-- which is what no bound means.
UPDATE crmsync.job_queue_entries
   SET starting_time = CASE WHEN starting_time >= time '24:00' THEN NULL ELSE starting_time END,
       ending_time = CASE WHEN ending_time >= time '24:00' THEN NULL ELSE ending_time END
 WHERE starting_time >= time '24:00' OR ending_time >= time '24:00';
UPDATE crmsync.job_queue_entries
   SET status = CASE WHEN status = 'in_process' THEN status ELSE 'on_hold' END,
       last_error = pg_temp.note(last_error, 'put on hold: parameters nested deeper than 10 '
                    || 'levels were removed: ' || left(parameters::text, 200)),
       parameters = '{{}}'
 WHERE jsonb_path_exists(parameters, 'strict $.**{{11 to last}}');
"""


def _constraints() -> str:
    lines = ["ALTER TABLE crmsync.job_queue_entries"]
    parts = [f"    ADD CONSTRAINT job_queue_entries_{column}_must_be_in_1970_to_2999 "
             f"CHECK (crmsync.is_schedulable_instant({column}))" for column in INSTANTS]
    parts += [f"    ADD CONSTRAINT job_queue_entries_{column}_must_be_1s_to_366_days "
              f"CHECK (crmsync.is_schedulable_interval({column}))" for column in INTERVALS]
    parts += [
        "    DROP CONSTRAINT job_queue_entries_run_interval_must_be_positive",
        "    DROP CONSTRAINT job_queue_entries_inactivity_timeout_must_be_positive",
        "    DROP CONSTRAINT job_queue_entries_job_timeout_must_be_positive",
        "    DROP CONSTRAINT job_queue_entries_max_attempts_must_be_positive",
        "    DROP CONSTRAINT job_queue_entries_attempts_must_not_be_negative",
        "    ADD CONSTRAINT job_queue_entries_max_attempts_must_be_1_to_100 "
        "CHECK (max_attempts BETWEEN 1 AND 100)",
        "    ADD CONSTRAINT job_queue_entries_attempts_must_be_0_to_max_attempts "
        "CHECK (attempts BETWEEN 0 AND max_attempts)",
        "    ADD CONSTRAINT job_queue_entries_starting_time_must_be_before_24_00 "
        "CHECK (starting_time < time '24:00')",
        "    ADD CONSTRAINT job_queue_entries_ending_time_must_be_before_24_00 "
        "CHECK (ending_time < time '24:00')",
        "    ADD CONSTRAINT job_queue_entries_parameters_must_nest_at_most_10_levels "
        "CHECK (NOT jsonb_path_exists(parameters, 'strict $.**{11 to last}'))",
        "    ADD COLUMN schedule_changed boolean NOT NULL DEFAULT false",
        "    ADD COLUMN waiting_reason text",
    ]
    return lines[0] + "\n" + ",\n".join(parts) + ";\n"


TRIGGER = r"""
CREATE OR REPLACE FUNCTION crmsync.job_queue_entries_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.time_zone IS DISTINCT FROM OLD.time_zone THEN
        IF NOT crmsync.is_time_zone_name(NEW.time_zone) THEN
            RAISE EXCEPTION 'unknown time zone "%": use an IANA name such as Europe/Berlin',
                NEW.time_zone
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'job_queue_entries_time_zone_must_be_iana_name',
                      TABLE = 'job_queue_entries', SCHEMA = 'crmsync', COLUMN = 'time_zone';
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = 'ready' AND OLD.status IN ('error', 'on_hold', 'finished') THEN
        -- A user restarting an entry gets a fresh set of attempts (NAV: "Restart") and a next
        -- run by the rules (flagged below) unless the same statement sets one.
        NEW.attempts := 0;
        NEW.next_run_at := COALESCE(NEW.next_run_at, now());
        IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at
           OR OLD.next_run_at IS NULL THEN
            NEW.schedule_changed := true;
        END IF;
    END IF;
    -- A schedule edit flags the row; the worker (woken by the statement's NOTIFY) recomputes
    -- next_run_at from the last run with the Python rules. An explicit next_run_at in the
    -- same statement wins.
    IF TG_OP = 'UPDATE'
       AND (NEW.run_interval, NEW.run_on_weekdays, NEW.starting_time, NEW.ending_time,
            NEW.time_zone, NEW.earliest_start_at, NEW.expires_at, NEW.recurring)
           IS DISTINCT FROM
           (OLD.run_interval, OLD.run_on_weekdays, OLD.starting_time, OLD.ending_time,
            OLD.time_zone, OLD.earliest_start_at, OLD.expires_at, OLD.recurring)
       AND NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at THEN
        NEW.schedule_changed := true;
    END IF;
    IF NEW.status IN ('ready', 'waiting', 'on_hold_inactivity') THEN
        NEW.next_run_at := GREATEST(COALESCE(NEW.next_run_at, now()), NEW.earliest_start_at);
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
"""

UPGRADE = REPAIR + _constraints() + TRIGGER

DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION crmsync.job_queue_entries_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.time_zone IS DISTINCT FROM OLD.time_zone THEN
        IF NOT crmsync.is_time_zone_name(NEW.time_zone) THEN
            RAISE EXCEPTION 'unknown time zone "%": use an IANA name such as Europe/Berlin',
                NEW.time_zone
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'job_queue_entries_time_zone_must_be_iana_name',
                      TABLE = 'job_queue_entries', SCHEMA = 'crmsync', COLUMN = 'time_zone';
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = 'ready' AND OLD.status IN ('error', 'on_hold', 'finished') THEN
        NEW.attempts := 0;
        NEW.next_run_at := COALESCE(NEW.next_run_at, now());
    END IF;
    IF NEW.status IN ('ready', 'waiting', 'on_hold_inactivity') THEN
        NEW.next_run_at := GREATEST(COALESCE(NEW.next_run_at, now()), NEW.earliest_start_at);
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
"""


def _downgrade_constraints() -> str:
    drops = [f"    DROP CONSTRAINT job_queue_entries_{c}_must_be_in_1970_to_2999" for c in INSTANTS]
    drops += [f"    DROP CONSTRAINT job_queue_entries_{c}_must_be_1s_to_366_days"
              for c in INTERVALS]
    drops += [
        "    DROP CONSTRAINT job_queue_entries_max_attempts_must_be_1_to_100",
        "    DROP CONSTRAINT job_queue_entries_attempts_must_be_0_to_max_attempts",
        "    DROP CONSTRAINT job_queue_entries_starting_time_must_be_before_24_00",
        "    DROP CONSTRAINT job_queue_entries_ending_time_must_be_before_24_00",
        "    DROP CONSTRAINT job_queue_entries_parameters_must_nest_at_most_10_levels",
        "    DROP COLUMN schedule_changed",
        "    DROP COLUMN waiting_reason",
        "    ADD CONSTRAINT job_queue_entries_run_interval_must_be_positive "
        "CHECK (run_interval > interval '0')",
        "    ADD CONSTRAINT job_queue_entries_inactivity_timeout_must_be_positive "
        "CHECK (inactivity_timeout > interval '0')",
        "    ADD CONSTRAINT job_queue_entries_job_timeout_must_be_positive "
        "CHECK (job_timeout > interval '0')",
        "    ADD CONSTRAINT job_queue_entries_max_attempts_must_be_positive "
        "CHECK (max_attempts > 0)",
        "    ADD CONSTRAINT job_queue_entries_attempts_must_not_be_negative "
        "CHECK (attempts >= 0)",
    ]
    return ("ALTER TABLE crmsync.job_queue_entries\n" + ",\n".join(drops) + ";\n"
            "DROP FUNCTION crmsync.is_schedulable_interval(interval);\n"
            "DROP FUNCTION crmsync.is_schedulable_instant(timestamptz);\n")


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE + _downgrade_constraints())
