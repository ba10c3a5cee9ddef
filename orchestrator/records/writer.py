"""The writer thread: a run's file writes (progress files, journal) carried out off the loop.

The event loop decides what to write and hands each write over with `submit`; one thread
carries them out, so thousands of agents' creates and appends cost the loop an append to a
deque each. Each write names the file it belongs to (its ``key``: an agent's progress files),
and the order that matters is kept, not more:

- the writes of one key are carried out in the order they were submitted;
- the journal's records (``record=True``) in the order they were submitted, each after every
  write of its own key submitted before it (an agent's end is journaled once its status line
  is in its file), and each write after a record of its key waits for it (no progress file
  exists that the journal does not name);
- a write without a key is a fence: after every write submitted before it, before every
  write submitted after it (what the thread did for every write before keys).

Within that order the journal goes first: its records are never queued behind the creates
and appends of other agents' files (on a disk where creating a file costs hundreds of
microseconds, a burst of a thousand starts is a quarter of a second of creates), so a record
is written, and fsynced by the journal's group commit, within milliseconds of its
transition. Whatever nothing waits for goes oldest first.

`written` (a wait) and `when_written` (a callback) are the barrier: they return once every
write submitted before them (or before a `mark`) is in its file, whatever the order the
thread took; the thread says so as soon as it has carried out the write someone waits for.
Whoever tells anyone about a transition (a waiter, the printed status line) goes through it,
so "an agent's words reach its file before anyone is told" holds.

`carried` waits for one write and what the order puts before it, not for everything
submitted before it, and the thread takes what someone waits for that way ahead of other
file writes (after the journal's records). An agent starts once its progress files are
created: after its start record (recorded before acted on), after the records before that
(its dependencies' ends, each after its agent's status line), and not behind the creates
of every agent started in the same burst. Its end is then never held back by its own
create, so a record is not kept from the disk by a burst of other agents' creates.

While a burst lasts the thread says what it carried out in batches: a write someone waits
for is reported once the next write is not one someone waits for, or `REPORT_AFTER` of them
are carried out, or `REPORT_WITHIN` has passed, or the thread is idle; on a disk whose writes
take `SLOW_WRITE` or more, at once. A report wakes the loop and takes the interpreter's lock:
one per agent's create, in a burst of zero-work agents, was 2.5 turns of the loop an agent,
and the loop and the thread took turns at the lock for each (`bench` B2: about 0.22 ms an
agent in tmpfs, against 0.13 ms reported in batches).

Outside `run` (before a run's loop starts it, after it stopped) a write is carried out at once
on the caller's thread, as it always was: one order, whoever writes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from orchestrator.records.order import Order, Queued, Write

REPORT_AFTER = 32
"""Writes someone waits for (`carried`) carried out and not yet reported that the thread
reports at once, whatever comes next."""
REPORT_WITHIN = 0.001
"""Seconds after the first of them that the thread reports them at the latest (checked
between writes)."""
SLOW_WRITE = 100e-6
"""Seconds a write takes on average above which the thread holds no report back: on a
disk this slow the next write would hold it for that long."""
BURST = 4096
"""Writes carried out since the thread was last idle that make a burst: once it has nothing
left after one, it drops the tables the burst grew (a set or dict keeps its largest size) and
calls `FileWriter.on_drained`."""


async def _called(register: Callable[[Callable[[], None]], None]) -> None:
    """Return once the callback given to ``register`` is called (on the loop)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    register(wake)
    await done


