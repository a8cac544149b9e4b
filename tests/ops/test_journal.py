"""Under systemd, with stderr connected to the journal, every line carries its syslog
priority (``<3>`` error, ``<4>`` warning, ``<6>`` info), so ``journalctl -p err`` shows the
errors; the text has no time stamp of its own, and JSON lines stay available."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import ROOT, crmsync_executable
from tests.cli.helpers import closed_port

LOGGING = """
import logging
from worker import logs
logs.configure("DEBUG", {json})
log = logging.getLogger("worker.test")
log.debug("looked", extra={{"mapping": "CUSTOMER"}})
log.info("run finished", extra={{"mapping": "CUSTOMER"}})
log.warning("database unavailable; retrying")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("run failed", extra={{"mapping": "CUSTOMER"}})
"""


def run_logging(tmp_path: Path, *, journal: bool, json: str = "None") -> list[str]:
    """The stderr lines of a process that logs one line of each level, with stderr a file
    that JOURNAL_STREAM names (as systemd does) or not."""
    path = tmp_path / "stderr"
    with path.open("w") as stderr:
        stat = os.fstat(stderr.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["PYTHONPATH"] = str(ROOT)
        if journal:
            env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        subprocess.run([sys.executable, "-c", LOGGING.format(json=json)], env=env,
                       stderr=stderr, check=True, timeout=60)
    return path.read_text().splitlines()


def test_each_line_carries_its_priority_in_the_journal(tmp_path: Path) -> None:
    lines = run_logging(tmp_path, journal=True)
    assert lines[0] == "<7>DEBUG   looked  [mapping=CUSTOMER]"
    assert lines[1] == "<6>INFO    run finished  [mapping=CUSTOMER]"
    assert lines[2] == "<4>WARNING database unavailable; retrying"
    assert lines[3] == "<3>ERROR   run failed  [mapping=CUSTOMER]"
    # The traceback's lines are entries of their own: they are errors too.
    assert len(lines) > 5 and all(line.startswith("<3>") for line in lines[3:])
    assert lines[-1] == "<3>ZeroDivisionError: division by zero"
    errors = [line for line in lines if line[:3] in ("<0>", "<1>", "<2>", "<3>")]
    assert "run finished" not in " ".join(errors)


def test_json_lines_stay_available_in_the_journal(tmp_path: Path) -> None:
    import json

    lines = run_logging(tmp_path, journal=True, json="True")
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    docs = [json.loads(line[3:]) for line in lines]
    assert [d["level"] for d in docs] == ["debug", "info", "warning", "error"]
    assert docs[3]["mapping"] == "CUSTOMER" and "ZeroDivisionError" in docs[3]["exc"]


def test_no_prefix_outside_the_journal(tmp_path: Path) -> None:
    import json

    lines = run_logging(tmp_path, journal=False)  # stderr a file: JSON lines, no prefix
    assert [json.loads(line)["level"] for line in lines] == ["debug", "info", "warning",
                                                             "error"]


def test_the_one_error_line_of_a_command_is_an_error_in_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stderr:
        stat = os.fstat(stderr.fileno())
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
        env.update({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
                    "CRMSYNC_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/x",
                    "CRMSYNC_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
        subprocess.run([crmsync_executable(), "status"], env=env, stderr=stderr, timeout=60,
                       stdout=subprocess.DEVNULL)
    [line] = [line for line in path.read_text().splitlines() if "crmsync: error:" in line]
    assert line.startswith("<3>crmsync: error: database ")
