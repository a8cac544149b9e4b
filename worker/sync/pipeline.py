"""A one-deep pipeline for the chunks of a pass: each chunk is finished (sent to the CRM
and recorded) on one thread, in order, while the caller prepares the next one."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Protocol

from sqlalchemy.engine import Connection, Engine


class Chunk(Protocol):
    def finish(self) -> None: ...


class ChunkPipeline:
    """Chunks sent and recorded on one thread, in order, while the next chunk is read and
    decided (and its intents committed) on the caller's: the CRM's round trips overlap
    the local work. At most one chunk is in flight; a failure stops the pass at the next
    chunk, after every earlier chunk was recorded. A chunk's progress (its last key) is
    committed after its results, so a resumed pass never skips an unrecorded chunk."""

    def __init__(self, engine: Engine,
                 commit_progress: Callable[[Connection, str], None]) -> None:
        self.engine = engine
        self.commit_progress = commit_progress
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmsync-send")
        self.in_flight: Future[None] | None = None

    def send(self, chunk: Chunk, progress: str | None) -> None:
        """Finish ``chunk`` once the one before it is finished; ``progress``: the key to
        commit as done after it (None: none)."""
        self.wait()
        self.in_flight = self.pool.submit(self._finish, chunk, progress)

    def _finish(self, chunk: Chunk, progress: str | None) -> None:
        chunk.finish()
        if progress is not None:
            with self.engine.begin() as conn:
                self.commit_progress(conn, progress)

    def wait(self) -> None:
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is not None:
            in_flight.result()  # raises what the chunk raised

    def __enter__(self) -> ChunkPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.wait()
            elif self.in_flight is not None:
                wait([self.in_flight])  # let the chunk in flight be recorded
        finally:
            self.pool.shutdown(wait=True)
