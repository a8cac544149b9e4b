"""CPU time the crmsync OData client spends per written record in ``$batch`` outside the
network: building each operation's request (``Operation.call``), encoding the multipart
body, decoding the multipart response and interpreting every part (JSON with exact
numbers, ``OperationResult``; the JSON is also given alone). The response is a real one:
the emulator, in its own process, answers one ``$batch`` of creates and one of updates,
and those bodies are then decoded again and again in this process, so the figure holds no
socket, thread or server time and varies far less with the machine's load than
``bench/client_bench.py``'s.

    python bench/batch_cpu_bench.py
    python bench/batch_cpu_bench.py --size 1000 --repeat 25

Prints µs of this process's CPU per record (best of ``--repeat`` rounds) for each stage
and for the whole, and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import timeit
from collections.abc import Callable
from functools import partial

from client_bench import account_creates, account_updates
from emulator_process import SERVICE, free_port, start_emulator

from worker.remote import batch, wire
from worker.remote.batch import Operation, OperationResult
from worker.remote.client import ODataClient
from worker.remote.config import load_connection


def captured(url: str, size: int) -> tuple[list[Operation], list[Operation],
                                            list[tuple[str, bytes]]]:
    """The create and update operations of ``size`` records and the bodies the service
    answered them with."""
    bodies: list[tuple[str, bytes]] = []
    decode = batch.decode_batch

    def keep(content_type: str, body: bytes) -> list[batch.Part]:
        bodies.append((content_type, body))
        return decode(content_type, body)

    env = {"CRMSYNC_BENCH_URL": url, "CRMSYNC_BENCH_BATCH_SIZE": str(size),
           "CRMSYNC_BENCH_BULK_MESSAGES": "off"}
    client = ODataClient(load_connection("bench", env=env))
    accounts = client.entity_set("accounts", "accountid")
    creates = account_creates(accounts, size)
    updates = account_updates(creates)
    batch.decode_batch = keep
    try:
        for ops in (creates, updates):
            if not all(r.ok for r in client.batch(ops)):
                raise SystemExit("the emulator refused a write")
    finally:
        batch.decode_batch = decode
        client.close()
    return creates, updates, bodies


def pass_of(ops: list[Operation], content_type: str, body: bytes) -> Callable[[], object]:
    """One $batch's client work for ``ops``, the response being ``body``."""
    client = ops[0].entity_set.client

    def run() -> list[OperationResult | None]:
        calls = {i: op.call() for i, op in enumerate(ops)}
        batch.encode_batch([(str(n), calls[i]) for n, i in enumerate(calls, start=1)],
                           "batch_bench", client.base_url)
        replies = batch.match_parts(len(ops), batch.decode_batch(content_type, body))
        results: list[OperationResult | None] = [None] * len(ops)
        batch._take_round(client, ops, calls, results,
                          [(list(calls), list(zip(calls, replies, strict=True)))], 1)
        return results

    return run


def _calls(ops: list[Operation]) -> object:
    return [op.call() for op in ops]


def _loads(bodies: list[bytes]) -> object:
    return [wire.loads(b) for b in bodies]


def best_us(fn: Callable[[], object], records: int, repeat: int) -> float:
    number = max(1, 2000 // records)
    seconds = min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time))
    return seconds / number / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, help="operations per $batch")
    parser.add_argument("--repeat", type=int, default=15, help="rounds (best one counts)")
    args = parser.parse_args()
    port = free_port()
    process = start_emulator(port)
    try:
        creates, updates, bodies = captured(f"http://127.0.0.1:{port}{SERVICE}", args.size)
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"crmsync $batch CPU bench: {args.size} operations per $batch, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for name, ops, (content_type, body) in (("create", creates, bodies[0]),
                                            ("update", updates, bodies[1])):
        calls = [op.call() for op in ops]
        numbered = [(str(n), c) for n, c in enumerate(calls, start=1)]
        bodies_of_parts = [p.reply.body for p in batch.decode_batch(content_type, body)]
        stages: dict[str, Callable[[], object]] = {
            "Operation.call": partial(_calls, ops),
            "encode_batch": partial(batch.encode_batch, numbered, "batch_bench", None),
            "decode_batch": partial(batch.decode_batch, content_type, body),
            "JSON of the parts": partial(_loads, bodies_of_parts),
            "whole $batch": pass_of(ops, content_type, body),
        }
        figures = "  ".join(f"{stage} {best_us(fn, len(ops), args.repeat):.1f}"
                            for stage, fn in stages.items())
        print(f"{name:>7}: client CPU µs/record  {figures}", flush=True)


if __name__ == "__main__":
    main()
