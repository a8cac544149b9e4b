"""Python's cyclic garbage collector and the C allocator, set for a process that moves many
records.

A sync chunk allocates tens of thousands of small containers (rows, field values, request
bodies, decoded replies) that reference counting frees as soon as the chunk is recorded.
With the interpreter's defaults (a young collection every 700 net allocations, a full one
every 100 of those) the collector ran about 700 times in a 15,000-record initial sync and
walked the whole heap five times — a third of the process's CPU time (57 of 173 µs a
record, ``bench/ratios.py``'s row 1 on the 2-core machine; the collector switched off: 117).

``tune`` does what long-running Python services do for this:

- ``gc.freeze()`` once start-up is done: the modules, the reflected tables, the compiled
  statements and the settings live as long as the process, and are never walked again;
- a young collection every ``THRESHOLDS[0]`` net allocations instead of 700: a chunk's
  garbage is freed by reference counting long before, so the collector finds little, and
  what is left in reference cycles (exceptions with their tracebacks, mostly) waits a little
  longer. At worst that is some tens of thousands of small objects, a few MB;
- the older generations collected after 20 and 100 younger ones, so a full collection
  stays rare (the interpreter also waits until a quarter of the heap is new).

And glibc's allocator keeps large blocks apart (``mmap_threshold``). A block of 128 KiB or
more — a ``$batch`` request or reply, a page of records — gets pages of its own, given
back when it is freed. glibc's default raises that threshold to the size of the largest
block freed so far (up to 32 MiB), so after the first page of 5,000 records every envelope
of a few hundred KiB came from the heap, between small objects that outlive it, and the
heap only grew: an initial sync's peak RSS rose with the table (101 MB at 10,000
customers, 114 MB at 50,000, 121 MB at 200,000); with the threshold fixed, 97 MB at both
10,000 and 50,000 (``bench/ratios.py`` row 5). A threshold an operator set
(``MALLOC_MMAP_THRESHOLD_``) is left as it is; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import gc
import os

THRESHOLDS = (50_000, 20, 100)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, no longer moved
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def tune() -> None:
    """Freeze what exists now and set the thresholds: call once, when start-up is done.
    (No collection first: a full one costs some 40 ms at start-up, for the few dozen
    objects imports leave unreachable.)"""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    fix_mmap_threshold()


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD (which also stops it moving); whether
    it was set. Not on another C library, nor when the environment sets it already."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: its C library's among them
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc's own: present only there
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
