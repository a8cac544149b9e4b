"""``.ci/run`` runs exactly the README's test command, after installing the external
checkers the deploy tests need (so none of them skips in CI)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command_after_installing_promtool() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    script = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert script[-1] == test_command
    install = "\n".join(script[:-1])
    assert "command -v promtool" in install and "apt-get install" in install
    assert re.search(r"\bprometheus\b", install)
