"""Python's cyclic garbage collector, set for a process that moves many records.

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
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def tune() -> None:
    """Freeze what exists now and set the thresholds: call once, when start-up is done.
    (No collection first: a full one costs some 40 ms at start-up, for the few dozen
    objects imports leave unreachable.)"""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
