"""``crmsync sync`` shows how far it is: on a terminal the running pass redrawn in place
(done / total, rate, ETA), into a pipe one plain summary line per pass and no control
codes."""

from __future__ import annotations

import os
import pty
import re
import subprocess

from tests.acceptance.conftest import crmsync_executable
from tests.admin.conftest import Admin

PASS_LINE = re.compile(r"^(\S+) (to|from) CRM: [\d,]+ records( of [\d,+]+)? in \d+:\d\d")
PASSES = 11  # the seven default mappings: three one-way, four both ways


def test_into_a_pipe_one_summary_line_per_pass(defaults: Admin) -> None:
    done = defaults.run("sync", "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if PASS_LINE.match(line)]
    passes = [PASS_LINE.match(line).group(1, 2) for line in lines]  # type: ignore[union-attr]
    assert len(passes) == PASSES and len(set(passes)) == PASSES, done.stderr
    customer = next(line for line in lines if line.startswith("CUSTOMER to CRM: "))
    assert customer.startswith("CUSTOMER to CRM: 8 records in ") and "inserted 8" in customer
    assert "mapping" in done.stdout  # the summary table still goes to stdout


def test_on_a_terminal_the_pass_is_redrawn_in_place_with_its_total(defaults: Admin) -> None:
    main, side = pty.openpty()
    try:
        process = subprocess.Popen([crmsync_executable(), "sync", "--all"],
                                   env=defaults.env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=side)
        os.close(side)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the command closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(120) == 0, shown
        assert process.stdout is not None
        process.stdout.close()
    finally:
        os.close(main)
    text = shown.decode()
    frames = text.split("\r\x1b[K")
    # The first frame of a pass: its total known before the first chunk.
    assert "CUSTOMER to CRM: 0 / 8" in frames
    assert any(f.startswith("CUSTOMER to CRM: 8 records in ") for f in frames), text
