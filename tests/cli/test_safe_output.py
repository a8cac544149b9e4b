"""Text from data (mapping names, descriptions, messages) with terminal control characters
is printed escaped by every table of the CLI: it cannot clear the screen, recolour, retitle
the terminal or forge an output line."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.cli.helpers import closed_port, crmsync
from worker.commands.output import clean, format_table

EVIL = "EVIL\x1b[2J\x07\rFAKE"
HOSTILE = "boom\x1b[31m red\x07\r\nforged line\x9b\u202e"
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")  # anything but the newline


def test_clean_escapes_every_control_character() -> None:
    assert clean(HOSTILE) == "boom\\x1b[31m red\\x07\\r\\nforged line\\x9b\\u202e"
    assert clean("Zürich 東京 ok") == "Zürich 東京 ok"
    lines = format_table([("name", "n"), (EVIL, 1), ("東京", None)])
    assert not any(RAW.search(line) for line in lines)
    assert lines[2] == "EVIL\\x1b[2J\\x07\\rFAKE  1"
    assert lines[3].rstrip() == "東京"  # wide characters count two columns


def test_every_table_escapes_data(configured: dict[str, str], engine: Engine,
                                  tmp_path: Path) -> None:
    with engine.begin() as conn:
        columns = [c for c in conn.scalars(sa.text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'crmsync'"
            " AND table_name = 'integration_table_mappings' AND column_name <> 'name'"
            " ORDER BY ordinal_position")).all()]
        listed = ", ".join(columns)
        conn.execute(sa.text(
            f"INSERT INTO crmsync.integration_table_mappings (name, {listed}) "
            f"SELECT :evil, {listed} FROM crmsync.integration_table_mappings "
            "WHERE name = 'CURRENCY'"), {"evil": EVIL})
        conn.execute(sa.text(
            "UPDATE crmsync.job_queue_entries SET last_error = :m, description = :m"),
            {"m": HOSTILE})
        job = conn.scalar(sa.text(
            "INSERT INTO crmsync.sync_jobs (mapping_name, direction, started_at, finished_at,"
            " message, status) VALUES (:evil, 'to_integration', now(), now(), :m, 'failed')"
            " RETURNING id"), {"evil": EVIL, "m": HOSTILE})
        conn.execute(sa.text(
            "INSERT INTO crmsync.sync_job_errors (job_id, local_id, remote_id, message)"
            " VALUES (:job, :m, :m, :m)"), {"job": job, "m": HOSTILE})
    env = {**configured, "CRMSYNC_CRM_URL": f"http://127.0.0.1:{closed_port()}/api"}
    for args in (["status"], ["entries", "list"], ["mappings", "list"], ["jobs"],
                 ["errors"], ["sync", EVIL]):
        done = crmsync(args, env, tmp_path)
        assert "Traceback" not in done.stderr, done.stderr
        assert not RAW.search(done.stdout), (args, done.stdout)
        assert not RAW.search(done.stderr), (args, done.stderr)
        assert "\\x1b" in done.stdout + done.stderr, (args, done.stdout + done.stderr)
