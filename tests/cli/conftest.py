"""A database with the sample ERP data and the seven default mappings, set up through the
installed command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import base_env, crmsync
from worker.errors import EXIT_OK


@pytest.fixture
def configured(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = base_env(tmp_path, database_url)
    for args in (["sample-data", "--customers", "2"], ["setup-defaults"]):
        done = crmsync(args, env, tmp_path)
        assert done.returncode == EXIT_OK, done.stdout + done.stderr
    return env
