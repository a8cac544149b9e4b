"""Acceptance tests start the installed ``crmsync`` command in subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def crmsync_executable() -> str:
    beside = Path(sys.executable).with_name("crmsync")
    found = str(beside) if beside.exists() else shutil.which("crmsync")
    if not found:
        pytest.fail("the crmsync command is not installed (pip install -e .)")
    return found


@pytest.fixture
def cli_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "CRMSYNC_DATABASE_URL": database_url,
        "CRMSYNC_PLUGINS": "tests.support.handlers",
        "CRMSYNC_LOG_FORMAT": "json",
        "CRMSYNC_METRICS_ADDRESS": "127.0.0.1:0",  # several workers on one machine
        "PYTHONPATH": str(ROOT),
    })
    return env


@pytest.fixture
def spawn(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = open(tmp_path / f"proc{len(procs)}.log", "w+")  # noqa: SIM115
        proc = subprocess.Popen([crmsync_executable(), *args], env=cli_env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.log.close()  # type: ignore[attr-defined]


def output_of(proc: subprocess.Popen) -> str:
    proc.log.flush()  # type: ignore[attr-defined]
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read()  # type: ignore[attr-defined]