class FileWriter:
    """One thread per run that carries out its file writes in order (see the module)."""

    def __init__(self) -> None:
        self._queue: deque[Queued] = deque()
        """Appended on the loop, taken from by the thread (both atomic: no lock between them,
        for a thread that holds a lock while it waits for the interpreter holds up the other,
        and each wait for the interpreter is up to a switch interval)."""
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        """Wakes the thread: rung by `submit` when it waits for writes, and to stop it."""
        self._idle = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._submitted = 0
        self._done = 0
        """Writes known on the loop to be carried out, every one before them too (advanced
        by the thread's reports)."""
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []
        """A heap of (write count, order, callback): the callback runs once that many are done."""
        self._order = itertools.count()
        self._wanted: float = math.inf
        """The smallest count a waiter waits for (read by the thread: it reports on reaching it)."""
        self._through = 0
        """Set by the thread: every write up to this one is carried out."""
        self._ahead: set[int] = set()
        """Set by the thread: writes past ``_through`` carried out (records taken first)."""
        self._awaited: dict[int, list[Callable[[], None] | asyncio.Future[None]]] = {}
        """The loop's: writes someone waits for one by one (`carried`), read by the thread."""
        self._urgent: deque[int] = deque()
        """Appended on the loop as a write is first waited for, taken in by the thread."""
        self._failed: asyncio.Future[None] | None = None
        self.on_drained: Callable[[], None] | None = None
        """Called on the thread when it has carried out a `BURST` of writes and has nothing
        left: the run gives back the memory the burst freed (`trim_heap`)."""

    def submit(
        self, write: Write, key: str | None = None, *, record: bool = False, last: bool = False
    ) -> None:
        """Carry out ``write`` in its place (see the module): a file write of ``key`` (its
        ``last``: its status line), a journal ``record`` about ``key``, or with no key a
        fence. At once when there is no thread.

        A record's write must also write every record submitted before it that is not written
        yet (the journal writes through): of records that may go together the thread calls
        the last only, so a burst of them costs one ``os.write``."""
        self._submitted += 1
        if self._thread is None:
            write()
            self._done = self._submitted
            return
        self._queue.append(Queued(self._submitted, write, key, record, last))
        if self._idle:
            self._bell.put(None)

    def mark(self) -> int:
        """The place of the last write submitted so far, for ``upto`` (`written`) or for
        `carried`."""
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

    def when_carried(self, seq: int, callback: Callable[[], None] | asyncio.Future[None]) -> None:
        """Call ``callback`` (or set a future's result) on the loop once write ``seq`` (a
        `mark` just after submitting it) is carried out, and with it whatever the order puts
        first (see the module), but not every write submitted before it. At once when it is."""
        waiting = self._awaited.setdefault(seq, [])
        waiting.append(callback)
        # The thread publishes first and looks here second; this side the other way round,
        # and what the thread takes out of ``_ahead`` it has put under ``_through`` first.
        if len(waiting) > 1:
            return
        if seq in self._ahead or seq <= self._through or seq <= self._done:
            self._carried((seq,))
        else:
            self._urgent.append(seq)

    def carried(self, seq: int) -> asyncio.Future[None]:
        """A future done once write ``seq`` is carried out (`when_carried`). A future, not a
        coroutine: an agent waiting for its create holds this one object (a coroutine and
        its callback were six, and thousands of them wait in a burst of starts)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seq <= self._done or seq <= self._through:
            done.set_result(None)
        else:
            self.when_carried(seq, done)
        return done

    def _carried(self, seqs: tuple[int, ...] | list[int]) -> None:
        for seq in seqs:
            for waiter in self._awaited.pop(seq, ()):
                if not isinstance(waiter, asyncio.Future):
                    waiter()
                elif not waiter.done():  # else cancelled: its waiter is gone
                    waiter.set_result(None)

    async def written(self, upto: int | None = None) -> None:
        """Return once every write submitted so far (or up to ``upto``, a `mark`) is carried
        out."""
        if self._done >= (self._submitted if upto is None else upto):
            return
        await _called(lambda wake: self.when_written(wake, upto))

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
        self._stopping = True
        self._bell.put(None)
        try:
            # What is still queued are the run's last records: wait for them, off the loop.
            await asyncio.shield(asyncio.to_thread(thread.join))
        finally:
            thread.join()  # cancelled again while waiting: the records still come first
            self._thread = None
            self._drain_here()

    def _drain_here(self) -> None:
        """Writes queued after the thread left (none, but never lose one), then the waiters."""
        rest, self._queue = self._queue, deque()
        for item in rest:
            item.write()
        self._through = self._submitted
        self._ahead.clear()
        self._advance(self._submitted)
        self._carried(list(self._awaited))

    def _work(self) -> None:
        """The thread: take in what was submitted, carry out the next write, and say how far
        the writes are carried out without a gap when someone waits for that or it is idle."""
        assert self._loop is not None
        report = self._loop.call_soon_threadsafe
        order = Order()
        inbox = self._queue
        awaited = self._awaited
        urgent = self._urgent
        ahead = self._ahead
        passed: list[int] = []
        """A heap of what is in ``ahead``, to take it out once ``_through`` passes it."""
        carried = 0
        """Writes carried out since the thread was last idle."""
        held: list[int] = []
        """Writes someone waits for, carried out and not yet reported (see the module)."""
        since = 0.0
        """When the first of ``held`` was carried out."""
        pace = 0.0
        """How long a write takes, a moving average."""
        clock = time.perf_counter
        while True:
            while inbox:
                item = inbox.popleft()
                order.add(item)
            while urgent:
                heapq.heappush(order.urgent, urgent.popleft())
            if not order.pending:
                if self._stopping:
                    return  # what comes after this look is the caller's (`_drain_here`)
                if carried >= BURST:
                    # Nothing is ahead of ``_through`` now: the loop finds the same in a new set.
                    order, self._ahead = order.emptied(), set()
                    ahead = self._ahead
                    if self.on_drained is not None:
                        try:
                            self.on_drained()
                        except BaseException as exc:
                            report(self._fail, exc)
                            return
                carried = 0
                self._idle = True  # then look again: a submit either sees it or is seen
                if not inbox and not self._stopping:
                    self._bell.get()
                self._idle = False
                continue
            items = order.next()
            if held and (
                items[-1].seq not in awaited
                or len(held) >= REPORT_AFTER
                or pace >= SLOW_WRITE
                or clock() - since >= REPORT_WITHIN
            ):
                report(self._carried, held)
                held = []
            began = clock()
            try:
                items[-1].write()
            except BaseException as exc:
                report(self._fail, exc)
                return
            ended = clock()
            pace += (ended - began - pace) * 0.25
            carried += len(items)
            for item in items:
                order.done(item)
            through = order.oldest() - 1 if order.pending else order.top
            self._through = through
            for item in items:
                if item.seq > through:
                    ahead.add(item.seq)
                    heapq.heappush(passed, item.seq)
            while passed and passed[0] <= through:
                ahead.discard(heapq.heappop(passed))
            if awaited and (hits := [it.seq for it in items if it.seq in awaited]):
                if not held:
                    since = ended
                held += hits
            if not order.pending:
                if held:
                    report(self._carried, held)
                    held = []
                report(self._advance, order.top)  # idle: everything taken in is carried out
            elif through >= self._wanted:  # someone waits for this much
                self._wanted = math.inf  # the loop sets the next one it waits for
                report(self._advance, through)

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
