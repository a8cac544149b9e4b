"""``.ci/run`` runs exactly the README's test command, after installing the external
programs the tests need (so none of them skips in CI), and then the suite once more where no
PostgreSQL server can be reached."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ci_script() -> list[str]:
    return [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readme_test_command_after_installing_prometheus() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    script = ci_script()
    assert test_command in script
    install = "\n".join(script[:script.index(test_command)])
    assert "command -v promtool" in install and "command -v prometheus" in install
    assert "apt-get install" in install and re.search(r"\bprometheus\b", install)


def test_ci_runs_the_suite_again_without_a_reachable_server() -> None:
    script = ci_script()
    after = "\n".join(script[script.index(next(s for s in script if "pytest" in s)) + 1:])
    # A network namespace of its own: the host's server on 127.0.0.1:5432 is out of reach.
    assert re.search(r"unshare\b.*--net", after)
    assert "ip link set lo up" in after and "-u CRMSYNC_TEST_DATABASE_URL" in after
    assert ".venv/bin/pytest" in after
