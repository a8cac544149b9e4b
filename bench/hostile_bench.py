"""Figures of the client against a hostile OData service on loopback (the test suite's own
scripted server, tests/support/hostile.py): how many ``Authorization`` headers reach
another port through a next link, the longest pause a huge ``Retry-After`` imposes on an
unrelated request, the peak memory of reading a 300 KB gzip bomb (300 MiB decompressed),
and how long a server trickling its answer holds a request with ``read_timeout = 2``.

    python bench/hostile_bench.py

The bomb runs in a child process of its own, so its peak RSS is not that of the rest.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.remote.test_hostile_sizes import _trickle, bomb  # noqa: E402
from tests.support.hostile import Handler, Seen, client_of, hostile, never  # noqa: E402
from worker.errors import CrmsyncError  # noqa: E402


def leak() -> int:
    with hostile(never) as thief:
        def respond(handler: Handler, seen: Seen) -> None:
            handler.json(200, {"value": [], "@odata.nextLink": f"{thief.origin}/steal"})

        with hostile(respond) as crm, client_of(crm) as client, \
                contextlib.suppress(CrmsyncError):
            list(client.entity_set("accounts", "accountid").read())
        return len(thief.authorizations())


def frozen_gate() -> float:
    def respond(handler: Handler, seen: Seen) -> None:
        if "accounts" in seen.path:
            handler.json(429, {"error": {"message": "busy"}}, {"Retry-After": "100000"})
        else:
            handler.json(200, {"value": []})

    with hostile(respond) as crm, client_of(crm, max_retry_after=2) as client:
        with contextlib.suppress(CrmsyncError):
            list(client.entity_set("accounts", "accountid").read())
        started = time.monotonic()
        list(client.entity_set("contacts", "contactid").read())
        return time.monotonic() - started


def bomb_child() -> None:
    def respond(handler: Handler, seen: Seen) -> None:
        handler.raw(200, bomb(), {"Content-Type": "application/json",
                                  "Content-Encoding": "gzip"})

    payload = bomb()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with hostile(respond) as crm, client_of(crm) as client:
        try:
            list(client.entity_set("accounts", "accountid").read())
            outcome = "read"
        except CrmsyncError as exc:
            outcome = type(exc).__name__
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{len(payload)} {base} {peak} {outcome}")


def trickle() -> float:
    with hostile(_trickle("body")) as crm, \
            client_of(crm, connect_timeout=1, read_timeout=2, max_retries=0) as client:
        started = time.monotonic()
        with contextlib.suppress(CrmsyncError):
            list(client.entity_set("accounts", "accountid").read())
        return time.monotonic() - started


def main() -> None:
    logging.disable(logging.WARNING)  # the client's warnings are expected here
    if sys.argv[1:] == ["--bomb"]:
        bomb_child()
        return
    print(f"Authorization headers at another port through a next link: {leak()}")
    print(f"unrelated request after Retry-After: 100000 (max_retry_after 2): "
          f"{frozen_gate():.2f} s")
    out = subprocess.run([sys.executable, __file__, "--bomb"], capture_output=True,
                         text=True, check=True).stdout.split()
    size, base, peak, outcome = int(out[0]), int(out[1]), int(out[2]), out[3]
    print(f"gzip bomb of {size / 1000:.0f} KB (300 MiB decompressed), max_reply_mib 64: "
          f"{outcome}; peak RSS {base / 1024:.0f} MB before, {peak / 1024:.0f} MB after")
    print(f"trickling server, connect_timeout 1 + read_timeout 2: cut off after "
          f"{trickle():.1f} s")


if __name__ == "__main__":
    main()
