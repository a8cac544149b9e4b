"""The process settings every crmsync process takes at start-up (``worker.collector``):
large blocks freed are given back to the system, so a long initial sync's memory stays
flat instead of growing with the table."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A large block freed (glibc's default then takes blocks up to its size from the heap),
# then 100 request-sized blocks of 300 KB, each followed by a small block that outlives it
# (as a chunk's envelopes sit between longer-lived rows); then the large ones freed. Prints
# the MB given back to the system.
PROBE = """
import sys
from worker import collector
if sys.argv[1] == "tuned":
    collector.tune()

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

block = b"x" * 8_000_000
del block
large, small = [], []
for _ in range(100):
    large.append(b"x" * 300_000)
    small.append(b"y" * 2_000)
before = rss_mb()
del large
print(round(before - rss_mb(), 1))
"""


def given_back(how: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, how], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the mmap threshold is glibc's")
def test_large_blocks_freed_after_a_larger_one_are_given_back_to_the_system() -> None:
    # Of the 30 MB freed; with the interpreter's default about half stays in the heap.
    tuned = given_back("tuned")
    assert tuned >= 25, f"{tuned} MB given back ({given_back('default')} by default)"
