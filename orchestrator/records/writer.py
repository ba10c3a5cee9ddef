"""The writer thread: a run's file writes (progress files, journal) carried out off the loop.

The event loop decides what to write and hands each write over with `submit`; one thread
carries them out in the order they were submitted, taking whatever has queued up as one
batch, so thousands of agents' creates and appends cost the loop an append to a deque each.
`written` (a wait) and `when_written` (a callback) are the barrier: they return once every
write submitted before them (or before a `mark`) is in its file; the thread says so as soon
as it has carried out the write someone waits for, not only at the end of its batch.
Whoever tells anyone about a transition (a waiter, the printed status line) goes through it,
so "an agent's words reach its file before anyone is told" holds, and so does "recorded
before acted on": an agent's process is started only once its start record (and every write
before it) is written.

Outside `run` (before a run's loop starts it, after it stopped) a write is carried out at once
on the caller's thread, as it always was: one order, whoever writes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable

Write = Callable[[], None]


class FileWriter:
    """One thread per run that carries out its file writes in order (see the module)."""

    def __init__(self) -> None:
        self._queue: deque[Write] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._submitted = 0
        self._done = 0
        """Writes known on the loop to be carried out (advanced by the thread's reports)."""
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []
        """A heap of (write count, order, callback): the callback runs once that many are done."""
        self._order = itertools.count()
        self._wanted: float = math.inf
        """The smallest count a waiter waits for (read by the thread: it reports on reaching it)."""
        self._failed: asyncio.Future[None] | None = None
        self._base = 0

    def submit(self, write: Write) -> None:
        """Carry out ``write`` after every write submitted before it (at once when no thread)."""
        self._submitted += 1
        if self._thread is None:
            write()
            self._done = self._submitted
            return
        with self._wake:
            self._queue.append(write)
            self._wake.notify()

    def mark(self) -> int:
        """The place of the last write submitted so far, for ``upto`` (`written`)."""
        return self._submitted

    def when_written(self, callback: Callable[[], None], upto: int | None = None) -> None:
        """Call ``callback`` on the loop once every write submitted so far (or up to ``upto``,
        a `mark`) is carried out (at once when they all are)."""
        target = self._submitted if upto is None else upto
        if self._done >= target:
            callback()
        else:
            heapq.heappush(self._waiters, (target, next(self._order), callback))
            self._wanted = min(self._wanted, target)

    async def written(self, upto: int | None = None) -> None:
        """Return once every write submitted so far (or up to ``upto``, a `mark`) is carried
        out."""
        if self._done >= (self._submitted if upto is None else upto):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self.when_written(wake, upto)
        await done

    @property
    def pending(self) -> int:
        """Writes submitted and not yet known to be carried out."""
        return self._submitted - self._done

    def start(self) -> None:
        """Start the thread now (from the loop's thread): writes submitted from here on go to
        it. `run` starts it if this was not called, and stops it."""
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._failed = loop.create_future()
        self._stopping = False
        self._base = self._submitted  # every write before this one was carried out at once
        self._thread = threading.Thread(target=self._work, name="orchestrator-writer", daemon=True)
        self._thread.start()

    async def run(self) -> None:
        """Carry out writes on the thread until cancelled; then the rest, before returning.

        A write that raises (a bug: writers take their own `OSError`s) ends this coroutine
        with that exception, so the run's TaskGroup fails loudly instead of going on."""
        self.start()
        assert self._failed is not None
        try:
            await self._failed
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop the thread once every write queued is carried out; idempotent.

        `run`'s own ending calls it, and so must the thread's owner: a `run` task cancelled
        before its first step (a run with nothing to do) never reaches its ``finally``, and a
        write queued to a thread nobody stops can land after its file was closed."""
        thread = self._thread
        if thread is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify()
        try:
            # What is still queued are the run's last records: wait for them, off the loop.
            await asyncio.shield(asyncio.to_thread(thread.join))
        finally:
            thread.join()  # cancelled again while waiting: the records still come first
            self._thread = None
            self._drain_here()

    def _drain_here(self) -> None:
        """Writes queued after the thread left (none, but never lose one), then the waiters."""
        with self._wake:
            rest, self._queue = self._queue, deque()
        for write in rest:
            write()
        self._advance(self._submitted)

    def _work(self) -> None:
        assert self._loop is not None
        loop = self._loop
        count = 0
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, deque()
            try:
                for write in batch:
                    write()
                    count += 1
                    if self._base + count >= self._wanted:  # someone waits for this one
                        self._wanted = math.inf  # the loop sets the next one it waits for
                        loop.call_soon_threadsafe(self._advance_to, count)
            except BaseException as exc:
                loop.call_soon_threadsafe(self._fail, exc)
                return
            loop.call_soon_threadsafe(self._advance_to, count)

    def _advance_to(self, count: int) -> None:
        """The thread has carried out ``count`` writes since `run` began."""
        self._advance(self._base + count)

    def _advance(self, done: int) -> None:
        self._done = max(self._done, done)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._done:
            callback = heapq.heappop(waiters)[2]
            callback()
        self._wanted = waiters[0][0] if waiters else math.inf

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)
