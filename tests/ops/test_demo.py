"""The README's first command: ``crmsync demo`` on a machine with nothing configured."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.acceptance.conftest import crmsync_executable


def test_demo_runs_all_seven_mappings_and_exits_0(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env.pop("XDG_RUNTIME_DIR", None)  # as under a service manager or in a container
    env["CRMSYNC_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [crmsync_executable(), "demo", "--duration", "30", "--crm-port", "0",
         "--metrics-address", "127.0.0.1:0", "--customers", "20"],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all seven mappings synchronized" in done.stdout
    assert "CUSTOMER → CRM: inserted 20" in done.stdout
    # Output to a pipe still names where to look, and nothing is warned about at start.
    assert re.search(r"CRM \(emulator\):\s+http://127\.0\.0\.1:\d+/api/data/v9\.2/accounts",
                     done.stdout), done.stdout[:2000]
    assert re.search(r"metrics:\s+http://127\.0\.0\.1:\d+/metrics", done.stdout)
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    # With NAV's 12-hour holds, CRM-side edits still reach the ERP.
    assert "on hold for 12 hours" in done.stdout
    assert "← CRM: inserted 0, modified 1" in done.stdout or \
        "CONTACTS ← CRM: inserted 1" in done.stdout, done.stdout[-3000:]
