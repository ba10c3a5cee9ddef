"""A child's pipes as lines, and what all children together may do in one loop turn.

At most `LINES_PER_TURN` lines are delivered per event-loop turn by all pipes together and at
most `SPAWNS_PER_TURN` children are started, so a hundred children printing or starting at
once cannot stall the loop. Nothing read is ever dropped: what waits is held with reading
paused until the next turn.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import weakref
from collections.abc import Callable

from orchestrator.process.group import kill_group
from orchestrator.process.lines import LineSplitter, Stream

LINES_PER_TURN = 1024
"""Lines all pipes together may deliver per event-loop turn (see `Pipes`)."""
SPAWNS_PER_TURN = 4
"""Children started per event-loop turn (see `spawn_turn`)."""


class TurnBudget:
    """What all children together may do in one turn of the event loop (lines, spawns)."""

    __slots__ = ("_left", "_loop", "_per_turn", "_reset")

    def __init__(self, loop: asyncio.AbstractEventLoop, per_turn: int = LINES_PER_TURN) -> None:
        self._loop = loop
        self._per_turn = per_turn
        self._left = per_turn
        self._reset = False

    def left(self) -> int:
        return self._left

    def spend(self, lines: int) -> None:
        self._left = max(self._left - lines, 0)
        if not self._reset:
            self._reset = True
            self._loop.call_soon(self._refill)

    def _refill(self) -> None:
        self._left = self._per_turn
        self._reset = False


_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBudget] = (
    weakref.WeakKeyDictionary()
)
_SPAWN_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBudget] = (
    weakref.WeakKeyDictionary()
)


def _budget(loop: asyncio.AbstractEventLoop) -> TurnBudget:
    budget = _BUDGETS.get(loop)
    if budget is None:
        budget = _BUDGETS[loop] = TurnBudget(loop)
    return budget


async def spawn_turn(loop: asyncio.AbstractEventLoop) -> None:
    """Wait for one of the `SPAWNS_PER_TURN` spawns a loop turn allows: each fork/exec
    holds the loop for about a millisecond, and a hundred at once would stall it."""
    budget = _SPAWN_BUDGETS.get(loop)
    if budget is None:
        budget = _SPAWN_BUDGETS[loop] = TurnBudget(loop, SPAWNS_PER_TURN)
    while budget.left() <= 0:  # noqa: ASYNC110 - waiting for the next turn of the loop itself
        await asyncio.sleep(0)
    budget.spend(1)


class Pipes(asyncio.SubprocessProtocol):
    """Turns the child's pipe callbacks into lines and its exit into a future.

    At most `LINES_PER_TURN` lines are handled per loop turn by all pipes of all children
    together (`TurnBudget`): the rest of a chunk waits, with reading paused, until the next
    turn, so a hundred children printing as fast as they can cannot stall the event loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_line: Callable[[Stream, str], None],
        max_line: int,
        on_activity: Callable[[], None] | None = None,
    ) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: Exception | None = None
        self.pgid = 0
        self.progress = 0
        """Bytes turned into lines so far: `run_streaming` drains while this grows."""
        self._loop = loop
        self._on_activity = on_activity
        """Told of every chunk read, line or not: dots and ``\\r`` bars are output too."""
        self._transport: asyncio.BaseTransport | None = None
        self._open = {1, 2}
        self._backlog: dict[int, bytes] = {}
        self._splitters: dict[int, LineSplitter] = {
            1: LineSplitter(functools.partial(on_line, "stdout"), max_line),
            2: LineSplitter(functools.partial(on_line, "stderr"), max_line),
        }

    @property
    def backlogged(self) -> bool:
        """Output already read but not yet delivered (waiting for a turn's line budget)."""
        return bool(self._backlog)

    def deliver_backlog(self) -> None:
        """Deliver what was read and held back, at once: nothing read is ever dropped."""
        for fd in list(self._backlog):
            self._consume(fd, self._backlog.pop(fd), None)

    def detach(self) -> None:
        """Deliver no more lines (the run is over; late callbacks are dropped)."""
        self._splitters.clear()
        self._backlog.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self._on_activity is not None and data:
            self._on_activity()
        if fd in self._backlog:  # cannot happen while paused, but order must hold regardless
            self._backlog[fd] += data
            return
        self._consume(fd, data, _budget(self._loop).left())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._consume(fd, self._backlog.pop(fd, b""), None)
        splitter = self._splitters.pop(fd, None)
        if splitter is not None and self.error is None:
            try:
                splitter.flush()
            except Exception as error:
                self._fail(error)
        self._open.discard(fd)
        if not self._open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _consume(self, fd: int, data: bytes, max_lines: int | None) -> None:
        splitter = self._splitters.get(fd)
        if splitter is None or self.error is not None or not data:
            return
        try:
            rest = splitter.feed(data, max_lines)
        except Exception as exc:
            self._fail(exc)
            return
        used = len(data) - len(rest)
        self.progress += used
        if max_lines is not None:
            _budget(self._loop).spend(data.count(b"\n", 0, used))
        if rest:
            self._backlog[fd] = rest
            self._set_reading(fd, False)
            self._loop.call_soon(self._next_turn, fd)

    def _next_turn(self, fd: int) -> None:
        waiting = self._backlog.pop(fd, None)
        if waiting is None:
            return
        self._consume(fd, waiting, _budget(self._loop).left())
        if fd not in self._backlog:
            self._set_reading(fd, True)

    def _set_reading(self, fd: int, on: bool) -> None:
        if not isinstance(self._transport, asyncio.SubprocessTransport):
            return
        pipe = self._transport.get_pipe_transport(fd)
        if isinstance(pipe, asyncio.ReadTransport) and not pipe.is_closing():
            if on:
                pipe.resume_reading()
            else:
                pipe.pause_reading()

    def _fail(self, exc: Exception) -> None:
        # A bug in the consumer: stop the child now, run_streaming re-raises after the reap.
        self.error = exc
        self.detach()
        if self.pgid > 1:
            kill_group(self.pgid, signal.SIGKILL)
