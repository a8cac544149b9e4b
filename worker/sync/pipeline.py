"""A two-deep pipeline for the chunks of a pass: chunks are finished (sent to the CRM and
recorded) on threads of their own while the caller prepares the next one, and their
progress is committed in order; and a read-ahead of one item, for a pass that reads the CRM
page by page (the next page is read while the caller decides the one before)."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine

from worker.db.engine import asynchronous_commit

DEPTH = 2  # chunks finishing at once: one's requests overlap the other's recording
T = TypeVar("T")
_END = object()


class Chunk(Protocol):
    def finish(self) -> None: ...


class ChunkPipeline:
    """Chunks finished (their intents committed, their writes sent and recorded) on
    ``DEPTH`` threads while the next chunk is read and decided on the caller's: the CRM's
    round trips overlap the local work, and one chunk's requests overlap the recording of
    the one before. Chunks hold disjoint records, so finishing two at once changes no
    record's order of writes.

    A failure stops the pass at the next chunk sent, after every chunk in flight was
    recorded. A chunk's progress (its last key) is committed after its own results and
    only once every earlier chunk finished without failing, so a resumed pass never skips
    an unrecorded chunk."""

    def __init__(self, engine: Engine,
                 commit_progress: Callable[[Connection, str], None]) -> None:
        self.engine = engine
        self.commit_progress = commit_progress
        self.pool = ThreadPoolExecutor(max_workers=DEPTH, thread_name_prefix="crmsync-send")
        # Each chunk's future: whether it and every chunk before it finished without failing.
        self.in_flight: deque[Future[bool]] = deque()

    def send(self, chunk: Chunk, progress: str | None) -> None:
        """Finish ``chunk`` once fewer than DEPTH chunks are in flight; ``progress``: the
        key to commit as done after it (None: none). Raises what an earlier chunk raised."""
        while len(self.in_flight) >= DEPTH:
            self.in_flight.popleft().result()
        for done in [f for f in self.in_flight if f.done()]:
            done.result()  # a failure stops the pass before anything more is sent
        before = self.in_flight[-1] if self.in_flight else None
        self.in_flight.append(self.pool.submit(self._finish, chunk, progress, before))

    def _finish(self, chunk: Chunk, progress: str | None, before: Future[bool] | None) -> bool:
        chunk.finish()
        if before is not None and (before.exception() is not None or not before.result()):
            return False  # an earlier chunk failed (the caller raises it): no progress
        if progress is not None:
            with self.engine.begin() as conn:
                # Progress lost to a database crash only makes a resumed pass redo a chunk.
                asynchronous_commit(conn)
                self.commit_progress(conn, progress)
        return True

    def wait(self) -> None:
        """Wait for every chunk in flight; raises what the first failed one raised."""
        in_flight, self.in_flight = list(self.in_flight), deque()
        wait(in_flight)
        for future in in_flight:
            future.result()

    def __enter__(self) -> ChunkPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
            else:
                wait(list(self.in_flight))  # let the chunks in flight be recorded
        finally:
            self.pool.shutdown(wait=True)


def read_ahead(items: Iterator[T]) -> Generator[T, None, None]:
    """``items``, each next one made on a thread of its own while the caller works on the
    one before: a chunk of CRM records is read (its page requested, decoded) while the
    previous one is decided and recorded. What making an item raises is raised here, in
    order. When the caller stops early, the thread stops after the item it is making."""
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            put((False, exc))

    thread = threading.Thread(target=make, name="crmsync-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            made, item = ready.get()
            if not made:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
