"""The README's first command: ``crmsync demo`` on a machine with nothing configured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.acceptance.conftest import crmsync_executable


def test_demo_runs_all_seven_mappings_and_exits_0(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMSYNC_")}
    env["CRMSYNC_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [crmsync_executable(), "demo", "--duration", "20", "--crm-port", "0",
         "--metrics-address", "127.0.0.1:0", "--customers", "20"],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all seven mappings synchronized" in done.stdout
    assert "CUSTOMER → CRM: inserted 20" in done.stdout
