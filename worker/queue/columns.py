"""The columns of ``crmsync.job_queue_entries`` that users write, and what each of the
table's rules means, so a refused value is reported as one line naming the column and the
rule instead of PostgreSQL's ``Failing row contains (…)``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exc as sa_exc


@dataclass(frozen=True)
class UserColumn:
    """A column users may set: its PostgreSQL type, whether it may be cleared, an example."""

    name: str
    sql_type: str
    nullable: bool
    example: str


USER_COLUMNS: tuple[UserColumn, ...] = (
    UserColumn("description", "text", False, "'CUSTOMER - nightly'"),
    UserColumn("job_kind", "text", False, "sync_mapping"),
    UserColumn("mapping_name", "text", True, "CUSTOMER"),
    UserColumn("parameters", "jsonb", False, '\'{"full": true}\''),
    UserColumn("recurring", "boolean", False, "true"),
    UserColumn("run_interval", "interval", True, "'15 minutes'"),
    UserColumn("run_on_weekdays", "smallint[]", False, "'{1,2,3,4,5}'"),
    UserColumn("starting_time", "time", True, "'06:00'"),
    UserColumn("ending_time", "time", True, "'20:00'"),
    UserColumn("time_zone", "text", False, "'Europe/Berlin'"),
    UserColumn("earliest_start_at", "timestamptz", True, "'2026-12-01 08:00+01'"),
    UserColumn("expires_at", "timestamptz", True, "'2027-01-01 00:00+01'"),
    UserColumn("next_run_at", "timestamptz", True, "'2026-12-01 08:00+01'"),
    UserColumn("max_attempts", "integer", False, "10"),
    UserColumn("rerun_delay", "interval", False, "'30 seconds'"),
    UserColumn("inactivity_timeout", "interval", True, "'12 hours'"),
    UserColumn("category_code", "text", True, "'CRM-CUST'"),
    UserColumn("priority", "integer", False, "1000"),
    UserColumn("job_timeout", "interval", False, "'12 hours'"),
)

_INSTANT = "must lie between 1970-01-01 and 2999-12-31 (finite)"
_INTERVAL = "must be between 1 second and 366 days"

# constraint name -> (column, rule)
RULES: dict[str, tuple[str, str]] = {
    **{f"job_queue_entries_{c}_must_be_in_1970_to_2999": (c, _INSTANT) for c in (
        "earliest_start_at", "expires_at", "next_run_at", "lease_expires_at", "running_since",
        "scheduled_for", "created_at", "updated_at")},
    **{f"job_queue_entries_{c}_must_be_1s_to_366_days": (c, _INTERVAL)
       for c in ("run_interval", "inactivity_timeout", "job_timeout")},
    "job_queue_entries_rerun_delay_must_be_0_to_1_hour":
        ("rerun_delay", "must be between 0 seconds and 1 hour"),
    "job_queue_entries_max_attempts_must_be_1_to_100": ("max_attempts", "must be 1 to 100"),
    "job_queue_entries_attempts_must_be_0_to_max_attempts":
        ("attempts", "must be between 0 and max_attempts"),
    "job_queue_entries_starting_time_must_be_before_24_00":
        ("starting_time", "must be before 24:00"),
    "job_queue_entries_ending_time_must_be_before_24_00":
        ("ending_time", "must be before 24:00"),
    "job_queue_entries_parameters_must_nest_at_most_10_levels":
        ("parameters", "must nest at most 10 levels"),
    "job_queue_entries_parameters_must_be_an_object":
        ("parameters", "must be a JSON object"),
    "job_queue_entries_status_must_be_known": (
        "status", "must be ready, in_process, error, on_hold, on_hold_inactivity, waiting or "
                  "finished"),
    "job_queue_entries_job_kind_must_be_known":
        ("job_kind", "must be sync_mapping, sync_all_modified, cleanup or audit"),
    "job_queue_entries_mapping_must_exist": ("mapping_name", "must name an existing mapping"),
    "job_queue_entries_mapping_name_set_exactly_for_sync_mapping":
        ("mapping_name", "is required for sync_mapping and only for it"),
    "job_queue_entries_run_on_weekdays_must_be_iso_1_to_7":
        ("run_on_weekdays", "must be a non-empty list of ISO weekdays 1 (Monday) to 7"),
    "job_queue_entries_time_zone_must_be_iana_name":
        ("time_zone", "must be an IANA time zone name such as Europe/Berlin"),
    "job_queue_entries_time_window_must_not_be_empty":
        ("starting_time", "must differ from ending_time"),
    "job_queue_entries_expires_after_earliest_start":
        ("expires_at", "must be after earliest_start_at"),
    "job_queue_entries_recurring_needs_run_interval":
        ("run_interval", "is required when recurring"),
    "job_queue_entries_category_code_must_not_be_blank":
        ("category_code", "must not be blank"),
    "job_queue_entries_in_process_only_with_a_lease":
        ("status", "in_process is set by workers only"),
    "job_queue_entries_one_running_per_category":
        ("category_code", "allows one running entry per category"),
    "job_queue_entries_one_running_per_mapping":
        ("mapping_name", "allows one running entry per mapping"),
}


def explain(exc: sa_exc.DBAPIError) -> str | None:
    """'run_interval: must be between 1 second and 366 days (constraint …)' for a refused
    row of job_queue_entries, or None when the error is not one of its rules."""
    diag = getattr(exc.orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint not in RULES:
        return None
    column, rule = RULES[constraint]
    if constraint == "job_queue_entries_time_zone_must_be_iana_name":
        rule = getattr(diag, "message_primary", None) or rule
    return f"{column}: {rule} (constraint {constraint})"


def by_name(name: str) -> UserColumn | None:
    return next((c for c in USER_COLUMNS if c.name == name), None)
